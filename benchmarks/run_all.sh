#!/usr/bin/env bash
# Every benchmark of the foundation, universal-DA, segmentation and active-DA issues, in order (several hours on 2 CPU
# cores); results land in benchmarks/results/*.json, then docs/results.md's tables are regenerated.
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_ALBUMENTATIONS_UPDATE=1
python benchmarks/digits.py svhn_mnist --methods source_only tent shot_im shot nrc aad
for bench in mnist_optdigits optdigits_mnist; do
  python benchmarks/digits.py "$bench" --methods source source_only tent shot_im shot nrc aad
done
python benchmarks/speed.py
python benchmarks/speed.py --train-subset 60000 --methods shot  # a full SHOT epoch
python benchmarks/official_shot_epoch.py --samples 60000  # the official script's machinery, same math
OMP_NUM_THREADS=1 python benchmarks/reference_loop.py --cases lenet --repeats 3  # overhead vs the reference
OMP_NUM_THREADS=1 python benchmarks/reference_loop.py --cases svhn --repeats 2
OMP_NUM_THREADS=1 python benchmarks/profile_epoch.py --case lenet  # where an epoch's time goes
OMP_NUM_THREADS=1 python benchmarks/engine_scaling.py  # engine cost against N, up to 1M rows
# benchmarks/gpu.py needs a CUDA machine; benchmarks/selection.py (validators) runs apart: hours
python benchmarks/glc_global_step.py
python benchmarks/universal.py mnist06_optdigits --methods source source_only shot_o glc
python benchmarks/universal.py svhn_mnist_opda --methods source_only shot_o glc
python benchmarks/universal.py svhn_mnist_osda --methods source_only shot_o glc
python benchmarks/universal.py svhn_mnist_pda --methods source_only shot shot_o glc
for bench in colin27_itk itk_colin27; do
  OMP_NUM_THREADS=1 python benchmarks/segmentation.py "$bench"
  OMP_NUM_THREADS=1 python benchmarks/segmentation.py "$bench" --lr 1e-5 --methods entropy_prior_estimated entropy entropy_prior_constant entropy_prior_true  # the abandoned 10x-lr deviation, for comparison
done
python benchmarks/active.py --budgets 1 5 --methods lftl lftl_no_vpa random entropy margin shot  # ~14 min per run
python benchmarks/report.py
