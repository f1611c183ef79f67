# SPDX-License-Identifier: Apache-2.0
"""The testbed's address plan, as `portcullis-testbed plan --json` prints it.

Nothing here knows a name, an address or a limit of its own: every one comes from that JSON
object (AddressPlan in Lab/Sources/portcullis-testbed/Testbed.swift). Client i of a group is the
group's base address + i in the address's last 32 bits.
"""
import ipaddress
import json
import os
import subprocess
from dataclasses import dataclass

from . import ExperimentError

PLAN_TIMEOUT = 30  # seconds for `portcullis-testbed plan --json`


def address(base, index):
    """Client `index` of the group starting at `base`: base + index in the last 32 bits."""
    start = ipaddress.ip_address(base)
    value = int(start)
    return str(type(start)(value >> 32 << 32 | (value + index) & 0xffffffff))


def group(base, count):
    """The first `count` clients of the group starting at `base`."""
    return [address(base, index) for index in range(count)]


@dataclass(frozen=True)
class Plan:
    """Names, addresses and limits of the testbed."""

    client_namespace: str
    server_namespace: str
    client_interface: str
    server_interface: str
    client_mac: str
    server_mac: str
    pin_directory: str
    server4: str
    server6: str
    prefix4: int
    prefix6: int
    attacker4: str
    attacker6: str
    max_attackers4: int
    attackers_before_valid4: int
    max_attackers6: int
    valid4: str
    valid6: str
    max_valid4: int
    max_valid6: int
    assigned_per_group: int

    @classmethod
    def from_json(cls, plan):
        """The plan from the object `portcullis-testbed plan --json` printed (a dict or its text)."""
        if isinstance(plan, str):
            try:
                plan = json.loads(plan)
            except ValueError as error:
                raise ExperimentError(f"the address plan is not JSON: {error}") from None
        try:
            server, attackers, valid = plan["server"], plan["attackers"], plan["valid"]
            return cls(
                client_namespace=plan["namespaces"]["client"], server_namespace=plan["namespaces"]["server"],
                client_interface=plan["interfaces"]["client"], server_interface=plan["interfaces"]["server"],
                client_mac=plan["macs"]["client"], server_mac=plan["macs"]["server"],
                pin_directory=plan["pin_directory"],
                server4=server["ipv4"], server6=server["ipv6"],
                prefix4=int(server["ipv4_prefix"]), prefix6=int(server["ipv6_prefix"]),
                attacker4=attackers["ipv4"], attacker6=attackers["ipv6"],
                max_attackers4=int(attackers["max_ipv4"]),
                attackers_before_valid4=int(attackers["ipv4_before_valid"]),
                max_attackers6=int(attackers["max_ipv6"]),
                valid4=valid["ipv4"], valid6=valid["ipv6"],
                max_valid4=int(valid["max_ipv4"]), max_valid6=int(valid["max_ipv6"]),
                assigned_per_group=int(plan["assigned_per_group"]))
        except (KeyError, TypeError) as error:
            raise ExperimentError(f"the address plan has no {error}: {json.dumps(plan)}") from None

    def attackers(self, count4, count6):
        """The addresses of `count4` IPv4 and `count6` IPv6 attackers, IPv4 first."""
        return group(self.attacker4, count4) + group(self.attacker6, count6)

    def valid(self, count4, count6):
        """The addresses of `count4` IPv4 and `count6` IPv6 valid clients, IPv4 first."""
        return group(self.valid4, count4) + group(self.valid6, count6)

    def attacker_network4(self):
        """The IPv4 network the attackers share with the valid clients and the server."""
        return ipaddress.ip_network(f"{self.attacker4}/{self.prefix4}", strict=False)


def load(bin_dir):
    """Runs `BIN/portcullis-testbed plan --json` and returns its plan."""
    command = [os.path.join(bin_dir, "portcullis-testbed"), "plan", "--json"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PLAN_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise ExperimentError(f"{' '.join(command)}: no plan after {PLAN_TIMEOUT} s") from None
    except OSError as error:
        raise ExperimentError(f"{' '.join(command)}: {error}") from None
    if done.returncode != 0:
        raise ExperimentError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}")
    return Plan.from_json(done.stdout)
