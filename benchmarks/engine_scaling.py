"""Engine cost curves: time and peak memory of the pseudo-label engine against the number of rows N.

    python benchmarks/engine_scaling.py                      # N = 10k .. 1M (about 15 min, 2 threads)
    python benchmarks/engine_scaling.py --sizes 10000 30000 --force
    python benchmarks/engine_scaling.py --plot-only          # plot and table from the JSON, no measuring

Data: seeded random float32 features ``(N, 256)`` and softmax probabilities over C = 10 classes;
the engine's cost does not depend on what the values mean. Every (operation, N) runs in a fresh
process with ``--threads`` threads (torch, MKL and faiss; default 2, this machine's cores); time is
``time.perf_counter`` around the call, peak memory the growth of the process's peak RSS (VmHWM,
reset through ``/proc/self/clear_refs`` just before the call) over its RSS before the call, so
every torch, numpy and faiss allocation of the call counts, outputs included.

Operations (one row each of ``seconds`` and ``peak-mb`` per N, setting ``N=<n>, D=256``):

- ``knn-graph (torch|faiss)``: every row's 5 cosine neighbours, self excluded (``cosine_knn``).
  N x N work: it runs in full only while a prediction from this N's block (below) is under
  ``--full-limit`` seconds; above that it is not run, and the plot and table show its time
  extrapolated from the block (block seconds x N / block queries), labelled so and never stored.
- ``knn-block (torch|faiss)``: the first ``--block`` rows as queries against the full N-row bank:
  the bounded-memory kNN at every N, 1M included.
- ``nrc-step-knn``: one NRC/AaD training step's bank kNN: 64 queries vs the N bank (K = 5), then
  the KK = 5 neighbours of those 320 neighbours (backend "auto"); seconds per step.
- ``kmeans``: the engine's k-means, K = 10, its defaults (50 Lloyd iterations at most, seed 0).
- ``centroid-labels``: SHOT's centroid labelling (2 rounds).
- ``glc-k-selection``: ``select_num_clusters`` (k-means + exact silhouette per coefficient on a
  seeded subsample of at most 10,000 rows: O(N) for the normalisation, constant after it).
- ``glc-prototypes``: ``one_vs_all_pseudo_labels`` at coefficient 1 (K_hat = 10).
- ``knn-crossover``: torch vs faiss on a few query counts against each bank size (metrics
  ``torch-seconds``, ``faiss-seconds``, ``faiss-speedup``): where ``cosine_knn``'s "auto" switches.

Then ``growth-exponent`` rows (b of time ~ a N^b, least squares on log-log over the measured
sizes) and the plot ``benchmarks/results/engine_scaling.png``. Rows already in the JSON are
skipped unless ``--force``, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time

from common import RESULTS, ROOT, append_rows, row

SUITE = "engine_scaling"
BENCH = "engine"
DIM = 256
CLASSES = 10
K = 5
SIZES = (10_000, 30_000, 100_000, 300_000, 1_000_000)
STEP_BATCH = 64
CROSSOVER_QUERIES = (1, 2, 4, 8, 16, 64, 320)
THREADS = 2  # torch, MKL and faiss threads of every measurement (``--threads``)
DATA_NOTE = (f"random float32 features (N x {DIM}, seeded) and softmax probabilities over {CLASSES} "
             "classes: the engine's cost does not depend on what the values mean")
MEMORY_NOTE = ("peak-mb: growth of peak RSS (VmHWM, reset before the call) over the RSS before it; "
               "fresh process")
OPERATIONS = ("knn-block (torch)", "knn-graph (torch)", "knn-block (faiss)", "knn-graph (faiss)",
              "nrc-step-knn", "kmeans", "centroid-labels", "glc-k-selection", "glc-prototypes",
              "knn-crossover")


def setting(n: int) -> str:
    return f"N={n}, D={DIM}"


# ---------------------------------------------------------------------------------------------- child process
def memory_kb(key: str) -> int:
    """``VmRSS`` / ``VmHWM`` of this process in kB."""
    with open("/proc/self/status") as status:
        return int(re.search(rf"^{key}:\s+(\d+)", status.read(), re.M).group(1))


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        return False
    return True


def measure(call) -> tuple[object, float, float]:
    """``call()``'s result, wall seconds and peak memory growth in MB."""
    import gc

    gc.collect()
    before = memory_kb("VmRSS")
    if not reset_peak():
        raise SystemExit("engine_scaling: this system does not let /proc/self/clear_refs reset the peak RSS")
    started = time.perf_counter()
    out = call()
    seconds = time.perf_counter() - started
    return out, seconds, (memory_kb("VmHWM") - before) / 1024


