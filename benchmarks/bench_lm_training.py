"""Tokens/s of our LM training step beside a bare Hugging Face loop, same model and batch, one run.

Ours: ``workbench.lm_training`` (bf16 autocast, optionally ``torch.compile``). Bare: the textbook
fp32 loop (forward with labels, backward, AdamW step). Writes ``results/bench_lm_training.json``.
Run: ``.venv/bin/python benchmarks/bench_lm_training.py [--steps 20]``.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from workbench.datasets import WorldConfig, synthesize
from workbench.lm_training import LMTrainConfig, make_optimizer, new_model, token_stream
from workbench.results import write_benchmark
from workbench.tokenizer import build_tokenizer


def time_steps(step, batches, warmup: int) -> float:
    for b in batches[:warmup]:
        step(b)
    start = time.perf_counter()
    for b in batches[warmup:]:
        step(b)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()

    world = synthesize(WorldConfig.for_scale("full"))
    tokenizer = build_tokenizer(world.all_texts())
    results = {"machine": {"platform": platform.platform(), "threads": torch.get_num_threads(),
                           "torch": torch.__version__}, "runs": {}}
    base = LMTrainConfig.for_scale("full")
    data = torch.from_numpy(token_stream(world, tokenizer, base)).long()
    n = args.steps + args.warmup
    batches = [data[i * base.batch_size:(i + 1) * base.batch_size] for i in range(n)]
    tokens_timed = args.steps * base.batch_size * base.seq_len

    def bare_loop() -> float:
        model = new_model(base, tokenizer)
        opt = torch.optim.AdamW(model.parameters(), lr=base.lr)

        def step(b):
            loss = model(b, labels=b).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
        return time_steps(step, batches, args.warmup)

    def ours(bf16: bool, compile: bool) -> float:
        cfg = LMTrainConfig(bf16=bf16, compile=compile)
        model = new_model(cfg, tokenizer)
        opt = make_optimizer(model, cfg)
        fwd = torch.compile(model) if compile else model

        def step(b):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = fwd(b, labels=b).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
        return time_steps(step, batches, args.warmup)

    for name, fn in [("bare_hf_fp32", bare_loop), ("ours_fp32", lambda: ours(False, False)),
                     ("ours_bf16", lambda: ours(True, False)), ("ours_bf16_compiled", lambda: ours(True, True))]:
        seconds = fn()
        results["runs"][name] = {"tokens_per_s": tokens_timed / seconds, "seconds": seconds}
        print(f"{name:>20}: {tokens_timed / seconds:8.0f} tokens/s")
    bare = results["runs"]["bare_hf_fp32"]["tokens_per_s"]
    results["speedup_vs_bare"] = {k: v["tokens_per_s"] / bare for k, v in results["runs"].items()}
    results["config"] = {"batch_size": base.batch_size, "seq_len": base.seq_len, "d_model": base.d_model,
                         "n_layer": base.n_layer, "steps_timed": args.steps}
    print("wrote", write_benchmark("lm_training", results))


if __name__ == "__main__":
    main()
