"""Benchmark: training and scoring throughput of the spend regressor on a CUDA GPU (bf16),
with the achieved TFLOP/s against the card's peak dense bf16 throughput.

FLOPs are counted analytically for the BERT encoder (per token: 2 x parameters in the
matrix multiplies, plus the attention score and value products, 4 x seq x hidden per layer);
a training step costs 3 x the forward pass (forward + backward). Timings use
``torch.cuda.synchronize`` around warm steps. Runs on the CPU too (``--device cpu``), as a
smoke test, where no peak is printed.

    .venv/bin/python bench/gpu_throughput.py                      # default encoder, batch 64, seq 128
    .venv/bin/python bench/gpu_throughput.py --encoder /models/bert-base-uncased --batch 128
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel

# Peak dense bf16 tensor TFLOP/s (no sparsity), from the vendors' data sheets.
PEAK_BF16_TFLOPS = {
    "H200": 989.0, "H100 SXM": 989.0, "H100 PCIe": 756.0, "H100": 756.0, "A100": 312.0, "L40S": 362.0,
    "L40": 181.0, "L4": 121.0, "A10G": 125.0, "A10": 125.0, "RTX 4090": 165.0, "RTX 3090": 71.0, "T4": 65.0,
}  # fmt: skip


def peak_for(name: str) -> float | None:
    """Return the peak bf16 TFLOP/s for a device name (longest matching key), or None."""
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):
        if key.lower() in name.lower():
            return PEAK_BF16_TFLOPS[key]
    return None


def forward_flops(config: AutoConfig, params_in_layers: int, batch: int, seq: int) -> float:
    """FLOPs of one encoder forward pass over ``batch`` sequences of ``seq`` tokens."""
    tokens = batch * seq
    dense = 2.0 * params_in_layers * tokens
    attention = 4.0 * config.num_hidden_layers * batch * seq * seq * config.hidden_size
    return dense + attention


def main() -> None:
    """Parse arguments, time scoring and training steps, print one JSON line and a table."""
    from spendpred.config import get_settings

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", type=Path, default=None, help="BERT checkpoint dir (default: the packaged MiniLM)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per mode (after 3 warm-up steps)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    device = torch.device(args.device)
    encoder_dir = args.encoder or get_settings().resolved_encoder_dir
    config = AutoConfig.from_pretrained(encoder_dir, local_files_only=True)
    model = AutoModel.from_pretrained(encoder_dir, local_files_only=True).to(device)
    head = torch.nn.Linear(config.hidden_size, 1).to(device)
    in_layers = sum(p.numel() for n, p in model.named_parameters() if "encoder.layer" in n and p.dim() == 2)
    ids = torch.randint(1000, config.vocab_size - 1, (args.batch, args.seq), device=device)
    mask = torch.ones_like(ids)
    use_bf16 = device.type == "cuda"
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16)
    flops = forward_flops(config, in_layers, args.batch, args.seq)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def score_step() -> None:
        with torch.inference_mode(), autocast:
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
            head(hidden.mean(dim=1))

    optimizer = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=1e-5)

    def train_step() -> None:
        with autocast:
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
            loss = head(hidden.mean(dim=1)).float().pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    results = {}
    for name, step, multiplier in (("scoring", score_step, 1.0), ("training", train_step, 3.0)):
        model.train(name == "training")
        for _ in range(3):
            step()
        sync()
        started = time.perf_counter()
        for _ in range(args.steps):
            step()
        sync()
        seconds = (time.perf_counter() - started) / args.steps
        results[name] = {
            "users_per_s": args.batch / seconds,
            "tflops": multiplier * flops / seconds / 1e12,
        }
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = peak_for(device_name) if device.type == "cuda" else None
    print(f"device: {device_name}  encoder: {encoder_dir}  batch {args.batch} x seq {args.seq}  bf16={use_bf16}")
    print(f"{'mode':<10}{'users/s':>12}{'TFLOP/s':>10}{'% of peak':>12}")
    for name, r in results.items():
        share = f"{100 * r['tflops'] / peak:.1f}%" if peak else "n/a"
        print(f"{name:<10}{r['users_per_s']:>12,.0f}{r['tflops']:>10.2f}{share:>12}")
    if peak:
        print(f"peak dense bf16 of {device_name}: {peak:.0f} TFLOP/s")
    print(json.dumps({"device": device_name, "peak_tflops": peak, "batch": args.batch, "seq": args.seq, **results}))


if __name__ == "__main__":
    main()
