# SPDX-License-Identifier: Apache-2.0
"""The markdown report and its plots (matplotlib, imported only when plotting)."""
import json
import os

from . import say
from .evaluate import lost_before_filter, rates
from .scenario import Result

INTRODUCTION = ("Relative drop = XDP_DROP / (invalid frames sent - ban cycles x threshold x attackers), as in "
                "the thesis but with the frames the generator really sent. XDP_PASS includes frames passed "
                "because their ban had just ended.")
TABLE_HEADER = ("| Transport | XDP_DROP [10^6] | XDP_PASS [10^6] | Relative drop [%] | Best-case drop [%] "
                "| Packets received by udp-server [10^6] | Log lines written / read | Second reader lines (lost) "
                "| CPU [s] | Ban cycles | Every attacker banned each cycle | Valid clients banned "
                "| Mpps sent (valid kpps) |")
TABLE_RULE = "|---|---|---|---|---|---|---|---|---|---|---|---|---|"


def save_results(out_dir, results):
    """Writes `out_dir`/results.json from the Results."""
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump([r.to_dict() for r in results], f, indent=1)


def load_results(out_dir):
    """The Results in `out_dir`/results.json."""
    with open(os.path.join(out_dir, "results.json")) as f:
        return [Result.from_dict(r) for r in json.load(f)]


def group_title(s):
    """The heading of the group a scenario belongs to: everything but its transport."""
    rate = "as fast as possible" if s.rate == 0 else f"{s.rate:,} invalid pps"
    second = ""
    if s.second_reader:
        second = ", second reader" + (" (lossless)" if s.second_reader_policy == "block" else "")
    return (f"{s.stack.replace('mixed', 'IPv4/IPv6').replace('ipv', 'IPv')}, {rate}, {s.attackers:,} "
            f"attackers{second}, {s.duration} s, ban time {s.ban_time} s")


def grouped(results):
    """(group title, its results) in the order the groups first appear."""
    groups = {}
    for r in results:
        groups.setdefault(group_title(r.scenario), []).append(r)
    return list(groups.items())


def table_row(r):
    """One result's row of its group's table."""
    second = "-" if r.second_reader_lines is None else f"{r.second_reader_lines:,} ({r.second_reader_lost:,})"
    return (f"| {r.scenario.transport} | {r.xdp_dropped / 1e6:.2f} | {r.xdp_passed / 1e6:.3f} "
            f"| {r.relative_drop:.2f} | {r.best_case_drop:.2f} | {r.udp_received / 1e6:.3f} "
            f"| {r.lines_logged:,} / {r.lines_read:,} | {second} | {r.daemon_cpu_seconds:.2f} "
            f"| {r.ban_cycles} | {'yes' if r.attackers_banned_every_cycle else 'NO'} "
            f"| {r.valid_clients_banned} | {r.frames_per_second / 1e6:.2f} "
            f"({r.valid_frames_per_second / 1e3:.0f}) |")


def markdown(results, title, extra, plots):
    """The report's text: per group a table, notes, and its plot if `plots` (group -> file) has one."""
    lines = [f"# {title}", "", extra, "", INTRODUCTION, ""]
    for group, members in grouped(results):
        lines += [f"## {group}", "", TABLE_HEADER, TABLE_RULE]
        lines += [table_row(r) for r in members]
        for r in members:
            if lost_before_filter(r):
                lines += ["", f"Note: {r.lost_before_filter:,} frames of the {r.scenario.transport} run were sent "
                              "but never reached the filter (the relative drop counts them as sent)."]
        if group in plots:
            lines += ["", f"![{group}]({plots[group]})"]
        lines.append("")
    return "\n".join(lines)


def write_report(out_dir, results, title, extra=""):
    """Writes `out_dir`/report.md, its plots and report-meta.json; returns the report's path."""
    # Title and provenance (when, with which command), so that `report DIR` can write them again.
    with open(os.path.join(out_dir, "report-meta.json"), "w") as f:
        json.dump({"title": title, "extra": extra}, f, indent=1)
    text = markdown(results, title, extra, plot(out_dir, results))
    path = os.path.join(out_dir, "report.md")
    with open(path, "w") as f:
        f.write(text)
    return path


def plot(out_dir, results):
    """One PNG per group: dropped and passed packets per second over time, one line per transport."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("experiment: matplotlib is missing (tools/install-deps installs python3-matplotlib); no plots")
        return {}
    made = {}
    for index, (group, members) in enumerate(grouped(results)):
        figure, axes = plt.subplots(figsize=(9, 4.5))
        for r in members:
            series = rates(os.path.join(out_dir, r.csv))
            for counter, style in (("dropped", "-"), ("passed", "--")):
                points = series.get(counter, [])
                if points:
                    label = f"{r.scenario.transport} XDP_{'DROP' if counter == 'dropped' else 'PASS'}"
                    axes.plot([p[0] for p in points], [p[1] / 1e6 for p in points], style, label=label)
        axes.set_xlabel("time [s]")
        axes.set_ylabel("packets per second [10^6]")
        axes.set_title(group, fontsize=9)
        axes.legend(fontsize=8)
        axes.grid(alpha=0.3)
        name = f"plot-{index + 1}.png"
        figure.tight_layout()
        figure.savefig(os.path.join(out_dir, name), dpi=110)
        plt.close(figure)
        made[group] = name
    return made
