# SPDX-License-Identifier: Apache-2.0
"""Shared fixtures of the unit tests: the sample address plan, a results.json entry."""
import os

from experiment.plan import Plan

SAMPLE_PLAN_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample_plan.json")


def sample_plan_text():
    """The sample `portcullis-testbed plan --json` output."""
    with open(SAMPLE_PLAN_PATH) as f:
        return f.read()


def sample_plan():
    """The sample plan, parsed."""
    return Plan.from_json(sample_plan_text())


# The key order of the results.json entries the single-file tools/experiment wrote.
RESULT_KEYS = [
    "scenario", "frames_sent", "invalid_sent", "valid_sent", "generator_seconds", "frames_per_second",
    "xdp_dropped", "xdp_passed", "xdp_expired", "lost_before_filter", "relative_drop", "best_case_drop",
    "ban_cycles", "expected_ban_cycles", "attackers_banned_every_cycle", "valid_frames_per_second",
    "attackers_short_of_a_cycle", "valid_clients_banned", "other_addresses_banned", "udp_received", "udp_valid",
    "lines_logged", "lines_read", "lines_lost", "bans", "unbans", "ban_failures", "daemon_cpu_seconds",
    "second_reader_lines", "second_reader_lost", "engine_used", "name", "csv"]


def result_dict(**changes):
    """A results.json entry as the single-file tool wrote it."""
    values = {key: 0 for key in RESULT_KEYS}
    values.update(scenario={"transport": "shm", "stack": "ipv4", "rate": 100000, "attackers": 65534,
                            "second_reader": False, "duration": 60, "ban_time": 30, "threshold": 3,
                            "valid_clients": 254, "valid_rate": 50000, "workers": 1, "server_threads": 1,
                            "engine": "auto", "flood_threads": 2},
                  expected_ban_cycles=2, attackers_banned_every_cycle=True, second_reader_lines=None,
                  second_reader_lost=None, engine_used="packet", name="shm-ipv4-0.1M-65534", csv="shm-ipv4-0.1M-65534.csv",
                  relative_drop=99.5, frames_per_second=1.5e6)
    values.update(changes)
    return values
