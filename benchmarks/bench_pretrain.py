"""Pretraining speed: tokens/s, MFU, data-wait share and peak memory, bucketed vs padded.

For each model (Atacformer replaced-token detection, the masked-bin model) and preset,
two runs of :func:`atacformer.train.pretrain` on the same real cells, each in a fresh
subprocess:

- ``bucket``: this package's batching (cells sorted by length within windows of batches,
  so padding is not computed);
- ``padded``: random batches padded to their longest cell, what a Hugging Face ``Trainer``
  with ``DataCollatorWithPadding`` computes; the baseline of the "2x faster per token"
  target. Same model, precision and everything else.

Reported per run, over the steps after a warm-up (first 25 %): real (non-padding) tokens/s,
padding fraction, share of step time spent waiting for data, model FLOPs utilisation, peak
memory. MFU counts useful FLOPs only (real tokens): 6 x (matmul parameters) per token, plus
bidirectional attention 12 x layers x d x T per token of a T-token sentence, plus the
masked-bin decoder (3-state MLP over every bin of every cell) and its per-step bin part;
it is divided by the device's peak: bf16 dense 989 TFLOP/s on an H100/H200 SXM (756 on an
H100 PCIe), and on a CPU the fp32 matmul throughput measured here (so CPU MFU reads "share
of what this CPU's GEMM reaches").

On CUDA the presets are ``base`` (bf16 autocast; targets: MFU >= 40 % on an H100, bucketed
>= 2x the padded baseline per token); on CPU ``debug`` and ``small`` (fp32, one torch thread
and one data-loader worker per run by default: on a small shared machine more threads only
contend). Default data: the Schep 2017 cells (116 to 4,665 peaks per cell), whose spread of
lengths is what padding wastes compute on.

Usage::

    python benchmarks/bench_pretrain.py [--data X.h5ad] [--presets debug small] [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data" / "schep2017_celllines_atacCoGAPS" / "schep2017_celllines_600.h5ad"
MODELS = ("atacformer", "masked-bin")


# -- FLOPs -----------------------------------------------------------------------------------
def matmul_params(model) -> int:
    """Parameters of the Linear layers applied to every token (encoder, token head, E2)."""
    from torch import nn

    skip = {id(m) for name, m in model.named_modules()
            if name.startswith(("decoder", "organ_head", "cell_type_head", "cross_blocks"))}
    return sum(m.weight.numel() for m in model.modules()
               if isinstance(m, nn.Linear) and id(m) not in skip)


def step_flops(model, lengths: np.ndarray) -> tuple[float, float]:
    """``(flops per real token, flops per cell)`` for training (forward + backward = 3x
    forward), averaged over cells with sentence lengths ``lengths``."""
    c = model.config
    tokens_mean_t = float((lengths.astype(np.float64) ** 2).sum() / max(lengths.sum(), 1))
    per_token = 6.0 * matmul_params(model) + 12.0 * c.num_layers * c.hidden_size * tokens_mean_t
    per_cell = 0.0
    if hasattr(c, "n_bins") and hasattr(model, "decoder"):
        h = c.decoder_hidden_size
        pairs = c.n_bins if not c.closed_bin_sampling else 2.0 * float(lengths.mean())
        per_cell = 6.0 * pairs * (h * 3 + 2 * h)  # broadcast add, GELU-ish, output layer
    return per_token, per_cell


def peak_flops(device: str) -> tuple[float, str]:
    """The device's peak: a bf16 spec on known GPUs, a measured fp32 GEMM on CPU (best of 5)."""
    import torch

    if device.startswith("cuda"):
        name = torch.cuda.get_device_name()
        if "H100" in name and "PCIe" in name:
            return 756e12, f"{name} (bf16 dense spec)"
        if "H100" in name or "H200" in name:
            return 989e12, f"{name} (bf16 dense spec)"
        if "A100" in name:
            return 312e12, f"{name} (bf16 dense spec)"
        return float("nan"), name
    a = torch.randn(2048, 2048)
    b = torch.randn(2048, 2048)
    a @ b
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * 2048 ** 3 / best, f"CPU fp32 GEMM measured, {torch.get_num_threads()} thread(s)"


