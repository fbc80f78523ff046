"""Rewrite the results tables of the documentation site (``docs/results.md``) from
``benchmarks/results/*.json``.

    python benchmarks/report.py

One table per suite file: a row per (benchmark, setting, method), a column per metric, each
cell the measured value (fractions as written, seconds rounded); a row measured over seeds shows
"mean ± standard deviation" (the per-seed values stay in the JSON). The region of ``docs/results.md``
between ``<!-- results:start -->`` and ``<!-- results:end -->`` is replaced; nothing else is touched.
"""

from __future__ import annotations

import json
import re

from common import RESULTS, ROOT
from tta_tables import write_page as write_tta_page

METRIC_ORDER = ["acc", "acc-per-class", "h-score", "known-acc", "unknown-acc", "dice", "hd95", "source-dice",
                "source-val-acc", "ap50", "ap50_11pt", "map", "student-ap50", "hpl-precision",
                "lpl-precision", "hpl-per-image", "source-ap50", "train-images-per-s",
                "epoch-seconds", "round-seconds", "wall-seconds", "images-per-s", "engine-share", "overhead",
                "speedup", "agreement"]
# the engine's cost curves (benchmarks/engine_scaling.py): sub-second times keep 3 significant digits
ENGINE_METRICS = ["seconds", "peak-mb", "extrapolated-seconds", "growth-exponent", "torch-seconds",
                  "faiss-seconds", "faiss-speedup"]
METRIC_ORDER += ENGINE_METRICS
FIRST = ("quickstart",)  # the results start with the quickstart's own comparison
# suites shown on a page of their own (a column per metric would be unreadable here): a link to it
OWN_SECTION = {"engine_scaling": "[Engine cost curves](speed.md#engine-cost-curves)",
               "profile": "[Speed](speed.md#where-the-time-went-and-what-changed)",
               "tta": "[Online TTA results](tta_results.md)"}
PAGE = ROOT / "docs" / "results.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def fmt(metric: str, value: float) -> str:
    if metric.endswith("max |diff|"):  # export parity: differences of 1e-7 and below
        return f"{value:.2g}"
    if metric.endswith("-per-s") and abs(value) >= 1000:
        return f"{value:,.0f}"
    if metric in ENGINE_METRICS and metric.endswith("seconds") and abs(value) < 1:
        return f"{value:.3g}"
    if metric in ("epoch-seconds", "round-seconds", "wall-seconds", "seconds", "images-per-s", "hd95",
                  "extrapolated-seconds", "torch-seconds", "faiss-seconds"):
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"
    if metric in ("overhead", "speedup", "faiss-speedup"):
        return f"{value:.2f}x"
    if metric == "peak-mb":
        return f"{value:,.0f}"
    if metric == "growth-exponent":
        return f"{value:.2f}"
    return f"{value:.4f}"


def table(rows: list[dict]) -> str:
    metrics = sorted({r["metric"] for r in rows},
                     key=lambda m: (METRIC_ORDER.index(m) if m in METRIC_ORDER else 99, m))
    first_seen = {}
    for r in rows:  # group rows: benchmark, then setting ('closed' first), each in order of first appearance
        first_seen.setdefault(("b", r["benchmark"]), len(first_seen))
        first_seen.setdefault(("s", r["setting"]), len(first_seen))
    rows = sorted(rows, key=lambda r: (first_seen[("b", r["benchmark"])], r["setting"] != "closed",
                                       first_seen[("s", r["setting"])]))
    keys: dict[tuple, dict] = {}
    for r in rows:
        cell = keys.setdefault((r["benchmark"], r["setting"], r["method"]), {"epochs": r.get("epochs", "")})
        spread = f" ± {fmt(r['metric'], r['std'])}" if "std" in r else ""  # mean ± SD over seeds
        cell[r["metric"]] = fmt(r["metric"], r["value"]) + spread
    lines = ["| benchmark | setting | method | epochs | " + " | ".join(metrics) + " |",
             "|---" * (4 + len(metrics)) + "|"]
    for (bench, setting, method), cell in keys.items():
        lines.append(f"| {bench} | {setting} | {method} | {cell['epochs']} | "
                     + " | ".join(cell.get(m, "") for m in metrics) + " |")
    return "\n".join(lines)


def rounds_table(rows: list[dict]) -> str:
    """Accuracy after each round, for rows that carry a per-round list (active adaptation)."""
    rows = [r for r in rows if r.get("rounds")]
    width = max(len(r["rounds"]) for r in rows)
    lines = ["| benchmark | setting | method | " + " | ".join(f"round {i + 1}" for i in range(width)) + " |",
             "|---" * (3 + width) + "|"]
    for r in sorted(rows, key=lambda r: (r["benchmark"], r["setting"])):
        lines.append(f"| {r['benchmark']} | {r['setting']} | {r['method']} {r['metric']} | "
                     + " | ".join(fmt(r["metric"], v) for v in r["rounds"]) + " |")
    return "\n".join(lines)


def render() -> str:
    parts = []
    for path in sorted(RESULTS.glob("*.json"), key=lambda p: (p.stem not in FIRST, p.stem)):
        if path.stem in OWN_SECTION:
            parts.append(f"**{path.stem}** (`benchmarks/results/{path.name}`): see {OWN_SECTION[path.stem]}")
            continue
        rows = json.loads(path.read_text())
        if rows:
            parts.append(f"**{path.stem}** (`benchmarks/results/{path.name}`)\n\n{table(rows)}")
        if any(r.get("rounds") for r in rows):
            parts.append(f"**{path.stem}, after each round**\n\n{rounds_table(rows)}")
    return "\n\n".join(parts)


def main() -> None:
    text = PAGE.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{PAGE}: missing the {START} / {END} markers")
    new = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: f"{START}\n{render()}\n{END}", text,
                 flags=re.S)
    PAGE.write_text(new)
    print(f"{PAGE}: results tables rewritten")
    write_tta_page()


if __name__ == "__main__":
    main()