def child(spec: dict) -> dict:
    """Run one (operation, N) measurement in this process; returns what the parent writes."""
    import torch

    threads = spec["threads"]
    torch.set_num_threads(threads)
    try:
        import faiss

        faiss.omp_set_num_threads(threads)
    except ImportError:
        pass
    from sfda.pseudo_labels import (
        centroid_labels,
        cosine_knn,
        kmeans,
        one_vs_all_pseudo_labels,
        select_num_clusters,
    )
    from sfda.pseudo_labels.knn import choose_backend

    op, n = spec["op"], spec["n"]
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(n, DIM, generator=gen)
    probs = (2 * torch.randn(n, CLASSES, generator=gen)).softmax(1)
    backend = "faiss" if "faiss" in op else "torch"
    if op.startswith("knn-graph"):
        _, seconds, peak = measure(lambda: cosine_knn(feats, feats, K, torch.arange(n), backend=backend))
        return {"seconds": seconds, "peak_mb": peak}
    if op.startswith("knn-block"):
        b = min(spec["block"], n)
        queries, index = feats[:b].clone(), torch.arange(b)
        _, seconds, peak = measure(lambda: cosine_knn(queries, feats, K, index, backend=backend))
        return {"seconds": seconds, "peak_mb": peak, "queries": b}
    if op == "nrc-step-knn":
        steps = 10 if n <= 100_000 else 3
        batches = [torch.randperm(n, generator=gen)[:STEP_BATCH] for _ in range(steps + 1)]

        def step(index):
            near = cosine_knn(feats[index], feats, K, index)[1]
            return cosine_knn(feats[near.reshape(-1)], feats, K, near.reshape(-1))[1]

        step(batches[0])  # warm-up
        _, seconds, peak = measure(lambda: [step(index) for index in batches[1:]])
        chosen = choose_backend("auto", feats[:STEP_BATCH], feats)
        return {"seconds": seconds / steps, "peak_mb": peak, "steps": steps, "backend": chosen}
    if op == "kmeans":
        _, seconds, peak = measure(lambda: kmeans(feats, CLASSES, seed=0))
        return {"seconds": seconds, "peak_mb": peak}
    if op == "centroid-labels":
        _, seconds, peak = measure(lambda: centroid_labels(feats, probs))
        return {"seconds": seconds, "peak_mb": peak}
    if op == "glc-k-selection":
        (chosen, _), seconds, peak = measure(lambda: select_num_clusters(feats, CLASSES, seed=0))
        return {"seconds": seconds, "peak_mb": peak, "chosen": chosen}
    if op == "glc-prototypes":
        _, seconds, peak = measure(lambda: one_vs_all_pseudo_labels(feats, probs, coefficient=1.0, seed=0))
        return {"seconds": seconds, "peak_mb": peak}
    if op == "knn-crossover":
        return {"times": crossover(feats, cosine_knn)}
    raise ValueError(f"unknown operation {op!r}")


def crossover(feats, cosine_knn) -> dict[str, dict[str, float]]:
    """Best-of-a-few seconds of torch and faiss for each query count in CROSSOVER_QUERIES."""
    import torch

    times = {}
    for backend in ("torch", "faiss"):
        cosine_knn(feats[:2], feats[:100], K, torch.arange(2), backend=backend)  # warm-up (library set-up)
    for b in CROSSOVER_QUERIES:
        queries, index = feats[:b].clone(), torch.arange(b)
        times[str(b)] = {}
        for backend in ("torch", "faiss"):
            best, spent, tries = math.inf, 0.0, 0
            while tries < 5 and (tries < 2 or spent < 2.0):  # twice; repeat cheap ones, keep the best
                started = time.perf_counter()
                cosine_knn(queries, feats, K, index, backend=backend)
                took = time.perf_counter() - started
                best, spent, tries = min(best, took), spent + took, tries + 1
            times[str(b)][backend] = best
    return times


