"""``python -m bench.table REPORT.json``: the targets of a ``python -m bench all`` report as
the Markdown table the README shows, each figure with what it was computed from."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.stats import best_run

#: Shown for a figure that was not measured.
NONE = "n/a"

#: (ratio, label) in the README's order.
ROWS = (
    ("uniform_over_noop", "default mode at saturation ÷ no-op Celery ceiling"),
    ("uniform_over_naive", "default mode at saturation ÷ naive peer"),
    ("half_load_p50_over_direct_p50", "default mode at half load, p50 ÷ direct p50"),
    ("half_load_p99_over_p50", "same, p99 ÷ p50"),
    ("hot_round_p50_over_direct_p50", "hot row (50 racers, one revision): round p50 ÷ direct p50"),
    ("network_2ms_default_over_naive", "with 2 ms emulated round trip: default ÷ naive peer"),
)


def _first(results: dict[str, Any], key: str) -> dict[str, Any] | None:
    return next(iter(results.get(key, {}).values()), None)


def parts(report: dict[str, Any]) -> dict[str, str]:
    """What each ratio was computed from, in words and figures."""
    results = report["results"]
    ratios = report["ratios"]
    direct = ratios.get("direct_single_transaction_p50_ms")
    shown: dict[str, str] = {}
    uniform, naive, noop = (
        best_run(results, key) for key in ("uniform", "naive_peer", "noop_task")
    )
    if uniform and noop:
        shown["uniform_over_noop"] = (
            f"{uniform[1]:,.0f}/s ({uniform[0]}) vs {noop[1]:,.0f}/s ({noop[0]})"
        )
    if uniform and naive:
        shown["uniform_over_naive"] = (
            f"{uniform[1]:,.0f}/s ({uniform[0]}) vs {naive[1]:,.0f}/s ({naive[0]})"
        )
    half = _first(results, "uniform_half_load")
    if half is not None and direct:
        latency = half["latency"]
        shown["half_load_p50_over_direct_p50"] = (
            f"{latency['p50_ms']:.1f} ms at {half['paced_rate']:,.0f}/s vs {direct:.2f} ms"
        )
        shown["half_load_p99_over_p50"] = f"{latency['p99_ms']:.1f} / {latency['p50_ms']:.1f} ms"
    hot = next(reversed(results.get("hot", {}).values()), None)
    if hot is not None and direct:
        shown["hot_round_p50_over_direct_p50"] = (
            f"{hot['round_time']['p50_ms']:.0f} ms vs {direct:.2f} ms"
        )
    rates = ratios.get("network_2ms_throughput_per_s") or {}
    if rates.get("default") and rates.get("naive"):
        shown["network_2ms_default_over_naive"] = (
            f"{rates['default']:,.0f}/s vs {rates['naive']:,.0f}/s"
        )
    return shown


def render(report: dict[str, Any]) -> str:
    """The Markdown table of the report's targets."""
    targets = report["targets"]
    shown = parts(report)
    lines = ["| figure | measured | from | target | met |", "|---|---|---|---|---|"]
    for name, label in ROWS:
        verdict = targets.get(name, {})
        value = verdict.get("value")
        met = {True: "yes", False: "**no**", None: NONE}[verdict.get("met")]
        lines.append(
            f"| {label} | {NONE if value is None else f'{value:.2f}'} | {shown.get(name, NONE)} "
            f"| {verdict.get('target', NONE)} | {met} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.table", description=__doc__)
    parser.add_argument("report", type=Path, help="a JSON report of `python -m bench all`")
    args = parser.parse_args(argv)
    print(render(json.loads(args.report.read_text())))


if __name__ == "__main__":
    main()
