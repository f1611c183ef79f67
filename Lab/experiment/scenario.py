# SPDX-License-Identifier: Apache-2.0
"""What one run is (`Scenario`), what it measured (`Result`), its name, and building it from options."""
import dataclasses
from dataclasses import dataclass
from typing import Optional

from . import ExperimentError

STACKS = ("ipv4", "ipv6", "mixed")
TRANSPORTS = ("shm", "socket", "file")
#: flood's engines; auto is live frames where the kernel runs them, else xsk (AF_XDP), else packet.
ENGINES = ("auto", "live", "xsk", "packet")
POLICIES = ("drop", "block")
#: The thesis's IPv4 attackers: a /16's hosts (10.4.0.1-10.4.255.254 there), a level of the matrix.
THESIS_ATTACKERS = 65534


@dataclass(kw_only=True)
class Scenario:
    """One run's parameters (the fields in results.json's "scenario", in that order)."""

    transport: str
    stack: str
    rate: int  # invalid frames per second over all attackers; 0: as fast as possible
    attackers: int
    second_reader: bool
    duration: int
    ban_time: int
    threshold: int
    valid_clients: int
    valid_rate: int
    workers: int
    server_threads: int
    engine: str = "auto"
    flood_threads: int
    second_reader_policy: str = "drop"
    daemon_config: Optional[str] = None  # portcullisd --config FILE (its jails; --threshold/--ban-time override)

    @classmethod
    def from_dict(cls, values):
        """A scenario from its results.json form (older files may lack the defaulted fields)."""
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})


@dataclass(kw_only=True)
class Result:
    """What one scenario measured and what follows from it (results.json's entries, in order)."""

    scenario: Scenario
    frames_sent: int
    invalid_sent: int
    valid_sent: int
    generator_seconds: float
    frames_per_second: float
    xdp_dropped: int
    xdp_passed: int
    xdp_expired: int
    lost_before_filter: int
    relative_drop: float
    best_case_drop: float
    ban_cycles: int
    expected_ban_cycles: Optional[int]
    attackers_banned_every_cycle: bool
    valid_frames_per_second: float = 0.0
    attackers_short_of_a_cycle: int
    valid_clients_banned: int
    other_addresses_banned: int
    udp_received: int
    udp_valid: int
    lines_logged: int
    lines_read: int
    lines_lost: int
    bans: int
    unbans: int
    ban_failures: int
    daemon_cpu_seconds: float
    second_reader_lines: Optional[int]
    second_reader_lost: Optional[int]
    engine_used: str = ""  # the engine flood sent with (auto's choice), from its summary
    name: str = ""
    csv: str = ""

    def to_dict(self):
        """The results.json form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        """A result from its results.json form."""
        known = {f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values}
        known["scenario"] = Scenario.from_dict(values["scenario"])
        return cls(**known)


def scenario_name(s):
    """The scenario's name: transport-stack-rate-attackers[-2nd|-2nd-block][-engine]."""
    rate = "max" if s.rate == 0 else f"{s.rate / 1e6:g}M"
    engine = "" if s.engine == "auto" else f"-{s.engine}"
    second = ""
    if s.second_reader:
        second = "-2nd" if s.second_reader_policy == "drop" else "-2nd-block"
    return f"{s.transport}-{s.stack}-{rate}-{s.attackers}{second}{engine}"


def scenario_from(args, plan, **overrides):
    """The scenario of the parsed options `args` (any field of Scenario it has), with `overrides`.

    Fails if the IPv4 attackers do not fit in the plan or the times are not positive."""
    from .evaluate import clients  # evaluate imports Result from here

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(Scenario) if hasattr(args, f.name)}
    values.update(overrides)
    s = Scenario(**values)
    split = clients(s, plan)
    if split.attackers4 > plan.max_attackers4 or (split.valid4 > 0 and split.attackers4 > plan.attackers_before_valid4):
        raise ExperimentError(f"{split.attackers4:,} IPv4 attackers do not fit in {plan.attacker_network4()} "
                              "beside the server" + (" and the valid clients" if split.valid4 else ""))
    if s.ban_time <= 0 or s.duration <= 0:
        raise ExperimentError("--duration and --ban-time must be positive")
    return s
