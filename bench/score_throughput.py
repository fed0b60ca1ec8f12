"""Benchmark: batch-scoring throughput of ``SpendModel.predict`` against an article-style scorer.

One run builds one model and one population, then scores the same users with every scorer
side by side and prints users per second, the speed-up over the article-style scorer, and
how far the predictions agree (Spearman, score differences, top-10% overlap):

- ``article``: the way the source article scores (its ``ECommerceDataset`` + ``evaluate``):
  a ``Dataset`` whose ``__getitem__`` tokenises one user padded to ``max_length=128``,
  a ``DataLoader`` with ``batch_size=16``, fp32, ``model.eval()`` and ``torch.no_grad()``,
  torch's default threads. It calls the same network (``SpendModel.regressor``) with the
  same tokenizer (the fast one; the article's slow ``BertTokenizer`` would only be slower).
- ``ours-fp32``, ``ours-bf16``, ``ours-int8``: ``SpendModel.predict`` with that precision
  (chunked batch tokenisation, length-sorted dynamic padding, ``torch.inference_mode``,
  torch threads capped at the available cores). bf16 is timed where the CPU has native
  bf16 kernels (or on CUDA), int8 on a CPU.
- ``ort-fp32``, ``ort-int8`` (``--onnx``; needs ``onnxruntime``, ``onnx`` and ``onnxscript``, which
  the product does not install): the same encoder exported to ONNX (with mean pooling), its
  graph fused by ONNX Runtime's BERT optimizer, optionally int8 dynamically quantised
  (per channel), run by ONNX Runtime's CPU provider with the same batching as ``predict``
  (chunked tokenisation, length-sorted dynamic padding, ``predict``'s CPU batch size); the head runs in torch.
  It is here to show what ONNX Runtime would buy on this CPU, measured beside the others.

``--threads 2 1`` times every scorer at each of those torch thread counts as well (names
get ``@2t``, ``@1t``); each is compared with the article scorer as written (torch's default
threads) and with the article scorer at the same thread count. On a machine shared with
other jobs fewer threads can be faster, because a parallel region waits for its slowest
thread; the same-thread ratio is the one that isolates the method.

The model is the real default encoder (all-MiniLM-L6-v2 from
``spendpred.config.default_encoder_dir()``) with a head fitted by ``fit_head_only`` on a few
hundred users of a labelled snapshot (``--finetune``: the whole encoder fine-tuned by
``train_regressor``, for checking that the reduced precisions keep a model that leans on
the text in the same order). The users come from ``spendpred.synth`` seeded into a
throwaway SQLite warehouse and extracted with ``spendpred.behaviour.extract_snapshot``
(the texts the pipeline really scores; their token lengths are printed).

The machine may be shared with other jobs, so the users are split into slices and, slice
by slice, every scorer runs back to back (in rotating order); the speed-up is reported both
overall (total time) and as the median of the per-slice ratios, which is robust to load
changing during the run. CPU time and the load average are printed too.

    .venv/bin/python bench/score_throughput.py                      # 4,000 users, CPU
    .venv/bin/python bench/score_throughput.py --users 2000 --threads 2 1 --json /tmp/score.json
    .venv/bin/python bench/score_throughput.py --finetune --users 1000 --slices 2
    .venv/bin/python bench/score_throughput.py --device cuda --precisions fp32 bf16

Plain public tools only: PyTorch, Hugging Face transformers, spendpred's public API.
Target (issue 5): ours at least 5x the article-style scorer's users/s on the 2-core machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark, also when loaded by path
from gpu_throughput import forward_flops, peak_for  # noqa: E402

TARGET_SPEEDUP = 5.0
END_DATE = dt.date(2024, 6, 30)


def _log(message: str, *args: object) -> None:
    """Write one progress line to stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] " + (message % args if args else message), file=sys.stderr, flush=True)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=4000, help="users scored by every scorer (default 4000)")
    parser.add_argument("--train-users", type=int, default=300, help="users the head is fitted on (default 300)")
    parser.add_argument("--val-users", type=int, default=100, help="validation users of the head fit (default 100)")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs (default 3)")
    parser.add_argument("--finetune", action="store_true",
                        help="fine-tune the whole encoder (train_regressor) instead of fit_head_only (slower)")
    parser.add_argument("--horizon", type=int, default=90, help="label horizon in days of the training snapshot")
    parser.add_argument("--days", type=int, default=365, help="days of synthetic history (default 365)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic population")
    parser.add_argument("--precisions", nargs="+", default=None, choices=("fp32", "bf16", "int8"),
                        help="our precisions to time (default: fp32, bf16 where native, int8 on CPU)")
    parser.add_argument("--onnx", action="store_true",
                        help="also time ONNX Runtime scorers (ort-fp32, ort-int8; needs onnxruntime, onnx, onnxscript)")
    parser.add_argument("--batch-size", type=int, default=None, help="our batch size (default: predict's own)")
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="torch thread counts to time every scorer with, e.g. 2 1 (default: torch's own "
                             "setting); the article scorer with torch's default threads is always timed")
    parser.add_argument("--article-batch-size", type=int, default=16, help="article scorer batch size (16)")
    parser.add_argument("--article-max-length", type=int, default=128, help="article scorer padding length (128)")
    parser.add_argument("--slices", type=int, default=4, help="slices the users are scored in, scorers interleaved")
    parser.add_argument("--repeats", type=int, default=1, help="passes over all slices (default 1)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="device of the model (cpu)")
    parser.add_argument("--encoder-dir", default=None, help="encoder checkpoint (default: all-MiniLM-L6-v2)")
    parser.add_argument("--json", default=None, help="also write the results as JSON to this path")
    args = parser.parse_args(argv)
    if args.users < 1 or args.slices < 1 or args.repeats < 1 or args.train_users < 10 or args.val_users < 5:
        parser.error("--users, --slices and --repeats must be >= 1, --train-users >= 10, --val-users >= 5")
    return args


# -- data and model ---------------------------------------------------------------------------
def build_snapshots(workdir: Path, users: int, days: int, horizon: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return ``(training snapshot with labels as of END-horizon, scoring snapshot as of END)``."""
    from spendpred import behaviour, synth, warehouse
    from spendpred.snapshot import SNAPSHOT_FILE

    engine = warehouse.get_engine(f"sqlite:///{workdir / 'warehouse.db'}")
    counts = synth.seed_warehouse(engine, users, days, END_DATE, seed)
    _log("seeded %s", counts)
    train_as_of = END_DATE - dt.timedelta(days=horizon)
    behaviour.extract_snapshot(engine, train_as_of, workdir / "train", horizon, with_labels=True)
    behaviour.extract_snapshot(engine, END_DATE, workdir / "score", horizon, with_labels=False)
    engine.dispose()
    train = pd.read_parquet(workdir / "train" / SNAPSHOT_FILE)
    score = pd.read_parquet(workdir / "score" / SNAPSHOT_FILE)
    return train, score


def build_model(train: pd.DataFrame, args: argparse.Namespace) -> Any:
    """Return a ``SpendModel``: the default encoder with a head fitted by ``fit_head_only``
    (or, with ``--finetune``, the encoder fine-tuned too by ``train_regressor``)."""
    from spendpred.config import default_encoder_dir, get_settings
    from spendpred.snapshot import FEATURE_COLUMNS
    from spendpred.model import TrainConfig, fit_head_only, train_regressor

    encoder_dir = Path(args.encoder_dir) if args.encoder_dir else default_encoder_dir()
    shuffled = train.sample(frac=1.0, random_state=args.seed).reset_index(drop=True)
    fit = shuffled.iloc[: args.train_users]
    val = shuffled.iloc[args.train_users : args.train_users + args.val_users]
    config = TrainConfig(epochs=args.epochs, device=args.device, progress=False, max_length=128, seed=args.seed)
    trainer = train_regressor if args.finetune else fit_head_only
    return trainer(fit, val, list(FEATURE_COLUMNS), config, encoder_dir, get_settings().text_template).bundle


# -- scorers -----------------------------------------------------------------------------------
class ArticleDataset(torch.utils.data.Dataset):
    """The article's ``ECommerceDataset`` for scoring: one user tokenised per item, padded to ``max_len``."""

    def __init__(self, texts: list[str], features: np.ndarray | None, tokenizer: Any, max_len: int = 128) -> None:
        self.texts = texts
        self.features = features
        self.tokenizer = tokenizer
        self.max_len = max_len

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        encoding = self.tokenizer(
            self.texts[item], return_tensors="pt", max_length=self.max_len, padding="max_length", truncation=True
        )
        row = {"input_ids": encoding["input_ids"][0], "attention_mask": encoding["attention_mask"][0]}
        if self.features is not None:
            row["features"] = torch.from_numpy(self.features[item])
        return row


def article_scorer(
    model: Any, batch_size: int, max_len: int, threads: int | None
) -> Callable[[pd.DataFrame], np.ndarray]:
    """Return a function scoring a frame the article's way (per-item padding, small batches, fp32, no_grad).

    ``threads`` None leaves torch's threads as they are (the article sets none).
    """
    from spendpred.model.losses import predict_spend
    from spendpred.model.scoring import cpu_threads

    regressor = model.regressor
    device = model.device

    def score(frame: pd.DataFrame) -> np.ndarray:
        features = model.head_features(frame)
        dataset = ArticleDataset(frame["text"].tolist(), features, model.tokenizer, max_len)
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size)
        regressor.eval()
        outputs = []
        with cpu_threads(threads), torch.no_grad():
            for batch in loader:
                input_ids = batch["input_ids"].to(device)
                attention_mask = batch["attention_mask"].to(device)
                batch_features = batch["features"].to(device) if "features" in batch else None
                raw = regressor(input_ids, attention_mask, batch_features)
                outputs.append(predict_spend(model.loss, raw).cpu())
        return torch.cat(outputs).double().numpy()

    return score


def our_scorer(
    model: Any, precision: str, batch_size: int | None, threads: int | None
) -> Callable[[pd.DataFrame], np.ndarray]:
    """Return a function scoring a frame with ``SpendModel.predict`` in ``precision``."""

    def score(frame: pd.DataFrame) -> np.ndarray:
        return model.predict(frame, batch_size=batch_size, precision=precision, num_threads=threads)

    return score


def onnx_encoder(model: Any, workdir: Path, quantize: bool) -> Path:
    """Export the model's encoder + mean pooling to ONNX, fuse it for BERT, optionally int8-quantise it; return the file."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer

    from spendpred.model.network import mean_pool

    class Pooled(torch.nn.Module):
        def __init__(self, encoder: torch.nn.Module) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return mean_pool(hidden, attention_mask)

    exported, fused, quantized = workdir / "encoder.onnx", workdir / "encoder.fused.onnx", workdir / "encoder.int8.onnx"
    if not exported.exists():
        example = (torch.ones(2, 16, dtype=torch.long), torch.ones(2, 16, dtype=torch.long))
        axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}, "pooled": {0: "batch"}}
        torch.onnx.export(Pooled(model.regressor.encoder).eval(), example, str(exported), input_names=list(axes)[:2],
                          output_names=["pooled"], dynamic_axes=axes, opset_version=17, dynamo=False)
        optimizer.optimize_model(str(exported), model_type="bert", num_heads=0, hidden_size=0).save_model_to_file(str(fused))
    if not quantize:
        return fused
    if not quantized.exists():
        quantize_dynamic(str(fused), str(quantized), weight_type=QuantType.QInt8, per_channel=True,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return quantized


def onnx_scorer(model: Any, path: Path, batch_size: int | None, threads: int | None) -> Callable[[pd.DataFrame], np.ndarray]:
    """Return a function scoring a frame with the ONNX encoder at ``path`` and the model's torch head."""
    import onnxruntime as ort

    from spendpred.model.data import length_sorted_batches, tokenize_texts
    from spendpred.model.losses import predict_spend
    from spendpred.model.scoring import CPU_BATCH_SIZE, available_cores

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or min(torch.get_num_threads(), available_cores())
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    size = batch_size or CPU_BATCH_SIZE

    def score(frame: pd.DataFrame) -> np.ndarray:
        features = model.head_features(frame)
        tokens = tokenize_texts(model.tokenizer, frame["text"].tolist(), model.max_length)
        pooled = np.empty((len(frame), model.regressor.hidden_size), dtype=np.float32)
        for index in length_sorted_batches(tokens.lengths, size):
            input_ids, mask = tokens.batch(index)
            pooled[index] = session.run(None, {"input_ids": input_ids.numpy(), "attention_mask": mask.numpy()})[0]
        with torch.inference_mode():
            raw = model.regressor.head_forward(torch.from_numpy(pooled), None if features is None else torch.from_numpy(features))
            return predict_spend(model.loss, raw).double().numpy()

    return score


def default_precisions(device: str) -> list[str]:
    """Return our precisions worth timing on ``device``."""
    from spendpred.model.scoring import cpu_has_native_bf16

    if device == "cuda":
        return ["fp32", "bf16"]
    return ["fp32", *(["bf16"] if cpu_has_native_bf16() else []), "int8"]


# -- measurement -------------------------------------------------------------------------------
def token_stats(model: Any, texts: list[str]) -> dict[str, float]:
    """Return token-length statistics of ``texts`` under the model's tokenizer (with truncation)."""
    from spendpred.model.data import tokenize_texts

    lengths = tokenize_texts(model.tokenizer, texts, model.max_length).lengths
    p10, p50, p90 = np.percentile(lengths, [10, 50, 90])
    return {
        "mean": round(float(lengths.mean()), 1), "p10": float(p10), "p50": float(p50), "p90": float(p90),
        "max": int(lengths.max()), "share_at_max_length": round(float(np.mean(lengths >= model.max_length)), 3),
    }


def useful_flops_per_user(model: Any, texts: list[str]) -> float:
    """Mean encoder FLOPs per user at each user's own token count (padding is not useful work)."""
    from spendpred.model.data import tokenize_texts

    encoder = model.regressor.encoder
    in_layers = sum(p.numel() for n, p in encoder.named_parameters() if "encoder.layer" in n and p.dim() == 2)
    lengths = tokenize_texts(model.tokenizer, texts, model.max_length).lengths
    return float(np.mean([forward_flops(encoder.config, in_layers, 1, int(n)) for n in lengths]))


def run_interleaved(
    scorers: dict[str, Callable[[pd.DataFrame], np.ndarray]], frame: pd.DataFrame, slices: int, repeats: int
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
    """Score ``frame`` slice by slice with every scorer back to back; return predictions and timings."""
    names = list(scorers)
    parts = [part for part in np.array_split(np.arange(len(frame)), slices) if len(part)]
    predictions = {name: np.empty(len(frame), dtype=np.float64) for name in names}
    timings: dict[str, dict[str, Any]] = {name: {"wall": [], "cpu": []} for name in names}
    turn = 0
    for repeat in range(repeats):
        for number, part in enumerate(parts):
            chunk = frame.iloc[part]
            order = names[turn % len(names) :] + names[: turn % len(names)]
            turn += 1
            for name in order:
                wall, cpu = time.perf_counter(), time.process_time()
                predictions[name][part] = scorers[name](chunk)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                timings[name]["wall"].append(wall)
                timings[name]["cpu"].append(cpu)
                _log("repeat %d slice %d/%d %-10s %6d users %7.1fs wall (%.1f users/s)",
                     repeat + 1, number + 1, len(parts), name, len(part), wall, len(part) / wall)
    return predictions, timings


def agreement(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """Return how closely ``other`` follows ``reference``.

    Spearman; the largest and the median absolute difference as a share of the mean
    reference score (relative differences of near-zero scores say nothing); the share of
    the reference's top 10% that is also in ``other``'s top 10% (the "high" tier).
    """
    from spendpred.metrics import spearman

    top = max(1, int(round(0.1 * len(reference))))
    top_ref = set(np.argsort(-reference, kind="stable")[:top].tolist())
    top_other = set(np.argsort(-other, kind="stable")[:top].tolist())
    diff = np.abs(other - reference) / max(float(np.mean(np.abs(reference))), 1e-12)
    return {
        "spearman": round(spearman(reference, other), 6),
        "max_diff_of_mean": float(diff.max()),
        "median_diff_of_mean": float(np.median(diff)),
        "top10_overlap": round(len(top_ref & top_other) / top, 4),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the process exit code (0 when it ran, whatever the figures)."""
    args = _parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    logging.basicConfig(level=logging.WARNING)
    if args.device == "cuda" and not torch.cuda.is_available():
        _log("--device cuda but CUDA is not available")
        return 2
    from spendpred.model.scoring import available_cores

    started = time.perf_counter()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="spendpred_score_bench_") as tmp:
        train, score = build_snapshots(Path(tmp), max(args.users, args.train_users + args.val_users), args.days,
                                       args.horizon, args.seed)
    frame = score.iloc[: args.users].reset_index(drop=True)
    _log("training snapshot %d users (%.0f%% buyers), scoring %d users", len(train),
         100 * float((train["label"] > 0).mean()), len(frame))
    fit_started = time.perf_counter()
    model = build_model(train, args)
    what = "fine-tuned the model" if args.finetune else "fitted the head"
    _log("%s in %.1fs", what, time.perf_counter() - fit_started)
    tokens = token_stats(model, frame["text"].tolist())
    _log("tokens per user: %s", tokens)

    precisions = args.precisions or default_precisions(args.device)
    if args.onnx and args.device != "cpu":
        _log("--onnx times ONNX Runtime's CPU provider: use --device cpu")
        return 2
    onnx_dir = Path(tempfile.mkdtemp(prefix="spendpred_score_bench_onnx_"))
    default_threads = torch.get_num_threads()
    # a thread count equal to torch's default is the default setting (no "@Nt" twin of it)
    requested = args.threads or [None]
    settings: list[int | None] = list(dict.fromkeys(None if t == default_threads else t for t in requested))
    scorers: dict[str, Callable[[pd.DataFrame], np.ndarray]] = {}
    same_threads: dict[str, str] = {}  # scorer -> the article scorer with the same threads
    for threads in dict.fromkeys([None, *settings]):
        suffix = "" if threads is None else f"@{threads}t"
        scorers[f"article{suffix}"] = article_scorer(model, args.article_batch_size, args.article_max_length, threads)
        same_threads[f"article{suffix}"] = f"article{suffix}"
        if threads not in settings:
            continue
        for precision in precisions:
            scorers[f"ours-{precision}{suffix}"] = our_scorer(model, precision, args.batch_size, threads)
            same_threads[f"ours-{precision}{suffix}"] = f"article{suffix}"
        if args.onnx:
            for quantize in (False, True):
                name = f"ort-{'int8' if quantize else 'fp32'}{suffix}"
                scorers[name] = onnx_scorer(model, onnx_encoder(model, onnx_dir, quantize), args.batch_size, threads)
                same_threads[name] = f"article{suffix}"
    warmup = {}
    for name, scorer in scorers.items():  # first calls build oneDNN kernels, the int8 encoder, ...
        began = time.perf_counter()
        scorer(frame.iloc[:32])
        warmup[name] = round(time.perf_counter() - began, 2)
    _log("warm-up seconds (int8 includes quantising the encoder once): %s", warmup)

    predictions, timings = run_interleaved(scorers, frame, args.slices, args.repeats)
    load_after = os.getloadavg()
    scored = len(frame) * args.repeats
    results: dict[str, Any] = {}
    for name, timing in timings.items():
        wall, cpu = sum(timing["wall"]), sum(timing["cpu"])
        base = timings[same_threads[name]]
        per_slice = [b / w for b, w in zip(base["wall"], timing["wall"])]
        results[name] = {
            "users_per_s": round(scored / wall, 2),
            "wall_s": round(wall, 1),
            "cpu_s": round(cpu, 1),
            "vs_article": round(sum(timings["article"]["wall"]) / wall, 2),
            "vs_same_threads": round(sum(base["wall"]) / wall, 2),
            "vs_same_threads_median_slice": round(statistics.median(per_slice), 2),
            "vs_same_threads_cpu_time": round(sum(base["cpu"]) / cpu, 2) if cpu > 0 else None,
        }
    useful = useful_flops_per_user(model, frame["text"].tolist())
    peak = peak_for(torch.cuda.get_device_name(0)) if args.device == "cuda" else None
    for row in results.values():
        row["useful_tflops"] = round(row["users_per_s"] * useful / 1e12, 2)
        row["share_of_bf16_peak"] = round(row["useful_tflops"] / peak, 4) if peak else None
    agree = {}
    for threads in settings:
        suffix = "" if threads is None else f"@{threads}t"
        reference_name = f"ours-fp32{suffix}" if f"ours-fp32{suffix}" in predictions else f"article{suffix}"
        if reference_name.startswith("ours-fp32"):
            agree[f"{reference_name} vs article"] = agreement(predictions["article"], predictions[reference_name])
        for precision in precisions:
            name = f"ours-{precision}{suffix}"
            if name != reference_name:
                agree[f"{name} vs {reference_name}"] = agreement(predictions[reference_name], predictions[name])
        for name in (f"ort-fp32{suffix}", f"ort-int8{suffix}"):
            if name in predictions:
                agree[f"{name} vs {reference_name}"] = agreement(predictions[reference_name], predictions[name])
    shutil.rmtree(onnx_dir, ignore_errors=True)

    machine = {
        "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(), "cores_available": available_cores(),
        "torch_default_threads": default_threads, "device": args.device,
        "cuda": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
        "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in load_after],
    }
    report = {
        "users": len(frame), "repeats": args.repeats, "slices": args.slices, "tokens": tokens,
        "model": "fine-tuned" if args.finetune else "head-only",
        "article": {"batch_size": args.article_batch_size, "max_length": args.article_max_length},
        "ours": {"batch_size": args.batch_size, "precisions": precisions}, "threads": settings, "warmup_s": warmup,
        "results": results, "agreement": agree, "machine": machine,
        "total_s": round(time.perf_counter() - started, 1), "target_speedup": TARGET_SPEEDUP,
    }

    print(f"\nscore throughput: {len(frame)} users x {args.repeats} repeat(s), {args.slices} slices, "
          f"device {args.device}, {machine['cores_available']} cores, torch default threads {default_threads}, "
          f"load {machine['loadavg_before'][0]} -> {machine['loadavg_after'][0]}")
    print(f"tokens per user: mean {tokens['mean']}, p50 {tokens['p50']:.0f}, p90 {tokens['p90']:.0f}, "
          f"max {tokens['max']} (article pads all to {args.article_max_length})")
    print(f"{'scorer':<14} {'users/s':>8} {'wall s':>7} {'cpu s':>7} {'x article':>10} "
          f"{'x same-threads article: total':>30} {'median':>7} {'cpu':>6}")
    for name, row in results.items():
        print(f"{name:<14} {row['users_per_s']:>8.2f} {row['wall_s']:>7.1f} {row['cpu_s']:>7.1f} "
              f"{row['vs_article']:>9.2f}x {row['vs_same_threads']:>29.2f}x "
              f"{row['vs_same_threads_median_slice']:>6.2f}x {row['vs_same_threads_cpu_time'] or 0:>5.2f}x")
    print(f"useful work {useful / 1e9:.2f} GFLOP per user (encoder forward at each user's own token count)"
          + (f"; card bf16 peak {peak:.0f} TFLOP/s" if peak else ""))
    for name, row in results.items():
        share = f", {100 * row['share_of_bf16_peak']:.1f}% of bf16 peak" if row["share_of_bf16_peak"] is not None else ""
        print(f"  {name:<14} {row['useful_tflops']:>8.2f} useful TFLOP/s{share}")
    for label, row in agree.items():
        print(f"{label}: Spearman {row['spearman']:.6f}, |diff| / mean score: max {row['max_diff_of_mean']:.2e}, "
              f"median {row['median_diff_of_mean']:.2e}; top-10% overlap {row['top10_overlap']:.3f}")
    ours = {name: row for name, row in results.items() if name.startswith("ours-")}  # the product's scorer only
    best = max(ours, key=lambda name: ours[name]["vs_article"], default=None)
    if best is not None:
        row = ours[best]
        verdict = "met" if row["vs_article"] >= TARGET_SPEEDUP else "NOT met"
        print(f"best: {best} {row['vs_article']:.2f}x the article scorer as written, "
              f"{row['vs_same_threads']:.2f}x it at the same threads (target {TARGET_SPEEDUP:.0f}x: {verdict})")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        _log("wrote %s", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
