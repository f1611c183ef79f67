# SPDX-License-Identifier: Apache-2.0
"""One scenario and `run` end to end, against stand-ins for the testbed and the programs.

The stand-ins speak the machine contracts (ready files, summary files, last JSON lines) and touch
nothing of the system: no namespace, no XDP. They log every command line to a file."""
import contextlib
import io
import json
import os
import signal
import sys
import tempfile
import textwrap
import unittest
from unittest import mock

import experiment.__main__ as cli
from experiment import ExperimentError, runner
from experiment.scenario import Scenario
from experiment.tests.support import SAMPLE_PLAN_PATH, sample_plan

TESTBED = textwrap.dedent("""\
    import json, os, sys
    with open(os.environ["FAKE_LOG"], "a") as f:
        f.write(json.dumps(["testbed"] + sys.argv[1:]) + "\\n")
    command, programs = sys.argv[1], os.environ["PORTCULLIS_BIN"]
    if command in ("up", "down"):
        print("testbed: " + command)
    elif command in ("server", "client"):
        os.execv(sys.argv[2], sys.argv[2:])
    else:
        program = os.path.join(programs, "portcullis-testbed")
        os.execv(program, [program, command] + sys.argv[2:])
    """)

PROGRAM = textwrap.dedent("""\
    import json, os, signal, sys
    name, words = os.path.basename(sys.argv[0]), sys.argv[1:]
    with open(os.environ["FAKE_LOG"], "a") as f:
        f.write(json.dumps([name] + words) + "\\n")

    def arg(option):
        return words[words.index(option) + 1]

    def write(path, value):
        with open(path + ".tmp", "w") as f:
            json.dump(value, f)
        os.rename(path + ".tmp", path)

    def wait_for_stop(timeout=None):
        stop = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop)
        signal.sigtimedwait(stop, timeout) if timeout else signal.sigwait(stop)

    if name == "portcullisd":
        if os.environ.get("FAKE_DAEMON_FAILS"):
            sys.exit("portcullisd: no interface " + arg("--interface"))
        with open(arg("--ban-log"), "w") as f:
            for cycle in range(2):
                f.write(f"{cycle}.0 ban 198.18.0.1\\n{cycle}.0 ban 198.18.0.2\\n{cycle}.9 unban 198.18.0.1\\n")
        write(arg("--ready-file"), {"interface": arg("--interface"), "pid": os.getpid(), "workers": 1})
        wait_for_stop()
        write(arg("--summary-json"), {"lines": 12, "lines_lost": 1, "bans": 4, "unbans": 2, "ban_failures": 0,
                                      "cpu_seconds": 0.5})
    elif name == "portcullis" and words[0] == "tap":
        write(arg("--ready-file"), {"transport": arg("--transport"), "policy": arg("--policy"), "pid": os.getpid()})
        wait_for_stop()
        write(arg("--summary-json"), {"lines": 11, "lost": 3})
    elif name == "portcullis" and "--json" in words:
        print(json.dumps({"dropped": 900, "passed": 95, "expired": 5, "malformed": 0}))
    elif name == "portcullis":
        with open(arg("--csv"), "w") as f:
            f.write("time,counter,total,rate\\n0.000,dropped,0,0\\n0.100,dropped,90,900\\n")
        wait_for_stop(float(arg("--duration")))
    elif words[:2] == ["plan", "--json"]:
        with open(os.environ["FAKE_PLAN"]) as f:
            print(f.read())
    elif words[0] == "udp-server":
        print("udp-server: listening", flush=True)
        write(arg("--ready-file"), {"port": 9000, "threads": int(arg("--threads")), "pid": os.getpid()})
        wait_for_stop()
        print(json.dumps({"received": 110, "valid": 100, "invalid": 10, "logged": 10}))
    elif words[0] == "flood":
        print(json.dumps({"frames": 1100, "invalid_v4": 1000, "invalid_v6": 0, "valid_v4": 100, "valid_v6": 0,
                          "seconds": 2.0, "frames_per_second": 550.0}))
    """)


