"""The online test-time adaptation results page (``docs/tta_results.md``) from
``benchmarks/results/tta.json``: per benchmark, a method x setting table of the online error (Dice for the
medical stream), mean ± standard deviation over seeds, with the continual-minus-reset gap; then the speed and
memory of every method. Written by ``benchmarks/report.py``."""

from __future__ import annotations

import json

from common import RESULTS, ROOT

PAGE = ROOT / "docs" / "tta_results.md"
SETTINGS = ["reset_each_shift", "continual", "gradual", "correlated"]
INTRO = """# Online test-time adaptation: results

Every number here is measured by `benchmarks/tta.py` on this project's 2-core CPU machine and read from
`benchmarks/results/tta.json` (rewritten by `python benchmarks/report.py`). The streams are GENERATED HERE:
real test images under the 15 ImageNet-C corruptions at severity 5 (`gradual`: each corruption through
severities 1, 2, 3, 4, 5, 4, 3, 2, 1, 135 domains; `correlated`: continual, each class's images spread over
the batches by a Dirichlet(0.1) draw) (`sfda.data.corruptions`; not MNIST-C, not CIFAR-10-C), and the real
ITK head under MR scanner artifacts (`sfda.data.ArtifactVolumes`). Each cell is
the average online error over the stream's domains (the medical stream: the Dice of the brain mask pooled
over each domain's pixels, higher is better), mean ± sample standard deviation over the seeds that order the
batches; each seed's value and its per-domain values are in the JSON. The protocol is in
[Online and continual TTA](methods/online.md). Lower error is better; **bold** is the best mean of a column;
a gap smaller than the spread is a tie.
"""


def cell(row: dict | None) -> str:
    if row is None:
        return ""
    spread = f" ± {row['std']:.4f}" if "std" in row else ""
    return f"{row['value']:.4f}{spread}"


def accuracy_table(rows: list[dict]) -> str:
    metric = rows[0]["metric"]
    lower = metric != "online-dice"
    settings = [s for s in SETTINGS if any(r["setting"] == s for r in rows)]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    methods.sort(key=lambda m: (m != "source_only", m))
    by = {(r["method"], r["setting"]): r for r in rows}
    best = {}
    for s in settings:
        values = [by[(m, s)]["value"] for m in methods if (m, s) in by]
        best[s] = min(values) if lower else max(values)
    gap = "reset_each_shift" in settings and "continual" in settings
    header = ["method", *settings] + (["continual - reset"] if gap else [])
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for m in methods:
        cells = []
        for s in settings:
            text = cell(by.get((m, s)))
            cells.append(f"**{text}**" if (m, s) in by and by[(m, s)]["value"] == best[s] else text)
        if gap:
            both = (m, "reset_each_shift") in by and (m, "continual") in by
            cells.append(f"{by[(m, 'continual')]['value'] - by[(m, 'reset_each_shift')]['value']:+.4f}"
                         if both else "")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    notes: dict[str, list[str]] = {}  # each note with the rows it applies to
    for r in rows:
        notes.setdefault(r["notes"], []).append(f"{r['method']} ({r['setting']})")
    usual = max(notes, key=lambda note: len(notes[note]))  # said once; the others name their rows
    told = [f"- {note}" if note == usual else f"- {', '.join(where)}: {note}"
            for note, where in notes.items()]
    return "\n".join(lines) + "\n\n" + "\n".join(told)


def speed_table(rows: list[dict]) -> str:
    by: dict[str, dict] = {}
    for r in rows:
        by.setdefault(r["method"], {})[r["metric"]] = r["value"]
    lines = ["| method | images per s | peak memory (MiB) |", "|---|---|---|"]
    for method, values in sorted(by.items(), key=lambda kv: -kv[1].get("images-per-s", 0)):
        lines.append(f"| {method} | {values.get('images-per-s', 0):,.0f} | "
                     f"{values.get('peak-memory-mib', 0):,.0f} |")
    notes = dict.fromkeys(r["notes"] for r in rows)  # images per second's, then peak memory's
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {note}" for note in notes)


def render(rows: list[dict]) -> str:
    parts = [INTRO]
    for benchmark in dict.fromkeys(r["benchmark"] for r in rows):
        own = [r for r in rows if r["benchmark"] == benchmark]
        accuracy = [r for r in own if r["metric"].startswith("online-")]
        speed = [r for r in own if r["setting"].startswith("speed")]
        parts.append(f"## {benchmark}\n")
        if accuracy:
            parts.append(accuracy_table(accuracy) + "\n")
        if speed:
            parts.append(f"Speed and memory ({speed[0]['setting']}):\n\n{speed_table(speed)}\n")
    return "\n".join(parts)


def write_page() -> None:
    path = RESULTS / "tta.json"
    rows = json.loads(path.read_text()) if path.exists() else []
    PAGE.write_text(render(rows))
    print(f"{PAGE}: online TTA tables rewritten")
