# SPDX-License-Identifier: Apache-2.0
"""The thesis's experiments on the namespace testbed.

  Lab/tools/experiment run [options]        one scenario: daemon + udp-server + flood (+ a second reader)
  Lab/tools/experiment matrix [options]     every combination of the listed levels, one report
  Lab/tools/experiment generator [options]  each flood engine the kernel runs: live frames, AF_PACKET
  Lab/tools/experiment smoke                the CI scenario: asserts its outcome, exits 1 if it fails
  Lab/tools/experiment report DIR           rewrite DIR/report.md and the plots from DIR/results.json

Each scenario brings the testbed up (Lab/tools/testbed), starts portcullisd on the server's veth,
udp-server in the server namespace, optionally a second reader (`portcullis tap`, lossy, writing
a log file, as the thesis's second reader did), then floods from the client namespace. It samples
the XDP counters every 100 ms to CSV, and records frames sent, dropped, passed, packets received
by udp-server, lines logged and read, the daemon's CPU seconds, and every ban and lift (the
daemon's --ban-log). From those it computes the thesis's relative drop,
    dropped / (invalid frames sent - ban cycles x threshold x attackers),
checks that every attacker was banned in every ban cycle and that no valid client was ever
banned. Everything the testbed creates is removed at the end, also after a failure or Ctrl-C.
Needs root; the programs come from PORTCULLIS_BIN (default: .build/release). Each run has a testbed
of its own, named after PC_TESTBED_INSTANCE (default: the runner's process id). PC_EXPERIMENT_KEEP=1
keeps each run's work directory (the daemon's ban log and summary, the outputs of every process).
"""
import os

#: The repository's root: this package is Lab/experiment.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: The built programs (portcullisd, portcullis, portcullis-testbed and the BPF objects).
BIN = os.environ.get("PORTCULLIS_BIN", os.path.join(ROOT, ".build", "release"))
#: The namespace testbed's script.
TESTBED = os.path.join(ROOT, "Lab", "tools", "testbed")


class ExperimentError(Exception):
    """A scenario could not run or be measured; the message says why."""


def say(text):
    """Prints one line of progress at once (the runs take minutes)."""
    print(text, flush=True)