def run_child(spec: dict) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS),
           "OPENBLAS_NUM_THREADS": str(THREADS), "NO_ALBUMENTATIONS_UPDATE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "engine_scaling.py"), "--child", json.dumps(spec)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{spec} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- parent
def load_rows() -> list[dict]:
    path = RESULTS / f"{SUITE}.json"
    return json.loads(path.read_text()) if path.exists() else []


def find(rows: list[dict], method: str, metric: str, n: int) -> dict | None:
    hits = [r for r in rows if (r["method"], r["metric"], r["setting"]) == (method, metric, setting(n))
            and r["notes"].startswith(thread_label())]
    return hits[-1] if hits else None


def thread_label() -> str:
    """How every note of this run starts, e.g. "2 threads (torch, MKL and faiss)"."""
    return f"{THREADS} thread{'' if THREADS == 1 else 's'} (torch, MKL and faiss)"


def notes(*parts: str) -> str:
    return "; ".join([thread_label(), *parts, DATA_NOTE])


def measured_rows(op: str, n: int, out: dict, load: str) -> list[dict]:
    """The rows of one child measurement."""
    backend = "faiss" if "faiss" in op else "torch"
    graph = f"cosine_knn(backend='{backend}'): all {n} rows' {K} neighbours, self excluded; measured"
    queries = out.get("queries")
    block = f"cosine_knn(backend='{backend}'): {queries} queries vs the {n}-row bank, k={K}, self excluded"
    details = {
        "knn-graph (torch)": graph,
        "knn-graph (faiss)": graph,
        "knn-block (torch)": block,
        "knn-block (faiss)": block,
        "nrc-step-knn": (f"seconds per step, mean of {out.get('steps')}: {STEP_BATCH} queries vs the bank "
                         f"(K={K}) then the KK={K} neighbours of those {STEP_BATCH * K} "
                         f"(backend 'auto': {out.get('backend')})"),
        "kmeans": f"kmeans(K={CLASSES}, seed 0, at most 50 Lloyd iterations, its defaults)",
        "centroid-labels": f"centroid_labels (SHOT, 2 rounds, C={CLASSES})",
        "glc-k-selection": ("select_num_clusters(C=10, coefficients 0.25..3): k-means + exact silhouette "
                            f"on a seeded 10,000-row subsample (chose {out.get('chosen')})"),
        "glc-prototypes": ("one_vs_all_pseudo_labels(coefficient 1: K_hat 10, rho 0.75, "
                           "256 points per centroid)"),
    }[op]
    text = notes(details, MEMORY_NOTE, load)
    return [row(BENCH, setting(n), op, "seconds", out["seconds"], out["seconds"], notes=text),
            row(BENCH, setting(n), op, "peak-mb", out["peak_mb"], out["seconds"], notes=text)]


def crossover_rows(n: int, times: dict, load: str) -> list[dict]:
    rows = []
    for b, pair in times.items():
        text = notes(f"best of 2 to 5 calls of cosine_knn with {b} queries vs the {n}-row bank, k={K}, "
                     "self excluded", load)
        where = f"{setting(n)}, queries={b}"
        torch_s, faiss_s = pair["torch"], pair["faiss"]
        rows += [row(BENCH, where, "knn-crossover", "torch-seconds", torch_s, torch_s, notes=text),
                 row(BENCH, where, "knn-crossover", "faiss-seconds", faiss_s, faiss_s, notes=text),
                 row(BENCH, where, "knn-crossover", "faiss-speedup", torch_s / faiss_s, 0.0,
                     notes=text + "; torch seconds / faiss seconds (>1: faiss faster)")]
    return rows


def extrapolations(rows: list[dict], op: str) -> list[tuple[int, float]]:
    """``(N, seconds)`` of the full graph ``op`` where only its block was run: block seconds x N / block
    queries. Computed when shown, never stored: it is not a measurement."""
    import re

    backend = op[len("knn-graph (") : -1]
    measured = dict(series(rows, op, "seconds"))
    out = []
    for r in rows:
        if r["method"] == f"knn-block ({backend})" and r["metric"] == "seconds":
            n = int(r["setting"].split(",")[0][2:])
            queries = int(re.search(r"(\d+) queries vs the", r["notes"]).group(1))
            if n not in measured:
                out.append((n, r["value"] * n / queries))
    return sorted(out)


