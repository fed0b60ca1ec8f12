#!/usr/bin/env bash
# GPU benchmark (issue 7): training and scoring throughput in bf16 on a CUDA machine, with the
# achieved TFLOP/s against the card's peak. Run from the repository root after `make install`
# (on a GPU machine install a CUDA build of torch 2.13.0 instead of the CPU one):
#   bash bench/gpu.sh                     # MiniLM: encoder at batch 64 and 256, then predict vs the article scorer
#   ENCODER=/models/bert-base bash bench/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: run this on a GPU machine (torch sees none)')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
for batch in 64 256; do
    "$PY" bench/gpu_throughput.py --batch "$batch" --seq 128 --steps 30 ${ENCODER:+--encoder "$ENCODER"}
done
# cold scoring with the product's own scorer (SpendModel.predict: bf16 weights cast once,
# token-budget batches, tokenisation on a background thread, pinned memory) against its fp32
# path and the article-style scorer, on the same GPU, model and users; prints users/s, useful
# TFLOP/s and the share of the card's bf16 peak, and bf16's ranking agreement with fp32
# (Spearman, top-10% overlap). Target (issue 15): >= 100,000 users/s for MiniLM on an
# H100/H200-class card, bf16 >= 1.5x fp32.
"$PY" bench/score_throughput.py --device cuda --precisions fp32 bf16 --users "${USERS:-100000}" --slices 4 \
    --json "${OUT:-/tmp}/score_throughput_cuda.json" ${ENCODER:+--encoder-dir "$ENCODER"}
