# SPDX-License-Identifier: Apache-2.0
"""The command line, `python3 -m experiment` (Lab/tools/experiment): see the package's docstring."""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from . import BIN, ROOT, ExperimentError, say
from . import __doc__ as USAGE
from . import plan as address_plan
from .evaluate import ACCEPTANCE, check, generator_failures, generator_ratio, rates, smoke_failures, steady_rate
from .report import load_results, save_results, write_report
from .processes import run_tool
from .runner import run_scenario
from .scenario import ENGINES, POLICIES, STACKS, THESIS_ATTACKERS, TRANSPORTS, Scenario, scenario_from, scenario_name

PROGRAMS = ("portcullisd", "portcullis", "portcullis-testbed", "flood.bpf.o", "portcullis.bpf.o")


# ---------------------------------------------------------------- options

def add_levels(p):
    """The options of `matrix`: lists of levels, every combination a scenario."""
    p.add_argument("--transports", default=",".join(TRANSPORTS))
    p.add_argument("--rates", default="100000,1000000,0", help="invalid pps, 0: as fast as possible")
    p.add_argument("--attacker-counts", default=None,
                   help=f"default: {THESIS_ATTACKERS} and the address plan's most IPv4 attackers")
    p.add_argument("--stacks", default="ipv4")
    p.add_argument("--second-reader-levels", default="off",
                   help="off, on (a lossy tap: writers never wait for it), on-block (a lossless one)")


def add_scenario(p):
    """The options of `run`: one scenario's levels."""
    p.add_argument("--transport", choices=TRANSPORTS, default="shm")
    p.add_argument("--rate", type=int, default=0, help="invalid pps over all attackers; 0: as fast as possible")
    p.add_argument("--attackers", type=int, default=None, help="default: the address plan's most IPv4 attackers")
    p.add_argument("--stack", choices=STACKS, default="mixed")
    p.add_argument("--second-reader", action="store_true")
    p.add_argument("--second-reader-policy", choices=POLICIES, default="drop",
                   help="drop: a lossy tap, writers never wait for it; block: lossless, they do")


def add_common(p):
    """The options `run` and `matrix` share."""
    p.add_argument("--duration", type=int, default=60, help="seconds of flood")
    p.add_argument("--ban-time", type=int, default=30)
    p.add_argument("--threshold", type=int, default=3)
    p.add_argument("--valid-clients", type=int, default=254)
    p.add_argument("--valid-rate", type=int, default=50000)
    p.add_argument("--workers", type=int, default=1, help="daemon ban workers")
    p.add_argument("--config", dest="daemon_config", default=None,
                   help="run portcullisd with this --config FILE (absolute path); the run's --threshold and "
                        "--ban-time override its jails'")
    p.add_argument("--server-threads", type=int, default=1, help="udp-server threads")
    p.add_argument("--engine", choices=ENGINES, default="auto")
    p.add_argument("--flood-threads", type=int, default=os.cpu_count(),
                   help="generator threads, one per CPU (default: every CPU)")
    p.add_argument("--out", default=os.path.join(ROOT, "experiments", time.strftime("%Y%m%d-%H%M%S")))
    p.add_argument("--assert", dest="check", action="store_true",
                   help="exit 1 unless every attacker was banned in every cycle and no valid client was")


def build_parser():
    """The parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="experiment", description=USAGE,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="one scenario")
    add_scenario(run)
    add_common(run)
    matrix = sub.add_parser("matrix", help="every combination of the levels")
    add_levels(matrix)
    add_common(matrix)
    g = sub.add_parser("generator", help="each flood engine the kernel runs (live frames against AF_PACKET)")
    g.add_argument("--duration", type=int, default=8)
    g.add_argument("--out", default=os.path.join(ROOT, "experiments", "generator-" + time.strftime("%Y%m%d-%H%M%S")))
    sm = sub.add_parser("smoke", help="the CI scenario, asserted")
    sm.add_argument("--out", default=None)
    r = sub.add_parser("report", help="rewrite a report from its results.json")
    r.add_argument("dir")
    return parser


def resolve_defaults(args, plan):
    """Fills the defaults that come from the address plan."""
    if getattr(args, "attackers", 0) is None:
        args.attackers = plan.max_attackers4
    if getattr(args, "attacker_counts", "") is None:
        args.attacker_counts = f"{THESIS_ATTACKERS},{plan.max_attackers4}"


def levels(text, cast=str):
    """The levels of a comma-separated list."""
    return [cast(v) for v in text.split(",") if v]


# ---------------------------------------------------------------- commands

def print_result(r):
    """Prints one result's line; returns its failures."""
    failures = check(r)
    say(f"  {r.name}: sent {r.frames_sent:,} frames ({r.frames_per_second / 1e6:.2f} Mpps, {r.engine_used or r.scenario.engine} engine), "
        f"dropped {r.xdp_dropped:,}, passed {r.xdp_passed:,}, relative drop {r.relative_drop:.2f}%, "
        f"{r.ban_cycles} ban cycles, {r.bans:,} bans, valid banned {r.valid_clients_banned}, "
        f"udp-server {r.udp_received:,}, lines {r.lines_logged:,}/{r.lines_read:,}"
        + (f", second reader {r.second_reader_lines:,} (lost {r.second_reader_lost:,})"
           if r.second_reader_lines is not None else "")
        + f", daemon CPU {r.daemon_cpu_seconds:.2f} s" + ("" if not failures else " -- FAILED: " + "; ".join(failures)))
    return failures


