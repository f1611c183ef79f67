# SPDX-License-Identifier: Apache-2.0
"""The figures and verdicts: clients per family, ban cycles, relative drop, rates from the CSV."""
import math
import os
import tempfile
import unittest

from experiment.evaluate import (
    ACCEPTANCE, Clients, Measured, ban_cycles, check, clients, evaluate, expected_cycles, generator_failures,
    generator_ratio, lost_before_filter, parse_ban_log, rates, relative_drop, smoke_failures, steady_rate)
from experiment.scenario import Result, Scenario
from experiment.tests.support import result_dict, sample_plan


def make_scenario(**changes):
    values = dict(transport="shm", stack="ipv4", rate=0, attackers=2, second_reader=False, duration=24, ban_time=8,
                  threshold=3, valid_clients=1, valid_rate=50000, workers=1, server_threads=1, flood_threads=2)
    values.update(changes)
    return Scenario(**values)


def make_result(**changes):
    return Result.from_dict(result_dict(**changes))


class AcceptanceTests(unittest.TestCase):
    def test_thresholds(self):
        self.assertEqual(ACCEPTANCE["smoke_relative_drop"], 95)
        self.assertEqual(ACCEPTANCE["smoke_ban_cycles"], 3)
        self.assertEqual(ACCEPTANCE["generator_live_pps"], 5e6)
        self.assertEqual(ACCEPTANCE["generator_ratio"], 3)


class ClientsTests(unittest.TestCase):
    def setUp(self):
        self.plan = sample_plan()

    def split(self, stack, attackers, valid=254):
        return clients(make_scenario(stack=stack, attackers=attackers, valid_clients=valid), self.plan)

    def test_ipv4(self):
        self.assertEqual(self.split("ipv4", 65535), Clients(65535, 0, 254, 0))

    def test_ipv4_beyond_the_valid_clients_makes_them_ipv6(self):
        self.assertEqual(self.split("ipv4", 65536), (65536, 0, 0, 254))
        self.assertEqual(self.split("ipv4", 131068), (131068, 0, 0, 254))

    def test_ipv6(self):
        self.assertEqual(self.split("ipv6", 131068), (0, 131068, 0, 254))

    def test_mixed_halves_the_odd_one_to_ipv6(self):
        self.assertEqual(self.split("mixed", 131068), (65534, 65534, 127, 127))
        self.assertEqual(self.split("mixed", 5, 3), (2, 3, 1, 2))


class BanCycleTests(unittest.TestCase):
    def test_parse_ban_log(self):
        log = ["1.0 ban 198.18.0.1 jail=default for=30", "1.1 ban 2001:2:0:a::1", "9.0 unban 198.18.0.1", "9.5 ban 198.18.0.1",
               "garbage", "1.0 ban", "2.0 allow 198.18.0.9", ""]
        self.assertEqual(parse_ban_log(log), {"per_address": {"198.18.0.1": 2, "2001:2:0:a::1": 1}, "unbans": 1})

    def test_expected_cycles(self):
        self.assertEqual(expected_cycles(24, 8), 3)
        self.assertIsNone(expected_cycles(25, 8))
        self.assertIsNone(expected_cycles(24, 0))

    def test_every_attacker_every_cycle(self):
        bans = {"a": 3, "b": 3, "c": 3, "valid": 1}
        self.assertEqual(ban_cycles(bans, ["a", "b", "c"], 24, 8), (3, 3, True, 0))

    def test_an_attacker_short_of_a_cycle(self):
        self.assertEqual(ban_cycles({"a": 3, "b": 2}, ["a", "b", "c"], 24, 8), (3, 3, False, 2))

    def test_fewer_cycles_than_expected(self):
        self.assertEqual(ban_cycles({"a": 2, "b": 2}, ["a", "b"], 24, 8), (2, 3, False, 0))

    def test_no_expectation_without_whole_ban_times(self):
        self.assertEqual(ban_cycles({"a": 2, "b": 2}, ["a", "b"], 20, 8), (2, None, True, 0))

    def test_never_banned(self):
        self.assertEqual(ban_cycles({}, ["a"], 24, 8), (0, 3, False, 0))
        self.assertEqual(ban_cycles({}, [], 24, 8), (0, 3, False, 0))


class RelativeDropTests(unittest.TestCase):
    def test_subtracts_the_frames_before_each_ban(self):
        relative, best = relative_drop(dropped=9009, invalid_sent=10000, cycles=3, threshold=3, attackers=100)
        self.assertAlmostEqual(relative, 99.0)  # 9009 / (10000 - 900)
        self.assertAlmostEqual(best, 91.0)

    def test_no_best_case(self):
        relative, best = relative_drop(dropped=5, invalid_sent=900, cycles=3, threshold=3, attackers=100)
        self.assertTrue(math.isnan(relative))
        self.assertAlmostEqual(best, 0.0)
        self.assertTrue(all(math.isnan(v) for v in relative_drop(0, 0, 0, 3, 1)))


