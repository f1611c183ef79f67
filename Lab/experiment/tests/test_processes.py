# SPDX-License-Identifier: Apache-2.0
"""Run and its waits, with harmless stand-in children (no testbed: `teardown=None`)."""
import os
import sys
import tempfile
import time
import unittest

from experiment import ExperimentError
from experiment.processes import Run, last_json, run_tool, wait_for_json

# Like the programs an experiment runs: blocks SIGINT and SIGTERM and waits for one, then exits 0.
WAITS_FOR_SIGINT = ("import signal, sys; s = {signal.SIGINT, signal.SIGTERM}; "
                    "signal.pthread_sigmask(signal.SIG_BLOCK, s); print('waiting', flush=True); "
                    "signal.sigwait(s); sys.exit(0)")


class RunTests(unittest.TestCase):
    def setUp(self):
        self.directory = tempfile.TemporaryDirectory()
        self.work = self.directory.name

    def tearDown(self):
        self.directory.cleanup()

    def path(self, name):
        return os.path.join(self.work, name)

    def test_close_kills_the_process_group(self):
        run = Run(self.work, teardown=None)
        # A shell leading its group, with a grandchild in it.
        child = run.start("sleeper", ["sh", "-c", f"{sys.executable} -c 'import time; time.sleep(60)' & wait"],
                          self.path("sleeper.out"))
        self.assertEqual(os.getpgid(child.process.pid), child.process.pid)
        start = time.monotonic()
        run.close()
        self.assertLess(time.monotonic() - start, 5)
        self.assertEqual(child.returncode, -9)
        self.assertTrue(child.output_file.closed)
        self.assertEqual(run.children, [])

    def test_stop_sends_sigint_to_a_waiting_program(self):
        with Run(self.work, teardown=None) as run:
            child = run.start("waiter", [sys.executable, "-c", WAITS_FOR_SIGINT], self.path("waiter.out"))
            deadline = time.monotonic() + 10
            while "waiting" not in child.output() and time.monotonic() < deadline:
                time.sleep(0.02)
            self.assertEqual(run.stop(child, timeout=5), 0)
            self.assertEqual(child.output(), "waiting\n")

    def test_stop_kills_after_the_timeout(self):
        with Run(self.work, teardown=None) as run:
            child = run.start("stubborn", [sys.executable, "-c", "import time; time.sleep(60)"],
                              self.path("stubborn.out"))
            self.assertEqual(run.stop(child, timeout=0.2), -9)

    def test_teardown_runs_at_close(self):
        marker = self.path("down")
        with Run(self.work, teardown=("touch", marker)):
            pass
        self.assertTrue(os.path.exists(marker))

    def test_child_wait_is_bounded(self):
        with Run(self.work, teardown=None) as run:
            child = run.start("slow", [sys.executable, "-c", "print('busy', flush=True); import time; time.sleep(60)"],
                              self.path("slow.out"))
            with self.assertRaisesRegex(ExperimentError, "slow still runs after 0.3 s"):
                child.wait(0.3)


class WaitForJsonTests(unittest.TestCase):
    def setUp(self):
        self.directory = tempfile.TemporaryDirectory()
        self.work = self.directory.name
        self.ready = os.path.join(self.work, "ready.json")

    def tearDown(self):
        self.directory.cleanup()

    def start(self, run, code):
        return run.start("child", [sys.executable, "-c", code], os.path.join(self.work, "child.out"))

    def test_returns_the_object_once_written(self):
        code = (f"import json, os, time; time.sleep(0.2); open({self.ready!r} + '.tmp', 'w').write(json.dumps("
                f"{{'pid': os.getpid(), 'transport': 'shm'}})); os.rename({self.ready!r} + '.tmp', {self.ready!r});"
                " time.sleep(60)")
        with Run(self.work, teardown=None) as run:
            child = self.start(run, code)
            self.assertEqual(wait_for_json(self.ready, child, timeout=10),
                             {"pid": child.process.pid, "transport": "shm"})

    def test_the_child_exiting_first(self):
        with Run(self.work, teardown=None) as run:
            child = self.start(run, "import sys; print('portcullisd: no such interface'); sys.exit(1)")
            with self.assertRaisesRegex(ExperimentError, r"child.out: the process exited \(1\) before writing "
                                                         r"ready.json:\nportcullisd: no such interface"):
                wait_for_json(self.ready, child, timeout=10)

    def test_timeout(self):
        with Run(self.work, teardown=None) as run:
            child = self.start(run, "import time; time.sleep(60)")
            start = time.monotonic()
            with self.assertRaisesRegex(ExperimentError, "no ready.json after 0.3 s"):
                wait_for_json(self.ready, child, timeout=0.3)
            self.assertLess(time.monotonic() - start, 2)


class HelperTests(unittest.TestCase):
    def test_last_json(self):
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "out")
            with open(path, "w") as f:
                f.write('udp-server: listening\n{"received": 1}\nnoise\n{"received": 2, "valid": 1}\nbye\n')
            self.assertEqual(last_json(path), {"received": 2, "valid": 1})
            with open(path, "w") as f:
                f.write("nothing\n")
            with self.assertRaisesRegex(ExperimentError, "no JSON summary"):
                last_json(path)

    def test_run_tool_is_bounded(self):
        with self.assertRaisesRegex(ExperimentError, "still running after 0.2 s"):
            run_tool([sys.executable, "-c", "import time; time.sleep(60)"], timeout=0.2)
        self.assertEqual(run_tool(["true"]).returncode, 0)


if __name__ == "__main__":
    unittest.main()
