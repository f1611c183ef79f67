# SPDX-License-Identifier: Apache-2.0
"""From what the programs reported to the thesis's figures and the pass/fail verdicts (pure functions)."""
from dataclasses import dataclass
from typing import NamedTuple, Optional

from .scenario import Result

#: Every threshold the verdicts and the report apply.
ACCEPTANCE = {
    # smoke: the ban cycles it must see (its 24 s flood holds 3 ban times of 8 s) and the relative
    # drop [%] it must exceed.
    "smoke_ban_cycles": 3,
    "smoke_relative_drop": 95.0,
    # generator: the live-frames engine's rate into the defended veth [frames/s] and how many
    # times AF_PACKET's it must reach.
    "generator_live_pps": 5e6,
    "generator_ratio": 3.0,
    # generator: the steady state, samples after this many seconds where passed frames are under
    # this fraction of the dropped ones (every attacker banned).
    "steady_after_seconds": 1.0,
    "steady_passed_fraction": 0.05,
    # report: a note for a run whose frames lost before the filter exceed this fraction of those sent.
    "lost_before_filter_fraction": 0.001,
}


class Clients(NamedTuple):
    """Attackers and valid clients per family."""

    attackers4: int
    attackers6: int
    valid4: int
    valid6: int


def clients(scenario, plan):
    """Attackers and valid clients per family for a scenario."""
    attackers, stack, valid = scenario.attackers, scenario.stack, scenario.valid_clients
    if stack == "ipv4":
        # More IPv4 attackers than fit below the valid clients: those are IPv6.
        v4, v6 = (valid, 0) if attackers <= plan.attackers_before_valid4 else (0, valid)
        return Clients(attackers, 0, v4, v6)
    if stack == "ipv6":
        return Clients(0, attackers, 0, valid)
    return Clients(attackers // 2, attackers - attackers // 2, valid // 2, valid - valid // 2)


@dataclass
class Measured:
    """What the programs of one scenario reported."""

    sent: dict  # the flood's last JSON line
    received: dict  # udp-server's last JSON line
    daemon: dict  # portcullisd --summary-json
    counters: dict  # portcullis stats --json
    bans: dict  # parse_ban_log
    second: Optional[dict]  # portcullis tap --summary-json, None without a second reader


def parse_ban_log(lines):
    """Bans per address and the number of lifts, from the daemon's --ban-log lines
    ("TIME ban ADDRESS jail=NAME for=SECONDS", "TIME unban ADDRESS")."""
    bans, unbans = {}, 0
    for line in lines:
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "ban":
            bans[parts[2]] = bans.get(parts[2], 0) + 1
        elif len(parts) >= 3 and parts[1] == "unban":
            unbans += 1
    return {"per_address": bans, "unbans": unbans}


def expected_cycles(duration, ban_time):
    """The ban cycles a flood holds: k for k whole ban times (the (k+1)th would start after it ends);
    None if the duration is no multiple of the ban time."""
    return duration // ban_time if ban_time and duration % ban_time == 0 else None


class Cycles(NamedTuple):
    """How the attackers were banned, cycle by cycle."""

    cycles: int  # the most bans of any attacker
    expected: Optional[int]
    every_cycle: bool  # every attacker banned in every cycle, and as many as expected
    short: int  # attackers banned fewer times than `cycles`


def ban_cycles(per_address, attackers, duration, ban_time):
    """The ban cycles of `attackers` (addresses) from the bans per address."""
    counts = [per_address.get(a, 0) for a in attackers]
    cycles = max(counts) if counts else 0
    expected = expected_cycles(duration, ban_time)
    every = bool(counts) and min(counts) == cycles and cycles >= 1 and (expected is None or cycles == expected)
    return Cycles(cycles, expected, every, sum(1 for c in counts if c < cycles))


def relative_drop(dropped, invalid_sent, cycles, threshold, attackers):
    """The thesis's relative drop [%], dropped / (invalid sent - cycles x threshold x attackers), and
    that best case as a share of the invalid frames sent [%]; NaN where a denominator is not positive."""
    best_case = invalid_sent - cycles * threshold * attackers
    relative = 100.0 * dropped / best_case if best_case > 0 else float("nan")
    return relative, (100.0 * best_case / invalid_sent if invalid_sent else float("nan"))


def evaluate(s, plan, measured):
    """The result of scenario `s` from what its programs reported (name and csv left empty)."""
    split = clients(s, plan)
    sent, daemon, counters, second = measured.sent, measured.daemon, measured.counters, measured.second
    per_address = measured.bans["per_address"]
    attackers = plan.attackers(split.attackers4, split.attackers6)
    valid = plan.valid(split.valid4, split.valid6)
    cycles = ban_cycles(per_address, attackers, s.duration, s.ban_time)
    invalid_sent = sent["invalid_v4"] + sent["invalid_v6"]
    dropped, passed = counters.get("dropped", 0), counters.get("passed", 0) + counters.get("expired", 0)
    relative, best_case = relative_drop(dropped, invalid_sent, cycles.cycles, s.threshold,
                                        split.attackers4 + split.attackers6)
    return Result(
        scenario=s,
        frames_sent=sent["frames"], invalid_sent=invalid_sent,
        valid_sent=sent["valid_v4"] + sent["valid_v6"], generator_seconds=sent["seconds"],
        frames_per_second=sent["frames_per_second"], engine_used=sent.get("engine", s.engine),
        xdp_dropped=dropped, xdp_passed=passed, xdp_expired=counters.get("expired", 0),
        lost_before_filter=sent["frames"] - dropped - passed,
        relative_drop=relative, best_case_drop=best_case,
        ban_cycles=cycles.cycles, expected_ban_cycles=cycles.expected,
        attackers_banned_every_cycle=cycles.every_cycle,
        valid_frames_per_second=(sent["valid_v4"] + sent["valid_v6"]) / sent["seconds"],
        attackers_short_of_a_cycle=cycles.short,
        valid_clients_banned=sum(1 for a in valid if a in per_address),
        other_addresses_banned=len(set(per_address) - set(attackers) - set(valid)),
        udp_received=measured.received["received"], udp_valid=measured.received["valid"],
        lines_logged=measured.received["logged"],
        lines_read=daemon["lines"], lines_lost=daemon["lines_lost"], bans=daemon["bans"],
        unbans=daemon["unbans"], ban_failures=daemon["ban_failures"], daemon_cpu_seconds=daemon["cpu_seconds"],
        second_reader_lines=second["lines"] if second else None,
        second_reader_lost=second["lost"] if second else None)


def check(result):
    """The issue's conditions for one run: the failures, empty if it passed."""
    failures = []
    if not result.attackers_banned_every_cycle:
        failures.append(f"{result.attackers_short_of_a_cycle} attackers missed a ban cycle "
                        f"(cycles: {result.ban_cycles}, expected: {result.expected_ban_cycles})")
    if result.valid_clients_banned:
        failures.append(f"{result.valid_clients_banned} valid clients were banned")
    if result.other_addresses_banned:
        failures.append(f"{result.other_addresses_banned} addresses outside the plan were banned")
    return failures


def smoke_failures(result):
    """The smoke scenario's own conditions beyond `check`."""
    failures = []
    if result.ban_cycles < ACCEPTANCE["smoke_ban_cycles"]:
        failures.append(f"{result.ban_cycles} ban cycles, expected {ACCEPTANCE['smoke_ban_cycles']}")
    if not result.relative_drop > ACCEPTANCE["smoke_relative_drop"]:
        failures.append(f"relative drop {result.relative_drop:.2f}% "
                        f"is not above {ACCEPTANCE['smoke_relative_drop']:g}%")
    return failures


def lost_before_filter(result):
    """Whether the report notes the frames of `result` that never reached the filter."""
    return result.lost_before_filter > ACCEPTANCE["lost_before_filter_fraction"] * result.frames_sent


def rates(csv_path):
    """Per counter of `portcullis stats --csv` (time,counter,value,rate): (seconds since the first
    sample, rate); passed includes expired."""
    samples = {}
    with open(csv_path) as f:
        next(f, None)
        for line in f:
            parts = line.strip().split(",")
            if len(parts) == 4:
                samples.setdefault(parts[0], {})[parts[1]] = float(parts[3])
    times = sorted(samples, key=float)
    if not times:
        return {}
    start = float(times[0])
    series = {"dropped": [], "passed": []}
    for t in times:
        row = samples[t]
        series["dropped"].append((float(t) - start, row.get("dropped", 0.0)))
        series["passed"].append((float(t) - start, row.get("passed", 0.0) + row.get("expired", 0.0)))
    return series


def steady_rate(series):
    """The median rate into the filter (dropped + passed) over the steady samples, and their number:
    after the first seconds, once passed frames are a small fraction of the dropped (all banned)."""
    after, fraction = ACCEPTANCE["steady_after_seconds"], ACCEPTANCE["steady_passed_fraction"]
    steady = sorted(d + p for (t, d), (_, p) in zip(series.get("dropped", []), series.get("passed", []))
                    if t > after and d > 0 and p < fraction * d)
    return (steady[len(steady) // 2] if steady else 0.0), len(steady)


def generator_ratio(live_pps, packet_pps):
    """How many times the live-frames engine's rate AF_PACKET's is (AF_PACKET's taken as at least 1)."""
    return live_pps / max(packet_pps, 1)


def generator_failures(live_pps, ratio):
    """The generator comparison's failures: the live rate or the ratio under ACCEPTANCE's."""
    failures = []
    if live_pps < ACCEPTANCE["generator_live_pps"]:
        failures.append(f"live frames reached {live_pps / 1e6:.2f} Mpps, "
                        f"under {ACCEPTANCE['generator_live_pps'] / 1e6:g}")
    if ratio < ACCEPTANCE["generator_ratio"]:
        failures.append(f"live frames are {ratio:.1f}x AF_PACKET, under {ACCEPTANCE['generator_ratio']:g}x")
    return failures
