"""Activations/s of our dictionary loop, SAELens's SAETrainer and a plain PyTorch step, in one run.

Same activations, same architecture, same batch, for d_in in {128, 512, 768} and expansion in {8, 32}:
- ``standard`` (ReLU + L1): plain step, ours, SAELens, each in fp32 and with bf16 autocast (ours:
  ``DictionaryTrainConfig(bf16=True)``; SAELens: ``SAETrainerConfig(autocast=True)``);
- ``topk`` (k = 32, fp32): plain dense step, SAELens with its ``topk``, ours with the same ``topk`` class, and
  ours with ``topk_sparse`` (the same maths with a sparse decoder and backward; see
  ``workbench/dictionaries/sparse_topk.py``).
Achieved GFLOP/s count the dense step's six ``batch x d_in x d_sae`` matmuls (so a sparse step's figure is
dense-equivalent), beside this machine's own dense fp32 matmul rate on the same shapes, measured in the same
run; peak memory; the share of a step our loop spends checking the batch and loss are finite. Writes
``results/bench_dictionary_training.json``.
Run: ``.venv/bin/python benchmarks/bench_dictionary_training.py [--steps 6] [--quick]``.
"""

from __future__ import annotations

import argparse
import platform
import resource
import time
from collections.abc import Callable

import torch
from sae_lens.config import SAETrainerConfig
from sae_lens.training.sae_trainer import SAETrainer

from workbench.dictionaries import make_training_sae
from workbench.dictionaries.training import (
    ActivationBatch,
    DictionaryTrainConfig,
    TensorSource,
    nonfinite_probe,
    train_dictionary,
)
from workbench.results import write_benchmark

BATCH = 4096
TOPK = 32
SETTINGS = {"standard": {"l1_coefficient": 1.0}, "topk": {"k": TOPK}, "topk_sparse": {"k": TOPK}}


def matmul_gflops(d_in: int, d_sae: int, reps: int = 10) -> float:
    """This machine's fp32 rate on the SAE's own matmul shapes (encoder and decoder)."""
    a, w = torch.randn(BATCH, d_in), torch.randn(d_in, d_sae)
    torch.mm(a, w)
    start = time.perf_counter()
    for _ in range(reps):
        torch.mm(torch.mm(a, w), w.T)
    return reps * 4 * BATCH * d_in * d_sae / (time.perf_counter() - start) / 1e9


def plain_step_rate(acts: torch.Tensor, d_sae: int, steps: int, architecture: str) -> float:
    """The same maths as SAELens's standard or topk SAE, written as a bare loop."""
    d_in = acts.shape[1]
    W_enc = torch.randn(d_in, d_sae).mul_(0.01).requires_grad_()
    W_dec = torch.randn(d_sae, d_in).mul_(0.01).requires_grad_()
    b_enc = torch.zeros(d_sae, requires_grad=True)
    b_dec = torch.zeros(d_in, requires_grad=True)
    opt = torch.optim.Adam([W_enc, W_dec, b_enc, b_dec], lr=3e-4)
    batches = [acts[i * BATCH % len(acts):][:BATCH] for i in range(steps + 2)]

    def step(x):
        pre = (x - b_dec) @ W_enc + b_enc
        if architecture == "standard":
            f = torch.relu(pre)
            penalty = (f * W_dec.norm(dim=1)).sum(-1).mean()
        else:
            vals, idx = pre.topk(TOPK, dim=-1, sorted=False)
            f = torch.zeros_like(pre).scatter(-1, idx, vals.relu())
            penalty = 0.0
        x_hat = f @ W_dec + b_dec
        loss = (x_hat - x).pow(2).sum(-1).mean() + penalty
        loss.backward()
        opt.step()
        opt.zero_grad()

    for x in batches[:2]:
        step(x)
    start = time.perf_counter()
    for x in batches[2:]:
        step(x)
    return steps * BATCH / (time.perf_counter() - start)


def finite_check_ms(acts: torch.Tensor, reps: int = 50) -> float:
    """Milliseconds per step of the loop's non-finite check (batch probe plus loss, one host sync)."""
    batch, loss = ActivationBatch(acts[:BATCH]), torch.tensor(1.0)
    torch.isfinite(loss + nonfinite_probe(batch))
    start = time.perf_counter()
    for _ in range(reps):
        bool(torch.isfinite(loss + nonfinite_probe(batch)))
    return (time.perf_counter() - start) / reps * 1e3


