# SPDX-License-Identifier: Apache-2.0
"""Running one scenario on the testbed: the programs it starts, in order, and what it collects."""
import json
import os
import shutil
import subprocess
import tempfile
import time

from . import BIN, TESTBED, ExperimentError, say
from .evaluate import Measured, clients, evaluate, parse_ban_log
from .processes import Run, last_json, run_tool, wait_for_json
from .scenario import scenario_name

FLOOD_GRACE = 60  # seconds the flood may run beyond its duration (start-up, the last batches)
SETTLE = 1.0  # seconds for the last frames to reach udp-server and the daemon after the flood


def transport_options(transport, work, tag):
    """The transport options every program of a scenario shares."""
    if transport == "shm":
        return ["--transport", "shm", "--shm-name", f"/pc-exp-{tag}"]
    if transport == "socket":
        return ["--transport", "socket", "--socket-dir", os.path.join(work, "sockets")]
    return ["--transport", "file", "--file-path", os.path.join(work, "offences.log")]


class ScenarioRun:
    """One scenario's programs, started and stopped in order; its files are in `work`."""

    def __init__(self, run, scenario, plan, work, tag, csv_path):
        self.run, self.s, self.plan, self.work, self.csv_path = run, scenario, plan, work, csv_path
        self.transport = transport_options(scenario.transport, work, tag)
        self.stats = None

    def path(self, name):
        """A file in the work directory."""
        return os.path.join(self.work, name)

    def in_server(self, program, *arguments):
        """The command running BIN/`program` in the server namespace."""
        return [TESTBED, "server", os.path.join(BIN, program), *arguments]

    def start_daemon(self):
        """portcullisd on the server's veth, once its workers read."""
        s = self.s
        daemon = self.run.start("portcullisd", self.in_server(
            "portcullisd", "--interface", self.plan.server_interface, "--pin-dir", self.plan.pin_directory,
            "--threshold", str(s.threshold), "--ban-time", str(s.ban_time), "--workers", str(s.workers),
            "--ban-log", self.path("bans.log"), "--summary-json", self.path("daemon.json"),
            "--status-interval", "0", "--ready-file", self.path("daemon.ready.json"), *self.transport,
            # A control socket of its own, in the work directory (removed with it, also when the
            # daemon was killed; /tmp/pc-exp-XXXXXXXX/control.sock fits in sun_path).
            "--control", self.path("control.sock"),
            *(["--config", s.daemon_config] if s.daemon_config else [])),
            self.path("daemon.out"))
        wait_for_json(self.path("daemon.ready.json"), daemon)
        return daemon

    def start_tap(self):
        """The second reader, `portcullis tap` writing a log file, once attached."""
        tap = self.run.start("tap", self.in_server(
            "portcullis", "tap", "--output", self.path("second-reader.log"), "--policy", self.s.second_reader_policy,
            "--ready-file", self.path("tap.ready.json"), "--summary-json", self.path("tap.json"), *self.transport),
            self.path("tap.out"))
        wait_for_json(self.path("tap.ready.json"), tap)
        return tap

    def start_server(self):
        """udp-server in the server namespace, once every receiving thread runs."""
        server = self.run.start("udp-server", [
            TESTBED, "udp-server", "--threads", str(self.s.server_threads),
            "--ready-file", self.path("udp-server.ready.json"), *self.transport], self.path("udp-server.out"))
        wait_for_json(self.path("udp-server.ready.json"), server)
        # No pause for the socket transport: the readers (daemon, tap) listen on their sockets before
        # their ready files, and udp-server makes its writers, which connect to every socket in the
        # directory, before it starts its threads, so before its ready file.
        return server

    def flood(self, split):
        """Samples the counters and floods from the client namespace; returns the flood's summary."""
        s = self.s
        self.stats = self.run.start("stats", self.in_server(
            "portcullis", "stats", "--pin-dir", self.plan.pin_directory, "--watch", "--interval", "100",
            "--duration", str(s.duration + 2), "--csv", self.csv_path), self.path("stats.out"))
        flood = self.run.start("flood", [
            TESTBED, "flood", "--engine", s.engine, "--attackers-v4", str(split.attackers4),
            "--attackers-v6", str(split.attackers6), "--valid-v4", str(split.valid4),
            "--valid-v6", str(split.valid6), "--rate", str(s.rate), "--valid-rate", str(s.valid_rate),
            "--duration", str(s.duration), "--threads", str(s.flood_threads)], self.path("flood.out"))
        if flood.wait(s.duration + FLOOD_GRACE) != 0:
            raise ExperimentError(f"flood failed:\n{flood.output()}")
        return last_json(flood.output_path)

    def counters(self):
        """The XDP counters' totals (portcullis stats --json)."""
        totals = run_tool(self.in_server("portcullis", "stats", "--json", "--pin-dir", self.plan.pin_directory),
                          capture_output=True, text=True)
        if totals.returncode != 0:
            raise ExperimentError(f"portcullis stats failed: {totals.stderr.strip()}")
        return json.loads(totals.stdout)

    def measure(self):
        """Runs the scenario's programs and returns what they reported."""
        run_tool([TESTBED, "up"], check=True, stdout=subprocess.DEVNULL)
        if self.s.transport == "socket":
            os.makedirs(self.path("sockets"), mode=0o750)
        daemon = self.start_daemon()
        tap = self.start_tap() if self.s.second_reader else None
        server = self.start_server()
        sent = self.flood(clients(self.s, self.plan))
        time.sleep(SETTLE)
        self.run.stop(server)
        if tap:
            self.run.stop(tap)
        self.run.stop(daemon)
        self.run.stop(self.stats)
        counters = self.counters()
        if server.returncode != 0:
            raise ExperimentError(f"udp-server exited with {server.returncode}:\n{server.output()}")
        received = last_json(server.output_path)
        daemon_summary = self.summary(daemon, "daemon.json", "portcullisd")
        second = self.summary(tap, "tap.json", "the second reader") if tap else None
        return Measured(sent=sent, received=received, daemon=daemon_summary, counters=counters,
                        bans=read_ban_log(self.path("bans.log")), second=second)

    def summary(self, child, name, who):
        """The --summary-json file `name` that `child` wrote at its exit."""
        if not os.path.exists(self.path(name)):
            raise ExperimentError(f"{who} wrote no summary (exit {child.returncode}):\n{child.output()}")
        with open(self.path(name)) as f:
            return json.load(f)


