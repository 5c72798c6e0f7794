#!/usr/bin/env bash
# The GPU checks in one script, for a machine with an NVIDIA device (run from the repository root
# after `make test`'s environment exists, or with RNNRBM_PY pointing at a Python that has rnnrbm):
#   bash benchmarks/device_check.sh OUT_DIR
# Writes OUT_DIR/cuda_tests.txt and one JSON per benchmark; each step is bounded by `timeout`.
set -u
out=${1:-device-check}
py=${RNNRBM_PY:-.venv/bin/python}
mkdir -p "$out"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
# Every CUDA path (training, chains, AIS and RAISE, accuracy, generation, NCCL under torchrun).
timeout 300 "$py" -m pytest -q -m cuda tests > "$out/cuda_tests.txt" 2>&1
# One Nottingham epoch of the RNN-RBM (CD-15, 176,561 frames; target ≤ 2 s) at two batch sizes.
for b in 100 512; do
  timeout 300 "$py" benchmarks/bench_temporal.py --device cuda --dataset nottingham \
    --models rnn-rbm --batch-size "$b" --epochs 2 --skip generate ais --json \
    > "$out/nottingham_epoch_b$b.json" 2>&1
done
# AIS 100 runs × 1,000 β over the JSB test set's 4,725 frames (target ≤ 20 s), and RAISE's
# sibling cost through the temporal benchmark on all 77 test pieces.
timeout 300 "$py" benchmarks/bench_ais.py --device cuda --rbms 4725 --runs 100 --betas 1000 --json \
  > "$out/ais_jsb_test.json" 2>&1
timeout 300 "$py" benchmarks/bench_temporal.py --device cuda --models rnn-rbm --skip train \
  --ais-sequences 77 --json > "$out/temporal_jsb.json" 2>&1
tail -n 3 "$out"/*.txt "$out"/*.json