def growth_rows(rows: list[dict]) -> list[dict]:
    """``growth-exponent`` b of seconds ~ a N^b per operation (least squares on log-log, measured N only)."""
    import numpy as np

    out = []
    for op in OPERATIONS:
        points = sorted((int(r["setting"].split(",")[0][2:]), r["value"]) for r in rows
                        if r["method"] == op and r["metric"] == "seconds")
        if len(points) < 2:
            continue
        ns, secs = np.log([p[0] for p in points]), np.log([max(p[1], 1e-6) for p in points])
        slope = float(np.polyfit(ns, secs, 1)[0])
        sizes = ", ".join(str(p[0]) for p in points)
        text = notes(f"least-squares slope of log seconds on log N over the measured N = {sizes}")
        out.append(row(BENCH, f"log-log fit, D={DIM}", op, "growth-exponent", slope, 0.0, notes=text))
    return out


def knn_backend_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def full_graph_or_not(op: str, n: int, block: int, full_limit: float, rows: list[dict]) -> bool:
    """Whether to measure the full kNN graph at ``n`` (its block predicts the time)."""
    backend = op[len("knn-graph (") : -1]
    block_row = find(rows, f"knn-block ({backend})", "seconds", n)
    queries = min(block, n)
    if block_row is None:
        if n > 30_000:
            print(f"N={n} {op}: skipped, measure knn-block ({backend}) first to predict its time", flush=True)
        return n <= 30_000
    predicted = block_row["value"] * n / queries
    if predicted <= full_limit:
        return True
    print(f"N={n} {op}: predicted {predicted:.0f} s > {full_limit:.0f} s: not run (extrapolated when shown)",
          flush=True)
    return False


def run(sizes: list[int], block: int, full_limit: float, force: bool, only: list[str] | None) -> None:
    ops = [op for op in OPERATIONS if not only or op in only]
    have_faiss = knn_backend_available()
    for n in sizes:
        for op in ops:
            if "faiss" in op and not have_faiss:
                print(f"N={n} {op}: skipped, faiss is not installed", flush=True)
                continue
            rows = load_rows()
            metric = "faiss-seconds" if op == "knn-crossover" else "seconds"
            where = f"{setting(n)}, queries={CROSSOVER_QUERIES[-1]}" if op == "knn-crossover" else setting(n)
            done = any((r["method"], r["metric"], r["setting"]) == (op, metric, where)
                       and r["notes"].startswith(thread_label()) for r in rows)
            graph = op.startswith("knn-graph")
            if graph and not done and not full_graph_or_not(op, n, block, full_limit, rows):
                continue
            if done and not force:
                print(f"N={n} {op}: in the JSON, skipped", flush=True)
                continue
            load = f"machine shared: 1-min load average {os.getloadavg()[0]:.1f} at the start"
            started = time.perf_counter()
            out = run_child({"op": op, "n": n, "block": block, "threads": THREADS})
            if op == "knn-crossover":
                append_rows(SUITE, crossover_rows(n, out["times"], load))
                print(f"N={n} {op}: {out['times']}", flush=True)
            else:
                append_rows(SUITE, measured_rows(op, n, out, load))
                print(f"N={n} {op}: {out['seconds']:.3f} s, peak {out['peak_mb']:.0f} MB "
                      f"(process {time.perf_counter() - started:.0f} s)", flush=True)
    append_rows(SUITE, growth_rows(load_rows()))


# ---------------------------------------------------------------------------------------------- report
def threads_of(rows: list[dict]) -> str:
    """The thread count(s) the rows' notes name, e.g. "2 threads"."""
    counts = sorted({r["notes"].split(" (torch")[0] for r in rows if " (torch, MKL and faiss)" in r["notes"]})
    return ", ".join(counts) or "threads unknown"


def series(rows: list[dict], method: str, metric: str) -> list[tuple[int, float]]:
    return sorted((int(r["setting"].split(",")[0][2:]), r["value"]) for r in rows
                  if r["method"] == method and r["metric"] == metric and r["setting"].count(",") == 1)