def command_run(out, scenarios, plan, title, invocation):
    """Runs the scenarios in turn, then writes the report; returns the results and their failures."""
    os.makedirs(out, exist_ok=True)
    results, failures = [], []
    for number, s in enumerate(scenarios, 1):
        say(f"experiment: [{number}/{len(scenarios)}] {scenario_name(s)} ({s.duration} s)")
        r = run_scenario(s, plan, out)
        results.append(r)
        failures += [f"{r.name}: {f}" for f in print_result(r)]
        save_results(out, results)  # a later failure keeps these
    report = write_report(out, results, title, f"Measured on {time.strftime('%Y-%m-%d %H:%M %Z')} with "
                          f"`Lab/tools/experiment {invocation}`.")
    say(f"experiment: report {report}")
    return results, failures


def matrix_scenarios(args, plan):
    """Every combination of the matrix's levels, transports innermost."""
    scenarios = []
    for stack in levels(args.stacks):
        for attackers in levels(args.attacker_counts, int):
            for rate in levels(args.rates, int):
                for second in levels(args.second_reader_levels):
                    for transport in levels(args.transports):
                        scenarios.append(scenario_from(
                            args, plan, transport=transport, stack=stack, rate=rate, attackers=attackers,
                            second_reader=second in ("on", "on-block"),
                            second_reader_policy="block" if second == "on-block" else "drop"))
    return scenarios