class EvaluateTests(unittest.TestCase):
    def measured(self, bans):
        return Measured(
            sent={"frames": 1100, "invalid_v4": 1000, "invalid_v6": 0, "valid_v4": 100, "valid_v6": 0,
                  "seconds": 2.0, "frames_per_second": 550.0},
            received={"received": 105, "valid": 100, "logged": 5},
            daemon={"lines": 5, "lines_lost": 0, "bans": 6, "unbans": 4, "ban_failures": 0, "cpu_seconds": 0.25},
            counters={"dropped": 960, "passed": 90, "expired": 10},
            bans=parse_ban_log(bans), second={"lines": 5, "lost": 1})

    def test_a_clean_run(self):
        log = [f"{t} ban {a}" for t in (1, 9, 17) for a in ("198.18.0.1", "198.18.0.2")]
        r = evaluate(make_scenario(), sample_plan(), self.measured(log))
        self.assertEqual((r.invalid_sent, r.valid_sent, r.xdp_dropped, r.xdp_passed, r.xdp_expired),
                         (1000, 100, 960, 100, 10))
        self.assertEqual(r.lost_before_filter, 40)
        self.assertAlmostEqual(r.relative_drop, 100.0 * 960 / (1000 - 3 * 3 * 2))
        self.assertAlmostEqual(r.best_case_drop, 98.2)
        self.assertEqual((r.ban_cycles, r.expected_ban_cycles, r.attackers_banned_every_cycle), (3, 3, True))
        self.assertEqual((r.valid_clients_banned, r.other_addresses_banned), (0, 0))
        self.assertEqual(r.valid_frames_per_second, 50.0)
        self.assertEqual((r.udp_received, r.lines_read, r.daemon_cpu_seconds), (105, 5, 0.25))
        self.assertEqual((r.second_reader_lines, r.second_reader_lost), (5, 1))
        self.assertEqual(check(r), [])

    def test_a_banned_valid_client_and_a_stranger(self):
        log = ["1 ban 198.18.0.1", "1 ban 198.19.0.1", "1 ban 10.0.0.1"]
        r = evaluate(make_scenario(), sample_plan(), self.measured(log))
        self.assertEqual((r.ban_cycles, r.attackers_short_of_a_cycle), (1, 1))
        self.assertEqual((r.valid_clients_banned, r.other_addresses_banned), (1, 1))
        self.assertEqual(check(r), ["1 attackers missed a ban cycle (cycles: 1, expected: 3)",
                                    "1 valid clients were banned", "1 addresses outside the plan were banned"])

    def test_without_a_second_reader(self):
        m = self.measured([])
        m.second = None
        r = evaluate(make_scenario(), sample_plan(), m)
        self.assertIsNone(r.second_reader_lines)
        self.assertIsNone(r.second_reader_lost)


class VerdictTests(unittest.TestCase):
    def test_smoke(self):
        self.assertEqual(smoke_failures(make_result(ban_cycles=3, relative_drop=95.01)), [])
        self.assertEqual(smoke_failures(make_result(ban_cycles=2, relative_drop=95.0)),
                         ["2 ban cycles, expected 3", "relative drop 95.00% is not above 95%"])
        self.assertEqual(len(smoke_failures(make_result(ban_cycles=3, relative_drop=float("nan")))), 1)

    def test_generator(self):
        self.assertEqual(generator_failures(5e6, 3.0), [])
        self.assertEqual(generator_failures(4.994e6, 2.96),
                         ["live frames reached 4.99 Mpps, under 5", "live frames are 3.0x AF_PACKET, under 3x"])

    def test_generator_ratio(self):
        self.assertEqual(generator_ratio(6e6, 2e6), 3.0)
        self.assertEqual(generator_ratio(6e6, 0.0), 6e6)

    def test_lost_before_filter_note(self):
        self.assertFalse(lost_before_filter(make_result(frames_sent=100000, lost_before_filter=100)))
        self.assertTrue(lost_before_filter(make_result(frames_sent=100000, lost_before_filter=101)))


class RatesTests(unittest.TestCase):
    CSV = ("time,counter,total,rate\n"
           "0.000,dropped,0,0\n0.000,passed,10,100\n0.000,expired,0,0\n0.000,malformed,0,0\n"
           "0.100,dropped,500000,5000000\n0.100,passed,20,100\n0.100,expired,2,20\n"
           "1.000,dropped,1200000,7000000\n1.000,passed,30,100\n"
           "1.100,dropped,1800000,6000000\n1.100,passed,40,100\n"
           "1.200,dropped,2350000,5500000\n1.200,passed,40040,400000\n"
           "1.300,dropped,2750000,4000000\n1.300,passed,40050,100\n"
           "broken line\n")

    def setUp(self):
        self.directory = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.directory.name, "run.csv")
        with open(self.path, "w") as f:
            f.write(self.CSV)

    def tearDown(self):
        self.directory.cleanup()

    def test_series_from_the_first_sample_with_expired_as_passed(self):
        series = rates(self.path)
        self.assertEqual([t for t, _ in series["dropped"]], [0.0, 0.1, 1.0, 1.1, 1.2, 1.3])
        self.assertEqual([r for _, r in series["dropped"]], [0.0, 5e6, 7e6, 6e6, 5.5e6, 4e6])
        self.assertEqual([r for _, r in series["passed"]], [100.0, 120.0, 100.0, 100.0, 400000.0, 100.0])

    def test_empty_csv(self):
        with open(self.path, "w") as f:
            f.write("time,counter,total,rate\n")
        self.assertEqual(rates(self.path), {})

    def test_steady_rate(self):
        # After (not at) 1 s, with passed under 5% of dropped: 6e6 + 100 and 4e6 + 100 (1.2 s passes too much).
        median, samples = steady_rate(rates(self.path))
        self.assertEqual(samples, 2)
        self.assertEqual(median, 6e6 + 100)
        self.assertEqual(steady_rate({}), (0.0, 0))


if __name__ == "__main__":
    unittest.main()