def ours_rate(acts: torch.Tensor, d_sae: int, steps: int, architecture: str, bf16: bool = False) -> float:
    cfg = DictionaryTrainConfig(n_steps=steps + 2, batch_size=BATCH, log_every=10**9, lr_decay_fraction=0.0, bf16=bf16)
    sae = make_training_sae(architecture, d_in=acts.shape[1], d_sae=d_sae, **SETTINGS[architecture])
    return train_dictionary(sae, TensorSource(acts), cfg, progress=False).activations_per_s


def sae_lens_rate(acts: torch.Tensor, d_sae: int, steps: int, architecture: str, bf16: bool = False) -> float:
    sae = make_training_sae(architecture, d_in=acts.shape[1], d_sae=d_sae, **SETTINGS[architecture])
    cfg = SAETrainerConfig(total_training_samples=(steps + 2) * BATCH, train_batch_size_samples=BATCH, lr_end=3e-4,
                           n_batches_for_norm_estimate=1, autocast=bf16)

    def provider():
        i = 0
        while True:
            yield acts[i * BATCH % len(acts):][:BATCH]
            i += 1

    trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=provider())
    start = time.perf_counter()
    trainer.fit()
    return (steps + 2) * BATCH / (time.perf_counter() - start)


LOOPS: dict[str, list[tuple[str, Callable[[torch.Tensor, int, int], float]]]] = {
    "standard": [
        ("plain", lambda a, d, s: plain_step_rate(a, d, s, "standard")),
        ("ours", lambda a, d, s: ours_rate(a, d, s, "standard")),
        ("sae_lens", lambda a, d, s: sae_lens_rate(a, d, s, "standard")),
        ("ours_bf16", lambda a, d, s: ours_rate(a, d, s, "standard", bf16=True)),
        ("sae_lens_bf16", lambda a, d, s: sae_lens_rate(a, d, s, "standard", bf16=True)),
    ],
    "topk": [
        ("plain", lambda a, d, s: plain_step_rate(a, d, s, "topk")),
        ("ours_dense", lambda a, d, s: ours_rate(a, d, s, "topk")),
        ("ours", lambda a, d, s: ours_rate(a, d, s, "topk_sparse")),
        ("sae_lens", lambda a, d, s: sae_lens_rate(a, d, s, "topk")),
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--quick", action="store_true", help="only d_in 128 x 8")
    parser.add_argument("--architectures", nargs="+", default=list(LOOPS), choices=list(LOOPS))
    args = parser.parse_args()
    shapes = [(128, 8)] if args.quick else [(d, e) for d in (128, 512, 768) for e in (8, 32)]
    out = {"machine": {"platform": platform.platform(), "threads": torch.get_num_threads(), "torch": torch.__version__},
           "batch_size": BATCH, "topk_k": TOPK, "steps": args.steps, "runs": []}
    for architecture in args.architectures:
        for d_in, expansion in shapes:
            d_sae = d_in * expansion
            acts = torch.randn(8 * BATCH, d_in)
            flops_per_act = 12 * d_in * d_sae  # the dense step: forward (2 matmuls) + backward (4), 2 FLOPs per MAC
            row = {"architecture": architecture, "d_in": d_in, "expansion": expansion,
                   "matmul_gflops": matmul_gflops(d_in, d_sae)}
            for name, fn in LOOPS[architecture]:
                rate = fn(acts, d_sae, args.steps)
                row[f"{name}_acts_per_s"] = rate
                row[f"{name}_gflops"] = rate * flops_per_act / 1e9
            row["ours_vs_sae_lens"] = row["ours_acts_per_s"] / row["sae_lens_acts_per_s"]
            row["ours_vs_plain"] = row["ours_acts_per_s"] / row["plain_acts_per_s"]
            row["ours_share_of_matmul_rate"] = row["ours_gflops"] / row["matmul_gflops"]
            row["finite_check_share_of_step"] = finite_check_ms(acts) / 1e3 / (BATCH / row["ours_acts_per_s"])
            if architecture == "standard":
                row["ours_bf16_vs_sae_lens_fp32"] = row["ours_bf16_acts_per_s"] / row["sae_lens_acts_per_s"]
                row["ours_bf16_vs_sae_lens_bf16"] = row["ours_bf16_acts_per_s"] / row["sae_lens_bf16_acts_per_s"]
            out["runs"].append(row)
            print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("wrote", write_benchmark("dictionary_training", out))


if __name__ == "__main__":
    main()
