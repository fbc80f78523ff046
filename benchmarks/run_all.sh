#!/usr/bin/env bash
# Every benchmark of the foundation issue, in order (about 3 h on 2 CPU cores); results land in
# benchmarks/results/*.json and `python benchmarks/report.py` rewrites the README table.
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_ALBUMENTATIONS_UPDATE=1
python benchmarks/digits.py svhn_mnist --methods source_only tent shot_im shot nrc aad
for bench in mnist_optdigits optdigits_mnist; do
  python benchmarks/digits.py "$bench" --methods source source_only tent shot_im shot nrc aad
done
python benchmarks/speed.py
python benchmarks/report.py