# -- one case (in a subprocess) --------------------------------------------------------------
def run_case(case: dict) -> dict:
    import torch

    from atacformer.train import TrainConfig, pretrain
    from atacformer.train.build import build_model, model_inputs
    from atacformer.train.collate import make_batcher
    from atacformer.train.data import prepare_corpora
    from atacformer.train.tracking import read_metrics

    if case.get("threads"):
        torch.set_num_threads(case["threads"])
    cfg = TrainConfig(**case["config"])
    summary = pretrain(cfg)
    rows = read_metrics(Path(cfg.out) / "metrics.csv")
    warm = rows[len(rows) // 4]
    last = rows[-1]
    dt = last["elapsed_s"] - warm["elapsed_s"]
    tokens = last["tokens_seen"] - warm["tokens_seen"]
    step_times = [r2["elapsed_s"] - r1["elapsed_s"] for r1, r2 in zip(rows[len(rows) // 4:], rows[len(rows) // 4 + 1:])]
    waits = [r["data_wait"] for r in rows[len(rows) // 4 + 1:]]
    corpus = prepare_corpora(cfg.data, cfg.out, build=False)
    resolved = cfg.resolved()
    mi = model_inputs(resolved, corpus)
    model = build_model(resolved, mi)
    lengths = make_batcher(model, cfg.context, cfg.order).effective_lengths(corpus.lengths())
    lengths = lengths[lengths > 0]
    per_token, per_cell = step_flops(model, lengths)
    cells_per_s = (last["step"] - warm["step"]) * resolved.batch_size / max(dt, 1e-9)
    tokens_per_s = tokens / max(dt, 1e-9)
    achieved = tokens_per_s * per_token + cells_per_s * per_cell
    peak, peak_name = case["peak"] if case.get("peak") else peak_flops(summary["device"])
    if summary["device"].startswith("cuda"):
        mem = torch.cuda.max_memory_allocated() / 2**30
    else:
        mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {**{k: case[k] for k in ("model", "preset", "batching")}, "tokens_per_s": round(tokens_per_s),
            "padding": round(summary["padding"], 4),
            "data_wait": round(float(np.average(waits, weights=step_times)) if waits else 0.0, 4),
            "step_s": round(dt / max(last["step"] - warm["step"], 1), 4), "tflops": round(achieved / 1e12, 4),
            "mfu": round(achieved / peak, 4), "peak": peak_name, "peak_mem_gib": round(mem, 3),
            "device": summary["device"], "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(DATA), help="training .h5ad (default: Schep 2017, 600 cells, "
                    "116-4,665 peaks per cell)")
    ap.add_argument("--presets", nargs="+", help="default: base on CUDA, debug and small on CPU")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--steps", type=int, help="steps per run (default 40 on CUDA / debug, 8 for CPU small)")
    ap.add_argument("--batch-size", type=int, help="cells per step (default 32 on CUDA, 16 debug, 8 small)")
    ap.add_argument("--num-workers", type=int, help="data-loader workers (default 4 on CUDA, 1 on CPU)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the blocks")
    ap.add_argument("--threads", type=int, help="torch threads per run on CPU (default 1: on a small shared "
                    "machine OpenMP threads compete with each other and the data worker)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "pretrain"))
    ap.add_argument("--case", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        print("RESULT " + json.dumps(run_case(json.loads(args.case))))
        return 0
    if not Path(args.data).exists():
        raise SystemExit(f"{args.data} is absent (../shared/data); pass --data")
    import torch

    cuda = torch.cuda.is_available()
    presets = args.presets or (["base"] if cuda else ["debug", "small"])
    threads = None if cuda else (args.threads or 1)
    if threads:
        torch.set_num_threads(threads)
    peak = None if cuda else peak_flops("cpu")  # once, with the runs' thread count
    out = Path(args.out)
    results = []
    for model in args.models:
        for preset in presets:
            for batching in ("bucket", "padded"):
                small_cpu = preset != "debug" and not cuda
                config = dict(
                    model=model, preset=preset, data=[args.data], out=str(out / f"{model}-{preset}-{batching}"),
                    batching=batching, max_steps=args.steps or (8 if small_cpu else 40),
                    batch_size=args.batch_size or (32 if cuda else (8 if small_cpu else 16)),
                    num_workers=args.num_workers if args.num_workers is not None else (4 if cuda else 1),
                    save_every=10**9, progress=False, tensorboard=False, compile=args.compile, warmup_steps=5,
                    overwrite=True, recipe="rtd" if model == "atacformer" else None)
                case = {"model": model, "preset": preset, "batching": batching, "config": config,
                        "threads": threads, "peak": peak}
                env = dict(os.environ, PYTHONUNBUFFERED="1", **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
                proc = subprocess.run([sys.executable, __file__, "--case", json.dumps(case)], capture_output=True,
                                      text=True, env=env)
                line = [s for s in proc.stdout.splitlines() if s.startswith("RESULT ")]
                if proc.returncode or not line:
                    raise SystemExit(f"case {case['model']}/{preset}/{batching} failed:\n{proc.stderr[-4000:]}")
                r = json.loads(line[0][7:])
                results.append(r)
                print(json.dumps(r), flush=True)
    for r in results:
        if r["batching"] == "bucket":
            base = next(x for x in results if x["batching"] == "padded" and x["model"] == r["model"]
                        and x["preset"] == r["preset"])
            r["speedup_vs_padded"] = round(r["tokens_per_s"] / base["tokens_per_s"], 2)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_pretrain.json").write_text(json.dumps(results, indent=2))
    cols = ["model", "preset", "batching", "tokens_per_s", "speedup_vs_padded", "padding", "data_wait", "step_s",
            "mfu", "peak_mem_gib", "device"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in results:
        print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