def plot(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, op in enumerate(op for op in OPERATIONS if op != "knn-crossover"):
        colour = f"C{i}"
        for axis, metric in ((left, "seconds"), (right, "peak-mb")):
            points = series(rows, op, metric)
            if points:
                axis.plot(*zip(*points, strict=True), "o-", color=colour, label=op, ms=4)
        if op.startswith("knn-graph"):
            extra = extrapolations(rows, op)
            if extra:
                left.plot(*zip(*extra, strict=True), "o--", color=colour, mfc="none", ms=4,
                          label=f"{op}, extrapolated")
    for axis, label in ((left, f"seconds ({threads_of(rows)})"), (right, "peak memory growth (MB)")):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel(f"N (rows x {DIM})")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
    left.set_title("time against N")
    right.set_title("peak memory against N")
    left.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path = RESULTS / f"{SUITE}.png"
    fig.savefig(path, dpi=80)
    print(f"{path}: {path.stat().st_size // 1024} kB", flush=True)


def table(rows: list[dict]) -> str:
    """Markdown: seconds / peak MB per operation and N, and the growth exponent."""
    sizes = sorted({n for op in OPERATIONS for n, _ in series(rows, op, "seconds")})
    head = "| operation | " + " | ".join(f"N={n:,}" for n in sizes) + " | exponent |"
    lines = [head, "|---" * (len(sizes) + 2) + "|"]

    def fmt(seconds: float) -> str:
        return f"{seconds:.3g} s" if seconds < 100 else f"{seconds:,.0f} s"

    for op in OPERATIONS:
        if op == "knn-crossover":
            continue
        secs, mem = dict(series(rows, op, "seconds")), dict(series(rows, op, "peak-mb"))
        extra = dict(extrapolations(rows, op)) if op.startswith("knn-graph") else {}
        if not secs and not extra:
            continue
        cells = []
        for n in sizes:
            if n in secs:
                cells.append(f"{fmt(secs[n])} / {mem.get(n, float('nan')):,.0f} MB")
            elif n in extra:
                cells.append(f"*~{fmt(extra[n])} (extrapolated)*")
            else:
                cells.append("")
        exponent = [f"{r['value']:.2f}" for r in rows
                    if r["method"] == op and r["metric"] == "growth-exponent"]
        lines.append(f"| {op} | " + " | ".join(cells) + f" | {(exponent or [''])[-1]} |")
    return "\n".join(lines)


def crossover_table(rows: list[dict]) -> str:
    cells = {}
    for r in rows:
        if r["method"] == "knn-crossover" and r["metric"] == "faiss-speedup":
            n, b = re.match(r"N=(\d+), D=\d+, queries=(\d+)", r["setting"]).groups()
            cells[(int(n), int(b))] = r["value"]
    sizes = sorted({n for n, _ in cells})
    queries = sorted({b for _, b in cells})
    lines = ["| queries | " + " | ".join(f"N={n:,}" for n in sizes) + " |", "|---" * (len(sizes) + 1) + "|"]
    for b in queries:
        values = [f"{cells[(n, b)]:.2f}" if (n, b) in cells else "" for n in sizes]
        lines.append(f"| {b} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def main() -> None:
    global THREADS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--block", type=int, default=8192, help="queries of the kNN block run at every N")
    parser.add_argument("--full-limit", type=float, default=300.0,
                        help="run the full kNN graph only while the block predicts it under this (s)")
    parser.add_argument("--only", nargs="+", choices=OPERATIONS, help="measure these operations only")
    parser.add_argument("--force", action="store_true", help="measure again what the JSON already holds")
    parser.add_argument("--plot-only", action="store_true", help="plot and print the tables, no measuring")
    parser.add_argument("--threads", type=int, default=THREADS,
                        help="torch / MKL / faiss threads per measurement (rows measured with another count "
                             "are measured again)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    THREADS = args.threads
    if args.child:
        print(json.dumps(child(json.loads(args.child))), flush=True)
        return
    if not args.plot_only:
        run(sorted(args.sizes), args.block, args.full_limit, args.force, args.only)
    rows = load_rows()
    plot(rows)
    print(table(rows))
    print()
    print("faiss speedup over torch (torch seconds / faiss seconds):")
    print(crossover_table(rows))


if __name__ == "__main__":
    main()
