"""What travels beside an exported model: ``preprocessing.json`` (how to feed it and read it),
``parity.json`` (the check against PyTorch) and ``MODEL_CARD.md`` (where it came from, how it scored)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from ..run.folder import git_commit, versions

SFDA_CHECKOUT = Path(__file__).resolve().parents[2]  # the sfda checkout of an editable install


def scores(results: dict, prefix: str) -> dict[str, float]:
    """The flat ``<prefix>/<metric>`` scores of ``results.json`` (per-class and per-item entries left out)."""
    return {k: v for k, v in results.items() if k.startswith(prefix + "/") and k.count("/") == 1
            and isinstance(v, (int, float))}


def source_of(recipe: dict) -> str:
    """The recipe's ``model.init_args.source``, as written (a path, or a model described in the recipe)."""
    source = ((recipe.get("model") or {}).get("init_args") or {}).get("source")
    if isinstance(source, dict):
        return source.get("path") or f"{source.get('architecture')} with weights {source.get('weights')}"
    return str(source) if source else "(trained by this run)"


def write_card(folder: Path, *, run_dir: Path, checkpoint: Path, fmt: str, model_file: str, run_info: dict,
               results: dict, recipe: dict, parity: dict) -> Path:
    """``folder/MODEL_CARD.md``: source artifact, method, recipe, label-free scores, target scores (labels
    used for reporting only), date and commits, the files and the parity figures."""
    label_free, target = scores(results, "label_free"), scores(results, "target")
    lines = [f"# {run_info.get('method', 'model')} ({run_info.get('task', '?')}), exported as {fmt}", "",
             f"- **Model file**: `{model_file}`; how to feed it and read it: `preprocessing.json`",
             f"- **Method**: {run_info.get('method_class', '?')}",
             f"- **Source model**: {source_of(recipe)}",
             f"- **Run**: `{run_dir}` (recipe: `{run_dir / 'config.yaml'}`), checkpoint `{checkpoint}`",
             f"- **Trained**: {run_info.get('started', '?')}, in a checkout at commit "
             f"{run_info.get('git_commit') or 'unknown (not a git checkout)'}",
             f"- **Exported**: {datetime.datetime.now().isoformat(timespec='seconds')}, sfda "
             f"{versions()['sfda']} (commit {git_commit(SFDA_CHECKOUT) or 'unknown: not a checkout'})", "",
             "## Label-free scores (target data, no labels)", ""]
    lines += [f"- {k}: {v:.4f}" for k, v in sorted(label_free.items())] or ["- none recorded"]
    lines += ["", "## Target scores (labels used for reporting only; they chose nothing)", ""]
    lines += [f"- {k}: {v:.4f}" for k, v in sorted(target.items())] or ["- none (no labels)"]
    lines += ["", "## Parity with PyTorch", "",
              f"On {parity['inputs'][0]} of the run's own target inputs (shape {parity['inputs']}), "
              f"tolerance {parity['tolerance']} x max(1, max |output|):", ""]
    for name, figure in parity["outputs"].items():
        lines.append(f"- {name}: max |difference| {figure['max_abs_diff']}, allowed {figure['allowed']:.3g}")
    if parity.get("smaller_batch"):
        worst = max(f["max_abs_diff"] or 0.0 for f in parity["smaller_batch"].values())
        lines.append(f"- a batch of {parity['inputs'][0] - 1} (dynamic batch size): max |difference| {worst}")
    path = folder / "MODEL_CARD.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_json(path: Path, content: dict) -> Path:
    path.write_text(json.dumps(content, indent=2) + "\n")
    return path