def executable(path, source):
    with open(path, "w") as f:
        f.write(f"#!{sys.executable}\n{source}")
    os.chmod(path, 0o755)


class StandInTestCase(unittest.TestCase):
    """A temporary BIN with the stand-ins, the testbed's stand-in, and their command log."""

    def setUp(self):
        self.directory = tempfile.TemporaryDirectory()
        root = self.directory.name
        self.bin = os.path.join(root, "bin")
        self.out = os.path.join(root, "out")
        os.makedirs(self.bin)
        os.makedirs(self.out)
        for program in ("portcullisd", "portcullis", "portcullis-testbed"):
            executable(os.path.join(self.bin, program), PROGRAM)
        for name in cli.PROGRAMS:
            if not os.path.exists(os.path.join(self.bin, name)):
                open(os.path.join(self.bin, name), "w").close()
        self.testbed = os.path.join(root, "testbed")
        executable(self.testbed, TESTBED)
        self.log = os.path.join(root, "commands.log")
        environment = {"FAKE_LOG": self.log, "PORTCULLIS_BIN": self.bin, "FAKE_PLAN": SAMPLE_PLAN_PATH}
        for patch in (mock.patch.dict(os.environ, environment), mock.patch.object(runner, "TESTBED", self.testbed),
                      mock.patch.object(runner, "BIN", self.bin), mock.patch.object(runner, "SETTLE", 0.1)):
            patch.start()
            self.addCleanup(patch.stop)

    def tearDown(self):
        self.directory.cleanup()

    def commands(self):
        with open(self.log) as f:
            return [json.loads(line) for line in f]

    def command(self, *head):
        return [c for c in self.commands() if c[:len(head)] == list(head)]


def small_scenario(**changes):
    values = dict(transport="shm", stack="ipv4", rate=1000, attackers=2, second_reader=True, duration=2,
                  ban_time=1, threshold=3, valid_clients=1, valid_rate=100, workers=1, server_threads=2,
                  flood_threads=1)
    values.update(changes)
    return Scenario(**values)


class ScenarioTests(StandInTestCase):
    def test_a_scenario_end_to_end(self):
        r = runner.run_scenario(small_scenario(), sample_plan(), self.out)
        self.assertEqual((r.name, r.csv), ("shm-ipv4-0.001M-2-2nd", "shm-ipv4-0.001M-2-2nd.csv"))
        self.assertEqual((r.ban_cycles, r.expected_ban_cycles, r.attackers_banned_every_cycle), (2, 2, True))
        self.assertEqual((r.xdp_dropped, r.xdp_passed, r.lost_before_filter), (900, 100, 100))
        self.assertEqual((r.udp_received, r.lines_logged, r.lines_read, r.lines_lost), (110, 10, 12, 1))
        self.assertEqual((r.second_reader_lines, r.second_reader_lost), (11, 3))
        self.assertAlmostEqual(r.relative_drop, 100.0 * 900 / (1000 - 2 * 3 * 2))
        with open(os.path.join(self.out, r.name + ".json")) as f:
            self.assertEqual(json.load(f)["second_reader_lines"], 11)
        self.assertTrue(os.path.exists(os.path.join(self.out, r.csv)))
        # Up first, down last; the plan's names and the ready and summary files on the command lines.
        self.assertEqual(self.commands()[0], ["testbed", "up"])
        self.assertEqual(self.commands()[-1], ["testbed", "down"])
        daemon = self.command("portcullisd")[0]
        self.assertEqual(daemon[daemon.index("--interface") + 1], "pctb-server")
        self.assertEqual(daemon[daemon.index("--pin-dir") + 1], "/sys/fs/bpf/portcullis-testbed")
        self.assertIn("--ready-file", daemon)
        tap = self.command("portcullis", "tap")[0]
        self.assertIn("--summary-json", tap)
        self.assertEqual(tap[tap.index("--policy") + 1], "drop")
        flood = self.command("portcullis-testbed", "flood")[0]
        self.assertEqual(flood[flood.index("--attackers-v4") + 1:flood.index("--attackers-v4") + 8:2],
                         ["2", "0", "1", "0"])
        server = self.command("portcullis-testbed", "udp-server")[0]
        self.assertEqual(server[server.index("--transport"):server.index("--transport") + 3],
                         daemon[daemon.index("--transport"):daemon.index("--transport") + 3])

    def test_socket_transport_without_a_second_reader(self):
        r = runner.run_scenario(small_scenario(transport="socket", second_reader=False), sample_plan(), self.out)
        self.assertIsNone(r.second_reader_lines)
        self.assertEqual(self.command("portcullis", "tap"), [])
        daemon = self.command("portcullisd")[0]
        self.assertEqual(daemon[daemon.index("--transport") + 1], "socket")

    def test_the_daemon_failing_ends_the_run(self):
        os.environ["FAKE_DAEMON_FAILS"] = "1"
        with self.assertRaisesRegex(ExperimentError, "daemon.out: the process exited \\(1\\) before writing "
                                                     "daemon.ready.json:\nportcullisd: no interface pctb-server"):
            runner.run_scenario(small_scenario(), sample_plan(), self.out)
        self.assertEqual(self.commands()[-1], ["testbed", "down"])
        self.assertEqual(self.command("portcullis-testbed"), [])


