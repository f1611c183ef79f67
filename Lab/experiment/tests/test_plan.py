# SPDX-License-Identifier: Apache-2.0
"""The address plan: parsing `portcullis-testbed plan --json` and the client arithmetic."""
import json
import os
import stat
import sys
import tempfile
import unittest

from experiment import ExperimentError
from experiment.plan import Plan, address, group, load
from experiment.tests.support import sample_plan, sample_plan_text


class AddressTests(unittest.TestCase):
    def test_index_zero_is_the_base(self):
        self.assertEqual(address("198.18.0.1", 0), "198.18.0.1")
        self.assertEqual(address("2001:2:0:a::1", 0), "2001:2:0:a::1")

    def test_ipv4_carries_into_higher_bytes(self):
        self.assertEqual(address("198.18.0.1", 255), "198.18.1.0")
        self.assertEqual(address("198.18.0.1", 65534), "198.18.255.255")

    def test_ipv4_wraps_in_32_bits(self):
        self.assertEqual(address("255.255.255.255", 1), "0.0.0.0")

    def test_ipv6_adds_in_the_last_32_bits(self):
        self.assertEqual(address("2001:2:0:a::1", 1), "2001:2:0:a::2")
        self.assertEqual(address("2001:2:0:a::1", (1 << 24) - 1), "2001:2:0:a::100:0")

    def test_ipv6_wraps_without_carrying_into_bit_32(self):
        self.assertEqual(address("2001:2:0:a::ffff:ffff", 1), "2001:2:0:a::")

    def test_group(self):
        self.assertEqual(group("198.19.0.1", 3), ["198.19.0.1", "198.19.0.2", "198.19.0.3"])
        self.assertEqual(group("198.19.0.1", 0), [])


class PlanTests(unittest.TestCase):
    def setUp(self):
        self.plan = sample_plan()

    def test_fields(self):
        p = self.plan
        self.assertEqual((p.client_namespace, p.server_namespace), ("pc-tb-client", "pc-tb-server"))
        self.assertEqual((p.client_interface, p.server_interface), ("pctb-client", "pctb-server"))
        self.assertEqual((p.client_mac, p.server_mac), ("02:00:c6:12:00:01", "02:00:c6:13:ff:fe"))
        self.assertEqual(p.pin_directory, "/sys/fs/bpf/portcullis-testbed")
        self.assertEqual((p.server4, p.server6, p.prefix4, p.prefix6), ("198.19.255.254", "2001:2::fffe", 15, 48))
        self.assertEqual((p.attacker4, p.attacker6), ("198.18.0.1", "2001:2:0:a::1"))
        self.assertEqual((p.max_attackers4, p.attackers_before_valid4, p.max_attackers6), (131068, 65535, 1 << 24))
        self.assertEqual((p.valid4, p.valid6, p.max_valid4, p.max_valid6),
                         ("198.19.0.1", "2001:2:0:c::1", 254, 1 << 24))
        self.assertEqual(p.assigned_per_group, 4)

    def test_from_a_dict_as_from_text(self):
        self.assertEqual(Plan.from_json(json.loads(sample_plan_text())), self.plan)

    def test_attackers_and_valid_clients_ipv4_first(self):
        self.assertEqual(self.plan.attackers(2, 1), ["198.18.0.1", "198.18.0.2", "2001:2:0:a::1"])
        self.assertEqual(self.plan.valid(1, 2), ["198.19.0.1", "2001:2:0:c::1", "2001:2:0:c::2"])

    def test_limits_agree_with_the_addresses(self):
        p = self.plan
        # The last IPv4 attacker stays short of the server; the last before the valid clients short of
        # their /24, which the next one would reach.
        self.assertEqual(address(p.attacker4, p.max_attackers4 - 1), "198.19.255.252")
        self.assertEqual(address(p.attacker4, p.attackers_before_valid4 - 1), "198.18.255.255")
        self.assertEqual(address(p.attacker4, p.attackers_before_valid4), "198.19.0.0")
        self.assertEqual(address(p.valid4, p.max_valid4 - 1), "198.19.0.254")

    def test_attacker_network(self):
        self.assertEqual(str(self.plan.attacker_network4()), "198.18.0.0/15")

    def test_missing_key(self):
        broken = json.loads(sample_plan_text())
        del broken["valid"]
        with self.assertRaisesRegex(ExperimentError, "has no 'valid'"):
            Plan.from_json(broken)

    def test_not_json(self):
        with self.assertRaisesRegex(ExperimentError, "not JSON"):
            Plan.from_json("portcullis-testbed: unknown subcommand 'plan'")


class LoadTests(unittest.TestCase):
    """`load` runs BIN/portcullis-testbed plan --json: here a stand-in script."""

    def stand_in(self, directory, body):
        path = os.path.join(directory, "portcullis-testbed")
        with open(path, "w") as f:
            f.write(f"#!{sys.executable}\nimport sys\n{body}\n")
        os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)

    def test_loads_the_printed_plan(self):
        with tempfile.TemporaryDirectory() as directory:
            self.stand_in(directory, "assert sys.argv[1:] == ['plan', '--json'], sys.argv\n"
                                     f"print({sample_plan_text()!r}, end='')")
            self.assertEqual(load(directory), sample_plan())

    def test_failure_carries_the_message(self):
        with tempfile.TemporaryDirectory() as directory:
            self.stand_in(directory, "sys.stderr.write('no such subcommand\\n'); sys.exit(3)")
            with self.assertRaisesRegex(ExperimentError, r"failed \(3\): no such subcommand"):
                load(directory)

    def test_missing_program(self):
        with tempfile.TemporaryDirectory() as directory:
            with self.assertRaises(ExperimentError):
                load(directory)


if __name__ == "__main__":
    unittest.main()