def read_ban_log(path):
    """The daemon's --ban-log (none if it banned nothing and wrote no file)."""
    if not os.path.exists(path):
        return parse_ban_log([])
    with open(path) as f:
        return parse_ban_log(f)


def run_scenario(s, plan, out_dir):
    """Runs one scenario; returns its Result (also saved as NAME.json in `out_dir`)."""
    name = scenario_name(s)
    work = tempfile.mkdtemp(prefix="pc-exp-")
    os.chmod(work, 0o755)
    tag = f"{os.getpid()}-{int(time.time() * 1000) % 100000}"
    csv_path = os.path.join(out_dir, f"{name}.csv")
    try:
        with Run(work, teardown=(TESTBED, "down")) as run:
            measured = ScenarioRun(run, s, plan, work, tag, csv_path).measure()
            result = evaluate(s, plan, measured)
            result.name = name
            result.csv = os.path.basename(csv_path)
            with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
                json.dump(result.to_dict(), f, indent=1)
        return result
    finally:
        shm = f"/dev/shm/pc-exp-{tag}"
        if os.path.exists(shm):
            os.unlink(shm)
        if os.environ.get("PC_EXPERIMENT_KEEP"):
            say(f"experiment: kept {work} (PC_EXPERIMENT_KEEP)")
        else:
            shutil.rmtree(work, ignore_errors=True)
