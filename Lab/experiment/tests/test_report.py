# SPDX-License-Identifier: Apache-2.0
"""The markdown report: groups, table rows, notes, and the files `write_report` writes."""
import contextlib
import io
import json
import os
import tempfile
import unittest

from experiment.report import (
    TABLE_HEADER, TABLE_RULE, grouped, group_title, load_results, markdown, save_results, table_row, write_report)
from experiment.scenario import Result
from experiment.tests.support import result_dict

DOCS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "docs", "experiments")


def make_result(transport="shm", stack="ipv4", second_reader=False, policy="drop", **changes):
    d = result_dict(**changes)
    d["scenario"].update(transport=transport, stack=stack, second_reader=second_reader, second_reader_policy=policy)
    d["name"] = d["csv"] = ""
    return Result.from_dict(d)


class GroupTests(unittest.TestCase):
    def test_titles(self):
        self.assertEqual(group_title(make_result().scenario),
                         "IPv4, 100,000 invalid pps, 65,534 attackers, 60 s, ban time 30 s")
        s = make_result(stack="mixed", second_reader=True, policy="block").scenario
        s.rate, s.attackers = 0, 131068
        self.assertEqual(group_title(s), "IPv4/IPv6, as fast as possible, 131,068 attackers, second reader "
                                         "(lossless), 60 s, ban time 30 s")
        self.assertEqual(group_title(make_result(stack="ipv6", second_reader=True).scenario),
                         "IPv6, 100,000 invalid pps, 65,534 attackers, second reader, 60 s, ban time 30 s")

    def test_transports_share_a_group_in_first_seen_order(self):
        results = [make_result("shm"), make_result("shm", "ipv6"), make_result("socket"), make_result("file", "ipv6")]
        groups = grouped(results)
        self.assertEqual([g for g, _ in groups], [group_title(results[0].scenario), group_title(results[1].scenario)])
        self.assertEqual([[r.scenario.transport for r in members] for _, members in groups],
                         [["shm", "socket"], ["shm", "file"]])


class MarkdownTests(unittest.TestCase):
    def setUp(self):
        self.shm = make_result(
            "shm", xdp_dropped=81530000, xdp_passed=12345, relative_drop=99.1234, best_case_drop=99.9,
            udp_received=1234567, lines_logged=1000, lines_read=998, daemon_cpu_seconds=1.234, ban_cycles=2,
            valid_clients_banned=0, frames_per_second=5.5e6, valid_frames_per_second=49800.0,
            frames_sent=330000000, lost_before_filter=330001)
        self.socket = make_result("socket", second_reader=True, second_reader_lines=12345, second_reader_lost=7,
                                  attackers_banned_every_cycle=False, relative_drop=float("nan"),
                                  frames_sent=1000, lost_before_filter=1)

    def test_row(self):
        self.assertEqual(table_row(self.shm), "| shm | 81.53 | 0.012 | 99.12 | 99.90 | 1.235 | 1,000 / 998 | - "
                                              "| 1.23 | 2 | yes | 0 | 5.50 (50) |")
        self.assertEqual(table_row(self.socket), "| socket | 0.00 | 0.000 | nan | 0.00 | 0.000 | 0 / 0 | 12,345 (7) "
                                                 "| 0.00 | 0 | NO | 0 | 1.50 (0) |")

    def test_whole_report(self):
        first = group_title(self.shm.scenario)
        text = markdown([self.shm, self.socket], "Title", "Measured then.", {first: "plot-1.png"})
        lines = text.split("\n")
        self.assertEqual(lines[:4], ["# Title", "", "Measured then.", ""])
        self.assertTrue(lines[4].startswith("Relative drop = XDP_DROP / (invalid frames sent - ban cycles"))
        second = group_title(self.socket.scenario)
        self.assertEqual(lines[5:], [
            "", f"## {first}", "", TABLE_HEADER, TABLE_RULE, table_row(self.shm), "",
            "Note: 330,001 frames of the shm run were sent but never reached the filter (the relative drop "
            "counts them as sent).", "", f"![{first}](plot-1.png)", "",
            f"## {second}", "", TABLE_HEADER, TABLE_RULE, table_row(self.socket), ""])
        self.assertEqual(TABLE_HEADER.count("|"), TABLE_RULE.count("|"))

    def test_write_report_leaves_results_json_alone(self):
        with tempfile.TemporaryDirectory() as out:
            for name in ("a.csv", "b.csv"):  # the plots (with matplotlib) read them
                with open(os.path.join(out, name), "w") as f:
                    f.write("time,counter,total,rate\n0.000,dropped,0,0\n0.100,dropped,10,100\n")
            self.shm.csv, self.socket.csv = "a.csv", "b.csv"
            save_results(out, [self.shm, self.socket])
            with open(os.path.join(out, "results.json")) as f:
                saved = f.read()
            with contextlib.redirect_stdout(io.StringIO()):  # "matplotlib is missing" where it is
                path = write_report(out, [self.shm, self.socket], "Title", "Measured then.")
            self.assertEqual(path, os.path.join(out, "report.md"))
            with open(os.path.join(out, "report-meta.json")) as f:
                self.assertEqual(json.load(f), {"title": "Title", "extra": "Measured then."})
            with open(os.path.join(out, "results.json")) as f:
                self.assertEqual(f.read(), saved)
            with open(path) as f:
                self.assertTrue(f.read().startswith("# Title\n\nMeasured then.\n"))
            self.assertEqual(json.dumps([r.to_dict() for r in load_results(out)]),  # NaN != NaN: as text
                             json.dumps([self.shm.to_dict(), self.socket.to_dict()]))

    @unittest.skipUnless(os.path.isdir(DOCS), "no docs/experiments")
    def test_the_published_reports_come_out_the_same(self):
        for name in sorted(os.listdir(DOCS)):
            directory = os.path.join(DOCS, name)
            with open(os.path.join(directory, "report-meta.json")) as f:
                meta = json.load(f)
            with open(os.path.join(directory, "report.md")) as f:
                published = f.read()
            results = load_results(directory)
            plots = {group: f"plot-{index + 1}.png" for index, (group, _) in enumerate(grouped(results))}
            with self.subTest(report=name):
                self.assertEqual(markdown(results, meta["title"], meta["extra"], plots), published)


if __name__ == "__main__":
    unittest.main()
