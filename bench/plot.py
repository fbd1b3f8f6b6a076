#!/usr/bin/env python3
"""Charts of a benchmark results file (bench/results/latest.json by default), for BENCHMARKS.md:

  <name>-throughput-latency.png  requests/s and p50 / p95 / p99 latency per row (log scales: the rows span
                                 270 to 21,000 req/s and 0.5 ms to 15 s)
  <name>-cpu.png                 CPU time per request of every process in the row, stacked, and
                                 better-authz's own per check

written next to the JSON. Needs matplotlib (pinned in bench/requirements.txt, in .tools/bench-venv):

    .tools/bench-venv/bin/python bench/plot.py [bench/results/latest.json]

bench/bench.py runs it after each run and after --report.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# Processes in the stacking order of the CPU chart: (label, names in results["rows"][row]["procs"]).
PROCESSES = [
    ("better-authz (or the floor server, rows 2e/2f)", ("better-authz", "floor")),
    ("Better Auth", ("better-auth",)),
    ("proxy (Envoy / nginx)", ("envoy", "nginx")),
    ("back end (todo / FastAPI)", ("todo-backend", "fastapi")),
    ("stand-in Better Auth", ("standin",)),
    ("load generator", ("loadgen",)),
]


def number(v: float) -> str:
    """1,252 / 44.3 / 0.876: thousands separated, else three significant digits."""
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def label_bars(ax, bars) -> None:
    for bar in bars:
        width = bar.get_width()
        if width > 0:
            ax.text(width * 1.04 if ax.get_xscale() == "log" else width, bar.get_y() + bar.get_height() / 2,
                    " " + number(width), va="center", fontsize=7)


def throughput_latency(doc: dict, out: Path) -> None:
    rows = list(doc["rows"].values())
    titles = [r["title"] for r in rows]
    y = list(range(len(rows)))
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 0.42 * len(rows) + 1.8), sharey=True,
                                      gridspec_kw={"width_ratios": [1, 1.4]})
    left.set_xscale("log")
    label_bars(left, left.barh(y, [r["rps"] for r in rows], color="tab:blue"))
    left.set_xlabel("requests per second (log scale)")
    left.set_title("Throughput")
    left.set_xlim(100, max(r["rps"] for r in rows) * 4)
    right.set_xscale("log")
    h = 0.27
    for i, (q, color) in enumerate((("p50", "tab:green"), ("p95", "tab:orange"), ("p99", "tab:red"))):
        bars = right.barh([v + (i - 1) * h for v in y], [r["latency_ms"][q] for r in rows], h,
                          label=q, color=color)
        label_bars(right, bars)
    right.set_xlim(right=max(r["latency_ms"]["p99"] for r in rows) * 5)  # room for the labels
    right.set_xlabel("latency, ms (log scale)")
    right.set_title("Latency end to end")
    right.axvline(50, color="grey", linestyle="--", linewidth=1)
    right.text(50, len(rows) - 0.55, " 50 ms budget", fontsize=7, color="grey")
    right.legend(loc="lower right", fontsize=8)
    left.set_yticks(y, titles, fontsize=8)
    left.invert_yaxis()
    for ax in (left, right):
        ax.grid(axis="x", which="major", alpha=0.3)
    fig.suptitle(f"better-authz benchmark, {doc['started_at'][:10]}, {doc['machine']['nproc']} CPUs "
                 f"({doc['machine']['cpu_model']}); {doc['config']['concurrency']} connections", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def cpu_per_request(doc: dict, out: Path) -> None:
    rows = list(doc["rows"].values())
    titles = [r["title"] for r in rows]
    y = list(range(len(rows)))
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 0.42 * len(rows) + 1.8), sharey=True,
                                      gridspec_kw={"width_ratios": [1.6, 1]})
    start = [0.0] * len(rows)
    for label, names in PROCESSES:
        us = [next((r["procs"][n]["cpu_us_per_request"] for n in names if n in r["procs"]), 0.0) for r in rows]
        left.barh(y, us, left=start, label=label)
        start = [s + u for s, u in zip(start, us)]
    for yi, total in zip(y, start):
        left.text(total, yi, f" {total:,.0f}", va="center", fontsize=7)
    left.set_xlabel("CPU µs per request, every process of the row")
    left.set_title("CPU per request, by process")
    left.set_xlim(0, max(start) * 1.12)
    left.legend(loc="lower right", fontsize=8)
    authz = [next((r["procs"][n]["cpu_us_per_request"] for n in ("better-authz", "floor") if n in r["procs"]), 0.0)
             for r in rows]
    label_bars(right, right.barh(y, authz, color="tab:blue"))
    right.set_xlabel("CPU µs per check (rows with better-authz or the floor server)")
    right.set_title("the ext_authz server's own CPU per check")
    right.set_xlim(0, max(authz) * 1.2)
    left.set_yticks(y, titles, fontsize=8)
    left.invert_yaxis()
    for ax in (left, right):
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("CPU time per request over the measured window (utime + stime from /proc)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot(path: Path) -> list[Path]:
    doc = json.loads(path.read_text())
    outs = [path.with_name(f"{path.stem}-throughput-latency.png"), path.with_name(f"{path.stem}-cpu.png")]
    throughput_latency(doc, outs[0])
    cpu_per_request(doc, outs[1])
    return outs


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "bench" / "results" / "latest.json"
    for written in plot(target):
        print(f"wrote {written.relative_to(ROOT) if written.is_relative_to(ROOT) else written}")