class MainTests(StandInTestCase):
    def setUp(self):
        super().setUp()
        for name, value in (("BIN", self.bin), ("preflight", lambda: None)):
            patch = mock.patch.object(cli, name, value)
            patch.start()
            self.addCleanup(patch.stop)
        handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
        self.addCleanup(lambda: [signal.signal(n, h) for n, h in handlers.items()])

    def main(self, *argv):
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            try:
                cli.main(list(argv))
                code = 0
            except SystemExit as exit:
                code = exit.code
        return code, output.getvalue()

    def test_run_writes_results_and_report(self):
        code, output = self.main("run", "--stack", "ipv4", "--attackers", "2", "--valid-clients", "1",
                                 "--duration", "2", "--ban-time", "1", "--out", self.out, "--assert")
        self.assertEqual(code, 0, output)
        self.assertIn("experiment: [1/1] shm-ipv4-max-2 (2 s)", output)
        with open(os.path.join(self.out, "results.json")) as f:
            self.assertEqual([r["name"] for r in json.load(f)], ["shm-ipv4-max-2"])
        with open(os.path.join(self.out, "report.md")) as f:
            text = f.read()
        self.assertIn("with `Lab/tools/experiment run --stack ipv4 --attackers 2", text)
        self.assertIn("| shm | 0.00 | 0.000 | 91.09 | 98.80 |", text)

    def test_assert_fails_a_missed_cycle(self):
        # Three ban times, two cycles banned: exit 1 with --assert, 0 without.
        arguments = ["run", "--stack", "ipv4", "--attackers", "2", "--valid-clients", "1", "--duration", "3",
                     "--ban-time", "1", "--out", self.out]
        code, output = self.main(*arguments)
        self.assertEqual(code, 0, output)
        self.assertIn("experiment: FAILED: shm-ipv4-max-2: 0 attackers missed a ban cycle (cycles: 2, expected: 3)",
                      output)
        self.assertEqual(self.main(*arguments, "--assert")[0], 1)

    def test_matrix_defaults_come_from_the_plan(self):
        code, _ = self.main("matrix", "--stacks", "ipv4", "--duration", "0", "--out", self.out)
        self.assertEqual(code, "experiment: --duration and --ban-time must be positive")
        args = cli.build_parser().parse_args(["matrix"])
        cli.resolve_defaults(args, sample_plan())
        self.assertEqual(args.attacker_counts, "65534,131068")
        args = cli.build_parser().parse_args(["run"])
        cli.resolve_defaults(args, sample_plan())
        self.assertEqual(args.attackers, 131068)


if __name__ == "__main__":
    unittest.main()
