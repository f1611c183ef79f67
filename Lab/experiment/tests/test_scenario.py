# SPDX-License-Identifier: Apache-2.0
"""Scenarios: naming, building from options, and the results.json form of Scenario and Result."""
import argparse
import unittest

from experiment import ExperimentError
from experiment.scenario import Result, Scenario, scenario_from, scenario_name
from experiment.tests.support import RESULT_KEYS, result_dict, sample_plan

SCENARIO_KEYS = [
    "transport", "stack", "rate", "attackers", "second_reader", "duration", "ban_time", "threshold",
    "valid_clients", "valid_rate", "workers", "server_threads", "engine", "flood_threads", "second_reader_policy",
    "daemon_config"]


def options(**changes):
    """The options `run` parses by default, with `changes`."""
    values = dict(transport="shm", stack="mixed", rate=0, attackers=131068, second_reader=False,
                  second_reader_policy="drop", duration=60, ban_time=30, threshold=3, valid_clients=254,
                  valid_rate=50000, workers=1, server_threads=1, engine="auto", flood_threads=2,
                  out="/tmp/out", check=False, command="run")
    values.update(changes)
    return argparse.Namespace(**values)


def scenario(**changes):
    """A scenario from `options(**changes)` and the sample plan."""
    return scenario_from(options(**changes), sample_plan())


class NameTests(unittest.TestCase):
    def test_rates(self):
        self.assertEqual(scenario_name(scenario(rate=0)), "shm-mixed-max-131068")
        self.assertEqual(scenario_name(scenario(rate=100000)), "shm-mixed-0.1M-131068")
        self.assertEqual(scenario_name(scenario(rate=1000000)), "shm-mixed-1M-131068")
        self.assertEqual(scenario_name(scenario(rate=300000)), "shm-mixed-0.3M-131068")

    def test_second_reader_and_engine(self):
        self.assertEqual(scenario_name(scenario(second_reader=True)), "shm-mixed-max-131068-2nd")
        self.assertEqual(scenario_name(scenario(second_reader=True, second_reader_policy="block")),
                         "shm-mixed-max-131068-2nd-block")
        self.assertEqual(scenario_name(scenario(second_reader_policy="block")), "shm-mixed-max-131068")
        self.assertEqual(scenario_name(scenario(transport="socket", stack="ipv4", attackers=65534, engine="packet")),
                         "socket-ipv4-max-65534-packet")


class BuildTests(unittest.TestCase):
    def test_fields_come_from_the_options(self):
        s = scenario(transport="file", stack="ipv6", rate=5, attackers=7, duration=24, ban_time=8)
        self.assertEqual((s.transport, s.stack, s.rate, s.attackers, s.duration, s.ban_time),
                         ("file", "ipv6", 5, 7, 24, 8))
        self.assertEqual((s.threshold, s.valid_clients, s.flood_threads, s.second_reader_policy), (3, 254, 2, "drop"))

    def test_overrides_win(self):
        s = scenario_from(options(), sample_plan(), transport="socket", attackers=10)
        self.assertEqual((s.transport, s.attackers), ("socket", 10))

    def test_options_without_the_defaulted_fields(self):
        ns = options()
        del ns.second_reader_policy, ns.engine
        s = scenario_from(ns, sample_plan())
        self.assertEqual((s.engine, s.second_reader_policy), ("auto", "drop"))

    def test_too_many_ipv4_attackers(self):
        with self.assertRaisesRegex(ExperimentError, r"^131,069 IPv4 attackers do not fit in 198\.18\.0\.0/15 "
                                                     r"beside the server$"):
            scenario(stack="ipv4", attackers=131069)
        self.assertEqual(scenario(stack="ipv4", attackers=131068).attackers, 131068)

    def test_ipv4_attackers_over_the_valid_clients(self):
        # Mixed: half the attackers are IPv4, and the valid clients too.
        with self.assertRaisesRegex(ExperimentError, r"^65,536 IPv4 attackers .* and the valid clients$"):
            scenario(stack="mixed", attackers=131072)
        self.assertEqual(scenario(stack="mixed", attackers=131072, valid_clients=1).attackers, 131072)
        self.assertEqual(scenario(stack="mixed", attackers=131070).attackers, 131070)

    def test_times_must_be_positive(self):
        for changes in ({"duration": 0}, {"ban_time": 0}, {"ban_time": -1}):
            with self.assertRaisesRegex(ExperimentError, "must be positive"):
                scenario(**changes)


class SerialisationTests(unittest.TestCase):
    def test_key_order_as_before(self):
        r = Result.from_dict(result_dict())
        d = r.to_dict()
        self.assertEqual(list(d), RESULT_KEYS)
        self.assertEqual(list(d["scenario"]), SCENARIO_KEYS)

    def test_round_trip(self):
        d = result_dict(second_reader_lines=5, second_reader_lost=1)
        d["scenario"]["second_reader_policy"] = "block"
        d["scenario"]["daemon_config"] = "/etc/portcullis/portcullis.toml"
        self.assertEqual(Result.from_dict(d).to_dict(), d)

    def test_older_entries_get_the_defaults(self):
        d = result_dict()
        del d["valid_frames_per_second"]
        r = Result.from_dict(d)
        self.assertEqual(r.valid_frames_per_second, 0.0)
        self.assertEqual(r.scenario.second_reader_policy, "drop")
        self.assertIsInstance(r.scenario, Scenario)
        self.assertEqual(r.name, "shm-ipv4-0.1M-65534")


if __name__ == "__main__":
    unittest.main()
