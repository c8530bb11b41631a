"""Activations/s of ``train_dictionary`` and tokens/s of ``cache_to_shards`` on 1 and 2 gloo processes (CPU).

Training: a standard SAE (``--d-in`` x ``--expansion``) on fixed Gaussian batches of the same global batch
(``--batch``) at every world size, each rank taking its ``batch / N`` rows (see
``workbench/dictionaries/distributed.py``); a step's time is the gap between two batch requests on rank 0, the
first ``--warmup`` steps are left out and ``--steps`` steps are timed. Caching: the embedded model
(``workbench.load_model()``) over ``--sequences`` random token sequences of ``--pos`` tokens (BOS first), each
rank caching its block into one shared store; timed on rank 0 from a barrier before to a barrier after (model
loading and one untimed warm-up batch left out). Every measurement spawns its processes afresh
(``torch.multiprocessing.spawn``), world sizes alternate within each of ``--repeats`` repeats, and each reports
the median rate with its min and max. Each process uses ``cores // N`` threads (``--threads`` overrides), so
1 and 2 processes use the same cores.

On this machine (2 cores) the two processes share the cores the single process uses alone, so the numbers show
the overhead of the all-reduce and of the process split, not scaling; on GPUs (NCCL, one process per GPU) or
several nodes the same code divides the work (see the README's "Scaling up").

Writes ``results/bench_distributed.json`` (``--quick``: a tiny smoke run written to a temporary folder).
Run: ``.venv/bin/python benchmarks/bench_distributed.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from timed_source import TimedSource  # noqa: E402  (benchmarks/timed_source.py)

from workbench.dictionaries import make_training_sae  # noqa: E402
from workbench.dictionaries.training import DictionaryTrainConfig, train_dictionary  # noqa: E402
from workbench.results import write_benchmark  # noqa: E402

NOTE = "2 cores: two processes share the cores, so this cannot show scaling"
WORLD_SIZES = (1, 2)


def _threads(args: dict, world_size: int) -> int:
    return args["threads"] or max(1, (os.cpu_count() or 1) // world_size)


def _init(rank: int, world_size: int, tmp: Path, args: dict) -> None:
    torch.set_num_threads(_threads(args, world_size))
    dist.init_process_group("gloo", init_method=f"file://{tmp}/pg", rank=rank, world_size=world_size)


def _train_worker(rank: int, world_size: int, tmp: Path, args: dict) -> None:
    _init(rank, world_size, tmp, args)
    try:
        gen = torch.Generator().manual_seed(0)
        batches = [torch.randn(args["batch"], args["d_in"], generator=gen) for _ in range(4)]
        torch.manual_seed(0)
        sae = make_training_sae("standard", args["d_in"], args["d_in"] * args["expansion"], l1_coefficient=1.0)
        n_steps = args["warmup"] + args["steps"] + 1
        cfg = DictionaryTrainConfig(n_steps=n_steps, batch_size=args["batch"], lr=1e-5, lr_decay_fraction=0.0,
                                    log_every=10**9, checkpoint_every=10**9, normalize_activations=False)
        source = TimedSource(batches)
        train_dictionary(sae, source, cfg, progress=False)
        if rank == 0:
            t = source.times
            rate = args["steps"] * args["batch"] / (t[args["warmup"] + args["steps"]] - t[args["warmup"]])
            (tmp / "rate.json").write_text(json.dumps(rate))
    finally:
        dist.destroy_process_group()


def _cache_worker(rank: int, world_size: int, tmp: Path, args: dict) -> None:
    from workbench import load_model
    from workbench.dictionaries.store import cache_to_shards

    _init(rank, world_size, tmp, args)
    try:
        model = load_model(device="cpu")
        gen = torch.Generator().manual_seed(0)
        tokens = torch.randint(1, model.cfg.d_vocab, (args["sequences"], args["pos"]), generator=gen)
        bos = model.tokenizer.bos_token_id if model.tokenizer.bos_token_id is not None else 0
        tokens[:, 0] = bos
        hook = args["hook"]
        # warm-up: one untimed batch per rank
        cache_to_shards(model, tokens[:args["cache_batch"] * world_size], [hook], tmp / "warmup",
                        batch_size=args["cache_batch"], progress=False)
        dist.barrier()
        start = time.perf_counter()
        cache_to_shards(model, tokens, [hook], tmp / "store", batch_size=args["cache_batch"], progress=False)
        dist.barrier()
        if rank == 0:
            (tmp / "rate.json").write_text(json.dumps(tokens.numel() / (time.perf_counter() - start)))
    finally:
        dist.destroy_process_group()


def measure(worker, world_size: int, args: dict) -> float:
    tmp = Path(tempfile.mkdtemp(prefix="bench-dist-"))
    try:
        mp.spawn(worker, args=(world_size, tmp, args), nprocs=world_size, join=True)
        return json.loads((tmp / "rate.json").read_text())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def summarise(rates: dict[int, list[float]], unit: str) -> dict:
    out: dict = {}
    for n, values in rates.items():
        out[f"{n}_proc_{unit}"] = statistics.median(values)
        out[f"{n}_proc_{unit}_min"] = min(values)
        out[f"{n}_proc_{unit}_max"] = max(values)
        out[f"{n}_proc_{unit}_runs"] = values
    out["2_vs_1"] = out[f"2_proc_{unit}"] / out[f"1_proc_{unit}"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--d-in", type=int, default=256)
    parser.add_argument("--expansion", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4096, help="global batch, the same at every world size")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=3, help="steps of every run left out of its time")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sequences", type=int, default=256, help="sequences cached per run")
    parser.add_argument("--pos", type=int, default=128, help="tokens per cached sequence (BOS first)")
    parser.add_argument("--cache-batch", type=int, default=32, help="sequences per forward pass when caching")
    parser.add_argument("--hook", default="blocks.2.hook_resid_post", help="hook cached")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per process (0: cores // N)")
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run written to a temporary folder")
    parser.add_argument("--out", help="folder for the JSON (default: results/; --quick: a temporary folder)")
    ns = parser.parse_args()
    if ns.quick:
        ns.d_in, ns.expansion, ns.batch, ns.steps, ns.warmup, ns.repeats = 32, 4, 64, 3, 1, 1
        ns.sequences, ns.pos, ns.cache_batch = 8, 16, 2
    args = vars(ns)
    train: dict[int, list[float]] = {n: [] for n in WORLD_SIZES}
    cache: dict[int, list[float]] = {n: [] for n in WORLD_SIZES}
    for rep in range(ns.repeats):
        order = WORLD_SIZES if rep % 2 == 0 else WORLD_SIZES[::-1]  # alternate which world size runs first
        for n in order:
            train[n].append(measure(_train_worker, n, args))
            print(f"repeat {rep}: train, {n} process(es): {train[n][-1]:.0f} activations/s", flush=True)
        for n in order:
            cache[n].append(measure(_cache_worker, n, args))
            print(f"repeat {rep}: cache, {n} process(es): {cache[n][-1]:.0f} tokens/s", flush=True)
    settings = {k: v for k, v in args.items() if k not in ("out",)}
    payload = {
        "note": NOTE,
        "machine": {"platform": platform.platform(), "cores": os.cpu_count(), "torch": torch.__version__,
                    "threads_per_process": {str(n): _threads(args, n) for n in WORLD_SIZES}},
        "backend": "gloo", "settings": settings,
        "train_dictionary": {"architecture": "standard", "d_in": ns.d_in, "d_sae": ns.d_in * ns.expansion,
                             "global_batch": ns.batch, **summarise(train, "acts_per_s")},
        "cache_to_shards": {"model": "embedded", "hook": ns.hook, "sequences": ns.sequences, "pos": ns.pos,
                            "tokens": ns.sequences * ns.pos, **summarise(cache, "tokens_per_s")},
    }
    directory = ns.out or (tempfile.mkdtemp(prefix="bench-quick-") if ns.quick else None)
    print(json.dumps({k: payload[k] for k in ("train_dictionary", "cache_to_shards")}, indent=1))
    print("wrote", write_benchmark("distributed", payload, directory))


if __name__ == "__main__":
    main()
