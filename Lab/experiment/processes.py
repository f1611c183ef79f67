# SPDX-License-Identifier: Apache-2.0
"""The processes of one scenario: each in its own process group, every wait bounded, all of them
ended (and the testbed removed) by `Run.close`, which runs on every way out of a scenario."""
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import IO, Optional

from . import ExperimentError, say

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
STOP_TIMEOUT = 20  # seconds a process has to exit after SIGINT
KILL_TIMEOUT = 10  # seconds it has after SIGKILL (a process stuck in the kernel outlives it)
READY_TIMEOUT = 30  # seconds a process has to write its ready file
TOOL_TIMEOUT = 60  # seconds a short command (the testbed's up and down, stats --json) has


@dataclass
class Child:
    """A process started by `Run.start`; its stdout and stderr go to `output_path`."""

    name: str
    process: subprocess.Popen
    output_path: str
    output_file: IO

    @property
    def returncode(self) -> Optional[int]:
        """The exit status, None while it runs."""
        return self.process.poll()

    def output(self):
        """What it printed so far."""
        with open(self.output_path, errors="replace") as f:
            return f.read()

    def wait(self, timeout):
        """Its exit status; ExperimentError if it runs `timeout` seconds longer."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise ExperimentError(f"{self.name} still runs after {timeout} s:\n{self.output()}") from None

    def signal_group(self, number):
        """Sends `number` to its process group (its own: it leads a new session)."""
        try:
            os.killpg(self.process.pid, number)
        except ProcessLookupError:
            pass


class Run:
    """The processes of one scenario; `close` (also on leaving a `with` block) ends all of them, then
    runs `teardown` (a command: the testbed's `down`), if any."""

    def __init__(self, work, teardown=None):
        self.work = work
        self.teardown = list(teardown) if teardown else None
        self.children = []

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()

    def start(self, name, command, output_path):
        """Starts `command` in a new session (so its own process group), output to `output_path`."""
        # No interrupt between starting a process and recording it: close() must know it. The child
        # inherits the mask, so starts with SIGINT and SIGTERM blocked: the programs started here all
        # block them anyway and wait for them (sigtimedwait), so one sent early waits for them.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            output = open(output_path, "w")
            try:
                process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
            except BaseException:
                output.close()
                raise
            child = Child(name, process, output_path, output)
            self.children.append(child)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        return child

    def stop(self, child, timeout=STOP_TIMEOUT):
        """SIGINT to the child's group, SIGKILL after `timeout` seconds; returns its exit status."""
        if child.process.poll() is None:
            child.signal_group(signal.SIGINT)
            try:
                child.process.wait(timeout)
            except subprocess.TimeoutExpired:
                child.signal_group(signal.SIGKILL)
                try:
                    child.process.wait(KILL_TIMEOUT)
                except subprocess.TimeoutExpired:
                    raise ExperimentError(f"{child.name} survived SIGKILL for {KILL_TIMEOUT} s") from None
        return child.process.returncode

    def close(self):
        """Kills every process group left (newest first), then runs `teardown`; signals wait meanwhile."""
        # A second Ctrl-C must not cut the clean-up short.
        previous = {number: signal.signal(number, signal.SIG_IGN) for number in STOP_SIGNALS}
        try:
            self._close()
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def _close(self):
        for child in reversed(self.children):
            # Only while the leader is not reaped: until then its number cannot name anyone else's group.
            if child.process.poll() is None:
                child.signal_group(signal.SIGKILL)
                try:
                    child.process.wait(KILL_TIMEOUT)
                except subprocess.TimeoutExpired:
                    say(f"experiment: {child.name} (pid {child.process.pid}) survived SIGKILL for {KILL_TIMEOUT} s")
            child.output_file.close()
        self.children = []
        if self.teardown:
            try:
                subprocess.run(self.teardown, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               timeout=TOOL_TIMEOUT)
            except subprocess.TimeoutExpired:
                say(f"experiment: {' '.join(self.teardown)} did not end within {TOOL_TIMEOUT} s")


def wait_for_json(path, child, timeout=READY_TIMEOUT, interval=0.05):
    """The JSON object `child` writes to `path` (atomically: temp + rename), once it is there.

    ExperimentError, with the child's output, if the child exits first or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if os.path.exists(path):
            try:
                with open(path) as f:
                    return json.load(f)
            except ValueError as error:
                raise ExperimentError(f"{child.name}: {os.path.basename(path)} is no JSON: {error}") from None
        if child.process.poll() is not None:
            raise ExperimentError(f"{os.path.basename(child.output_path)}: the process exited "
                                  f"({child.process.returncode}) before writing {os.path.basename(path)}:\n"
                                  f"{child.output()}")
        if time.monotonic() >= deadline:
            raise ExperimentError(f"{os.path.basename(child.output_path)}: no {os.path.basename(path)} "
                                  f"after {timeout} s:\n{child.output()}")
        time.sleep(interval)


def last_json(path):
    """The last line of `path` that is a JSON object (a program's end-of-run summary)."""
    with open(path) as f:
        for line in reversed(f.read().splitlines()):
            if line.startswith("{"):
                return json.loads(line)
    raise ExperimentError(f"{path}: no JSON summary; see the file")


def run_tool(command, timeout=TOOL_TIMEOUT, **options):
    """Runs a short command to its end, `timeout` seconds at most (`options` as subprocess.run's)."""
    try:
        return subprocess.run(command, timeout=timeout, **options)
    except subprocess.TimeoutExpired:
        raise ExperimentError(f"{' '.join(command)}: still running after {timeout} s") from None