def command_generator(args, plan):
    """Each flood engine the kernel runs, into the defended veth with every attacker banned.

    Attack traffic only: with valid clients in the mix, udp-server's receiving (on the same two
    CPUs) sets the pace rather than the generator (about 3.5 instead of 5.5 Mpps here). An engine
    the kernel refuses (live frames: before Linux 5.18, or where the kernel refuses them even to
    root) is reported with the kernel's reason, and the live-frames targets are not judged."""
    os.makedirs(args.out, exist_ok=True)
    probe = engine_probe()
    figures, refused = {}, {}
    for engine in ("live", "xsk", "packet"):
        if not probe[engine]["available"]:
            refused[engine] = probe[engine].get("reason", "refused")
            say(f"  {engine}: not run: {refused[engine]}")
            continue
        s = Scenario(transport="shm", stack="ipv4", rate=0, attackers=THESIS_ATTACKERS, second_reader=False,
                     duration=args.duration, ban_time=600, threshold=3, valid_clients=0, valid_rate=50000,
                     workers=1, server_threads=1, engine=engine, flood_threads=os.cpu_count())
        r = run_scenario(s, plan, args.out)
        # Steady state: the samples after the bans are in, where nothing but valid traffic passes.
        median, samples = steady_rate(rates(os.path.join(args.out, r.csv)))
        figures[engine] = {"frames_per_second": r.frames_per_second, "steady_filter_pps": median,
                           "samples": samples, "dropped": r.xdp_dropped}
        say(f"  {engine}: {r.frames_per_second / 1e6:.2f} Mpps sent over the run; into the defended veth "
            f"(XDP dropped + passed, median of {samples} 100 ms samples once all were banned): {median / 1e6:.2f} Mpps")
    summary = {"engines": figures, "refused": refused}
    failures = []
    if "live" in figures and "packet" in figures:
        live, packet = figures["live"]["steady_filter_pps"], figures["packet"]["steady_filter_pps"]
        summary["ratio"] = generator_ratio(live, packet)
        say(f"experiment: generator: live frames {live / 1e6:.2f} Mpps, AF_PACKET {packet / 1e6:.2f} Mpps: "
            f"{summary['ratio']:.1f}x")
        failures = generator_failures(live, summary["ratio"])
    if "xsk" in figures and "packet" in figures:
        xsk, packet = figures["xsk"]["steady_filter_pps"], figures["packet"]["steady_filter_pps"]
        summary["xsk_ratio"] = xsk / max(packet, 1)
        say(f"experiment: generator: AF_XDP {xsk / 1e6:.2f} Mpps, AF_PACKET {packet / 1e6:.2f} Mpps: "
            f"{summary['xsk_ratio']:.2f}x" + ("" if "live" in figures else
                                                " (the kernel refuses live frames: their targets are not judged)"))
    with open(os.path.join(args.out, "generator.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return failures


def engine_probe():
    """`portcullis-testbed engines` in the client namespace's stead (lo of this one): per engine,
    whether the kernel runs it and why not."""
    result = run_tool([os.path.join(BIN, "portcullis-testbed"), "engines"], capture_output=True, text=True)
    if result.returncode != 0:
        raise ExperimentError(f"portcullis-testbed engines failed: {result.stderr.strip()}")
    return json.loads(result.stdout)


def command_smoke(args, plan):
    """The CI scenario; returns its failures."""
    # Tests-sized: the plan's most IPv4 attackers, split over both stacks, at 300,000 invalid pps,
    # 3 ban cycles of 8 s in a 24 s flood, the shm transport with a second reader.
    out = args.out or tempfile.mkdtemp(prefix="pc-smoke-")
    ns = argparse.Namespace(transport="shm", stack="mixed", rate=300000, attackers=plan.max_attackers4,
                            second_reader=True, duration=24, ban_time=8, threshold=3, valid_clients=254,
                            valid_rate=50000, workers=1, server_threads=1, engine="auto",
                            flood_threads=os.cpu_count())
    results, failures = command_run(out, [scenario_from(ns, plan)], plan, "Portcullis smoke scenario",
                                    args.invocation)
    failures += smoke_failures(results[0])
    if args.out is None:
        shutil.rmtree(out, ignore_errors=True)
    return failures


def command_report(directory):
    """Rewrites DIR/report.md and the plots from DIR/results.json (and DIR/report-meta.json)."""
    try:
        results = load_results(directory)
        meta_path = os.path.join(directory, "report-meta.json")
        meta = {"title": "Portcullis experiment", "extra": ""}
        if os.path.exists(meta_path):
            with open(meta_path) as f:
                meta = json.load(f)
        say(write_report(directory, results, meta["title"], meta["extra"]))
    except (OSError, ValueError, KeyError, TypeError) as error:
        sys.exit(f"experiment: {directory}: {error}")


def dispatch(args, plan):
    """Runs the command of `args`; returns its failures."""
    resolve_defaults(args, plan)
    if args.command == "run":
        return command_run(args.out, [scenario_from(args, plan)], plan, "Portcullis experiment", args.invocation)[1]
    if args.command == "matrix":
        return command_run(args.out, matrix_scenarios(args, plan), plan, "Portcullis experiment matrix",
                           args.invocation)[1]
    if args.command == "generator":
        return command_generator(args, plan)
    return command_smoke(args, plan)


# ---------------------------------------------------------------- main

def preflight():
    """Exits unless run as root with every program built."""
    if os.geteuid() != 0:
        sys.exit("experiment: run as root (it creates namespaces, attaches XDP and pins maps)")
    for program in PROGRAMS:
        if not os.path.exists(os.path.join(BIN, program)):
            sys.exit(f"experiment: {BIN}/{program} is missing: run tools/build release (or set PORTCULLIS_BIN)")


def interrupted(_number, _frame):
    """SIGINT and SIGTERM: unwind, so that every scenario's clean-up runs."""
    raise KeyboardInterrupt


def catch_stop_signals():
    """SIGINT too, explicitly, and unblocked: a parent that ignores or blocks it (some process
    managers and test runners do, and children inherit both) would make Ctrl-C do nothing."""
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def finish(args, failures):
    """Prints the failures; exits 1 if there are any and the command asserts its outcome."""
    if failures:
        for f in failures:
            say(f"experiment: FAILED: {f}")
        if args.command in ("smoke", "generator") or getattr(args, "check", False):
            sys.exit(1)
    elif args.command == "smoke":
        say(f"experiment: smoke scenario passed: every attacker banned in each of {ACCEPTANCE['smoke_ban_cycles']} "
            f"cycles, no valid client banned, relative drop above {ACCEPTANCE['smoke_relative_drop']:g}%")


def main(argv=None):
    """Lab/tools/experiment: parses `argv` (default: the command line) and runs its command."""
    args = build_parser().parse_args(argv)
    args.invocation = " ".join(sys.argv[1:] if argv is None else argv)
    if args.command == "report":
        command_report(args.dir)
        return
    preflight()
    catch_stop_signals()
    # A testbed of this run's own (namespaces and pins named after it; see AddressPlan.instance):
    # a test or another experiment beside it never meets it. The plan, Lab/tools/testbed and the
    # programs read it from the environment.
    os.environ.setdefault("PC_TESTBED_INSTANCE", str(os.getpid()))
    try:
        failures = dispatch(args, address_plan.load(BIN))
    except KeyboardInterrupt:
        sys.exit("experiment: interrupted; the testbed is removed")
    except (ExperimentError, subprocess.CalledProcessError) as error:
        sys.exit(f"experiment: {error}")
    finish(args, failures)


if __name__ == "__main__":
    main()
