"""Activations/s of our dictionary loop against SAELens's ``SAETrainer``, per architecture, at realistic sparsity.

For each shape (d_in x expansion) and architecture family, the loops of one row run on the same batches from
the same initial weights: SAELens's ``SAETrainer.fit`` on the dense class (``sae_lens``; for ``standard_tied``
and ``gated_paper``, which SAELens lacks, our dense class in SAELens's trainer), our ``train_dictionary`` on the
dense class (``ours_dense``) and on its sparse twin (``ours_sparse``: ``*_sparse``, see
``workbench/dictionaries/sparse_relu.py`` and ``sparse_topk.py``); for TopK also SAELens's
``use_sparse_activations=True`` (``sae_lens_sparse_acts``; a failure is recorded as text in the row); with
extras, a bare PyTorch step (``plain``) and bf16 autocast loops for the standard SAE.

Fairness: every loop runs as a whole (its own batch fetch, step, optimiser, bookkeeping); a step's time is the
gap between two batch requests, so the first ``--warmup`` steps of every run are left out; each run times
``--steps`` steps; a row's loops are interleaved (rotating order) and run ``--repeats`` times from the same
weights, and each loop reports the median rate with its min and max. ReLU-family gate biases are set so each
feature fires on ``L0 / d_sae`` of the rows (L0 ~ 32 of 24576 at 768 x 32, as after the L1 warm-up), not
left at the dense start; the measured L0 of each loop (after its last run) is in the row. SAELens's trainer runs
as it ships (PyTorch's default Adam; ours uses the fused one). Times are wall-clock: run on an otherwise idle
machine (a process paused meanwhile, e.g. by ``runs/cpu_guard.sh``, would count the pause).

FLOPs: ``*_gflops`` counts what a loop's step performs (a dense step its matmuls; a sparse step its one dense
encoder matmul plus its sparse products at the measured L0), so ``*_share_of_matmul_rate`` (against this
machine's dense fp32 matmul rate on the same shapes, measured in the run) stays below 1 for every loop.
``*_dense_equivalent_gflops`` of a sparse loop is the rate a dense step would need to match it (labelled as
such, not a measured FLOP rate). Aims are recorded in the JSON and never asserted.

Writes ``results/bench_dictionary_training.json`` (``--quick``: a tiny smoke run written to a temporary folder).
``--crossover`` measures instead where the sparse step's forward + backward stops beating the dense one
(``results/bench_dictionary_sparse_crossover.json``); ``sparse_relu.SPARSE_STEP_BELOW`` and
``GATED_SPARSE_STEP_BELOW`` are set from it.
Run: ``.venv/bin/python benchmarks/bench_dictionary_training.py [--quick] [--crossover] [--extras] [--shapes 768x32]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

os.environ.setdefault("TQDM_DISABLE", "1")  # SAETrainer's bar

import torch  # noqa: E402
from sae_lens.config import SAETrainerConfig  # noqa: E402
from sae_lens.saes.sae import TrainingSAE, TrainStepInput  # noqa: E402
from sae_lens.training.sae_trainer import SAETrainer  # noqa: E402
from timed_source import TimedSource  # noqa: E402  (benchmarks/timed_source.py)

from workbench.dictionaries import make_training_sae  # noqa: E402
from workbench.dictionaries.training import (  # noqa: E402
    ActivationBatch,
    DictionaryTrainConfig,
    nonfinite_probe,
    train_dictionary,
)
from workbench.results import write_benchmark  # noqa: E402

TOPK = 32
L0 = 32
"""Active codes per token the ReLU-family gate biases are set to (TopK's k is the same)."""
LR = 1e-5
"""Small, so the codes stay near ``L0`` through the timed steps (at 3e-4 a standard SAE at 768 x 32 drifted from L0
32 to ~1000 within 23 steps on Gaussian batches, and the row measured a denser step than the aims ask about); a
step costs the same at any learning rate."""

FAMILIES = ("standard", "standard_tied", "gated", "gated_paper", "topk")
SPARSE_TWIN = {"standard": "standard_sparse", "standard_tied": "standard_tied_sparse", "gated": "gated_sparse",
               "gated_paper": "gated_paper_sparse", "topk": "topk_sparse"}
SETTINGS = {"standard": {"l1_coefficient": 1.0}, "standard_tied": {"l1_coefficient": 1.0},
            "gated": {"l1_coefficient": 1.0}, "gated_paper": {"l1_coefficient": 1.0}, "topk": {"k": TOPK}}
DENSE_MATMULS = {"standard": 6, "standard_tied": 6, "gated": 13, "gated_paper": 8, "topk": 6}
"""``batch x d_in x d_sae`` products in a dense step: forward and the backward of each that needs one (SAELens's
gated: gate, magnitude and again the gate for the auxiliary term, two decodes; the gate's Heaviside passes no
gradient; ours: one shared projection and a frozen auxiliary decoder)."""
SPARSE_PRODUCTS = {"standard": 4, "standard_tied": 4, "gated": 7, "gated_paper": 6, "topk": 4}
"""``nnz x d_in`` products in a sparse step beside its one dense encoder matmul: decode, the codes' gradient,
``W_dec``'s and ``W_enc``'s gradients (gated: a second decode with both gradients, the paper's without ``W_dec``'s)."""

AIMS = [
    {"aim": "every architecture's sparse step in our loop >= 2x SAELens's SAETrainer, d_in 768 x 32, L0 <= 64, fp32",
     "ratio": "ours_sparse_vs_sae_lens", "target": 2.0, "families": list(FAMILIES)},
    {"aim": "TopK (topk_sparse in our loop) >= 4x SAELens's dense TopK in SAETrainer on CPU, d_in 768 x 32",
     "ratio": "ours_sparse_vs_sae_lens", "target": 4.0, "families": ["topk"]},
]


@dataclass
class Loop:
    """One way of training, timed as a whole: ``run(sae, batches, n_steps)`` returns each step's start time."""

    name: str
    architecture: str
    run: Callable[[TrainingSAE, list[torch.Tensor], int], dict[int, float]]
    sparse: bool = False
    cfg: dict | None = None


def run_ours(bf16: bool = False) -> Callable:
    def run(sae: TrainingSAE, batches: list[torch.Tensor], n_steps: int) -> dict[int, float]:
        source = TimedSource(batches)
        cfg = DictionaryTrainConfig(n_steps=n_steps, batch_size=len(batches[0]), lr=LR, lr_decay_fraction=0.0,
                                    log_every=10**9, checkpoint_every=10**9, normalize_activations=False, bf16=bf16)
        train_dictionary(sae, source, cfg, progress=False)
        return source.times
    return run


def run_sae_lens(bf16: bool = False) -> Callable:
    def run(sae: TrainingSAE, batches: list[torch.Tensor], n_steps: int) -> dict[int, float]:
        times: dict[int, float] = {}

        def provider() -> Iterator[torch.Tensor]:
            i = 0
            while True:
                times[i] = time.perf_counter()
                yield batches[i % len(batches)]
                i += 1

        batch = len(batches[0])
        cfg = SAETrainerConfig(total_training_samples=n_steps * batch, train_batch_size_samples=batch, lr=LR,
                               lr_end=LR, n_batches_for_norm_estimate=1, autocast=bf16)
        SAETrainer(cfg=cfg, sae=sae, data_provider=provider()).fit()
        return times
    return run


def run_plain(architecture: str) -> Callable:
    """The dense maths of SAELens's standard or topk SAE as a bare step (its weights, its Adam)."""
    def run(sae: TrainingSAE, batches: list[torch.Tensor], n_steps: int) -> dict[int, float]:
        W_enc, W_dec, b_enc, b_dec = (sae.W_enc, sae.W_dec, sae.b_enc, sae.b_dec)
        opt = torch.optim.Adam([W_enc, W_dec, b_enc, b_dec], lr=LR)
        times = {}
        for i in range(n_steps):
            times[i] = time.perf_counter()
            x = batches[i % len(batches)]
            pre = (x - b_dec) @ W_enc + b_enc
            if architecture == "standard":
                f = torch.relu(pre)
                penalty = (f * W_dec.norm(dim=1)).sum(-1).mean()
            else:
                vals, idx = pre.topk(TOPK, dim=-1, sorted=False)
                f = torch.zeros_like(pre).scatter(-1, idx, vals.relu())
                penalty = 0.0
            loss = ((f @ W_dec + b_dec) - x).pow(2).sum(-1).mean() + penalty
            loss.backward()
            opt.step()
            opt.zero_grad()
        return times
    return run


def loops_for(family: str, extras: bool) -> list[Loop]:
    loops = [Loop("sae_lens", family, run_sae_lens()), Loop("ours_dense", family, run_ours()),
             Loop("ours_sparse", SPARSE_TWIN[family], run_ours(), sparse=True)]
    if family == "topk":
        loops.append(Loop("sae_lens_sparse_acts", "topk", run_sae_lens(), cfg={"use_sparse_activations": True}))
    if extras and family in ("standard", "topk"):
        loops.append(Loop("plain", family, run_plain(family)))
    if extras and family == "standard":
        loops += [Loop("sae_lens_bf16", family, run_sae_lens(bf16=True)),
                  Loop("ours_dense_bf16", family, run_ours(bf16=True)),
                  Loop("ours_sparse_bf16", SPARSE_TWIN[family], run_ours(bf16=True), sparse=True)]
    return loops


@torch.no_grad()
def initial_state(family: str, d_in: int, d_sae: int, x: torch.Tensor, l0: int = L0) -> dict[str, torch.Tensor]:
    """Weights every loop of a row starts from: unit-norm decoder rows (as our loop keeps them; SAELens's speed
    does not depend on it) and, for the ReLU family, gate biases at which each feature fires on ``l0 / d_sae``
    of the rows of ``x`` (codes as sparse as after the L1 warm-up; ``x`` = all the batches the loops cycle through:
    a quantile estimated on one small batch fires about twice as often on the next)."""
    torch.manual_seed(0)
    sae = make_training_sae(family, d_in, d_sae, **SETTINGS[family])
    sae.W_dec.div_(sae.W_dec.norm(dim=-1, keepdim=True))
    if family != "topk":
        W = sae.W_dec.T * sae.encoder_scale if family == "standard_tied" else sae.W_enc
        proj = (x - sae.b_dec * sae.cfg.apply_b_dec_to_input) @ W
        bias = sae.b_gate if family.startswith("gated") else sae.b_enc
        bias.copy_(-proj.kthvalue(len(x) - max(1, round(len(x) * l0 / d_sae)), dim=0).values)
    return {k: v.clone() for k, v in sae.state_dict().items()}


@torch.no_grad()
def measured_l0(sae: TrainingSAE, x: torch.Tensor) -> float:
    return (sae.encode(x) != 0).sum(-1).float().mean().item()


def matmul_gflops(d_in: int, d_sae: int, batch: int, reps: int = 3) -> float:
    """This machine's dense fp32 rate on the SAE's own matmul shapes (encoder and decoder), median of ``reps``."""
    a, w = torch.randn(batch, d_in), torch.randn(d_in, d_sae)
    torch.mm(torch.mm(a, w), w.T)
    rates = []
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(torch.mm(a, w), w.T)
        rates.append(4 * batch * d_in * d_sae / (time.perf_counter() - start) / 1e9)
    return statistics.median(rates)


def finite_check_ms(x: torch.Tensor, reps: int = 50) -> float:
    """Milliseconds per step of our loop's non-finite check (batch probe plus loss, one host sync)."""
    batch, loss = ActivationBatch(x), torch.tensor(1.0)
    torch.isfinite(loss + nonfinite_probe(batch))
    start = time.perf_counter()
    for _ in range(reps):
        bool(torch.isfinite(loss + nonfinite_probe(batch)))
    return (time.perf_counter() - start) / reps * 1e3


def bench_row(family: str, d_in: int, expansion: int, batches: list[torch.Tensor], args) -> dict:
    d_sae, batch = d_in * expansion, len(batches[0])
    init = initial_state(family, d_in, d_sae, torch.cat(batches))  # every batch the loops cycle through
    loops = loops_for(family, args.extras)
    rates: dict[str, list[float]] = {loop.name: [] for loop in loops}
    errors: dict[str, str] = {}
    saes: dict[str, TrainingSAE] = {}
    for rep in range(args.repeats):
        for i in range(len(loops)):
            loop = loops[(i + rep) % len(loops)]  # rotate the order: no loop always runs first or after another
            if loop.name in errors:
                continue
            sae = make_training_sae(loop.architecture, d_in, d_sae, **SETTINGS[family], **(loop.cfg or {}))
            sae.load_state_dict(init)
            try:
                times = loop.run(sae, batches, args.warmup + args.steps + 1)
            except Exception as err:  # a peer's mode failing on this machine is a result; ours failing is a bug
                if not loop.name.startswith("sae_lens"):
                    raise
                errors[loop.name] = f"{type(err).__name__}: {str(err)[:400]}"
                continue
            rates[loop.name].append(args.steps * batch / (times[args.warmup + args.steps] - times[args.warmup]))
            saes[loop.name] = sae
    row: dict = {"architecture": family, "sparse_twin": SPARSE_TWIN[family], "d_in": d_in, "expansion": expansion,
                 "d_sae": d_sae, "matmul_gflops": matmul_gflops(d_in, d_sae, batch)}
    dense_flops = 2 * DENSE_MATMULS[family] * d_in * d_sae
    for loop in loops:
        name = loop.name
        if name in errors:
            row[f"{name}_error"] = errors[name]
            continue
        l0 = measured_l0(saes[name], batches[1])
        flops = 2 * d_in * d_sae + 2 * SPARSE_PRODUCTS[family] * l0 * d_in if loop.sparse else dense_flops
        median = statistics.median(rates[name])
        row |= {f"{name}_acts_per_s": median, f"{name}_acts_per_s_min": min(rates[name]),
                f"{name}_acts_per_s_max": max(rates[name]), f"{name}_l0": l0}
        if name != "sae_lens_sparse_acts":  # SAELens's sparse-activation step has no FLOP model here
            row[f"{name}_gflops"] = median * flops / 1e9
            row[f"{name}_share_of_matmul_rate"] = row[f"{name}_gflops"] / row["matmul_gflops"]
        if loop.sparse:
            row[f"{name}_dense_equivalent_gflops"] = median * dense_flops / 1e9
    for name in rates:
        if name != "sae_lens" and f"{name}_acts_per_s" in row and "sae_lens_acts_per_s" in row:
            row[f"{name}_vs_sae_lens"] = row[f"{name}_acts_per_s"] / row["sae_lens_acts_per_s"]
    if "ours_sparse_acts_per_s" in row:
        row["finite_check_share_of_ours_sparse_step"] = (finite_check_ms(batches[0]) / 1e3
                                                         / (batch / row["ours_sparse_acts_per_s"]))
    return row


def record_aims(runs: list[dict], shape: tuple[int, int] = (768, 32)) -> list[dict]:
    """Each aim with the measured ratios at ``shape`` (d_in, expansion) and whether it is met; never asserted."""
    out = []
    for aim in AIMS:
        measured = {r["architecture"]: r.get(aim["ratio"]) for r in runs
                    if (r["d_in"], r["expansion"]) == shape and r["architecture"] in aim["families"]}
        low_l0 = all(r.get("ours_sparse_l0", 0) <= 2 * L0 for r in runs if (r["d_in"], r["expansion"]) == shape)
        met = bool(measured) and all(v is not None and v >= aim["target"] for v in measured.values()) and low_l0
        out.append(aim | {"shape": list(shape), "measured": measured, "met": met if measured else None})
    return out


def step_clock() -> Callable[[], float]:
    """The process's CPU time when torch runs one thread (immune to other jobs taking the cores, or pausing this
    one), else the wall clock."""
    return time.process_time if torch.get_num_threads() == 1 else time.perf_counter


def time_step(sae: TrainingSAE, inp: TrainStepInput, reps: int = 3) -> float:
    """Median seconds of a training forward and backward pass (after one untimed)."""
    clock = step_clock()
    sae.training_forward_pass(inp).loss.backward()
    times = []
    for _ in range(reps):
        sae.zero_grad()
        start = clock()
        sae.training_forward_pass(inp).loss.backward()
        times.append(clock() - start)
    return statistics.median(times)


CROSSOVER_DENSITIES = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)


def crossover(args) -> dict:
    """Forward + backward time of the sparse step (forced) against the dense class's, across code densities:
    where they cross is the default ``sparse_step_below``. Adam costs both paths the same and is left out;
    a dense step's time does not depend on the density, so it is timed once."""
    out = {}
    for family in ("standard", "gated"):
        for d_in, d_sae in ((256, 2048), (768, 24576)):
            x = torch.randn(args.batch, d_in)
            inp = TrainStepInput(sae_in=x, coefficients={"l1": 1.0}, dead_neuron_mask=None, n_training_steps=0,
                                 is_logging_step=False)
            dense = make_training_sae(family, d_in, d_sae, **SETTINGS[family])
            dense.load_state_dict(initial_state(family, d_in, d_sae, x, l0=round(0.05 * d_sae)))
            dense_s = time_step(dense, inp)
            del dense
            points = []
            for density in CROSSOVER_DENSITIES:
                sparse = make_training_sae(SPARSE_TWIN[family], d_in, d_sae, sparse_step_below=1.0, **SETTINGS[family])
                sparse.load_state_dict(initial_state(family, d_in, d_sae, x, l0=round(density * d_sae)))
                points.append({"density": density, "sparse_s": time_step(sparse, inp)})
                print(family, d_in, d_sae, f"dense {dense_s:.3f} s", points[-1], flush=True)
            # linear interpolation between the last density where the sparse step wins and the first where it loses
            cross = next((p0["density"] + (p1["density"] - p0["density"]) * (dense_s - p0["sparse_s"])
                          / (p1["sparse_s"] - p0["sparse_s"])
                          for p0, p1 in zip(points, points[1:], strict=False)
                          if p0["sparse_s"] < dense_s <= p1["sparse_s"]), None)
            out[f"{family}_{d_in}x{d_sae}"] = {"dense_s": dense_s, "points": points, "crossover_density": cross,
                                               "sparse_faster_at_every_density": points[-1]["sparse_s"] < dense_s}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=3, help="steps of every run left out of its time")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of every loop")
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run (d_in 64 x 8, batch 256, 3 steps)")
    parser.add_argument("--extras", action="store_true", help="also a bare PyTorch step and bf16 loops")
    parser.add_argument("--crossover", action="store_true", help="measure the sparse/dense crossover density")
    parser.add_argument("--architectures", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--shapes", nargs="+", default=["256x8", "512x16", "768x32"],
                        help="d_in x expansion of each row (the aims are read at 768x32)")
    parser.add_argument("--out", help="folder for the JSON (default: results/; --quick: a temporary folder)")
    args = parser.parse_args()
    machine = {"platform": platform.platform(), "threads": torch.get_num_threads(), "torch": torch.__version__}
    if args.crossover:
        payload = {"machine": machine, "batch_size": args.batch, "clock": step_clock().__name__,
                   "points": crossover(args)}
        print("wrote", write_benchmark("dictionary_sparse_crossover", payload, args.out))
        return
    if args.quick:
        args.steps, args.warmup, args.repeats, args.batch = 3, 1, 2, 256
    shapes = [(64, 8)] if args.quick else [tuple(int(v) for v in shape.split("x")) for shape in args.shapes]
    out = {"machine": machine, "batch_size": args.batch, "topk_k": TOPK, "target_l0": L0, "lr": LR,
           "timed_steps": args.steps, "warmup_steps": args.warmup, "repeats": args.repeats, "runs": []}
    for d_in, expansion in shapes:
        gen = torch.Generator().manual_seed(0)
        batches = [torch.randn(args.batch, d_in, generator=gen) for _ in range(4)]
        for family in args.architectures:
            row = bench_row(family, d_in, expansion, batches, args)
            out["runs"].append(row)
            print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    out["aims"] = record_aims(out["runs"])  # met: None when that shape was not run (--quick)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    directory = args.out or (tempfile.mkdtemp(prefix="bench-quick-") if args.quick else None)
    print("aims:", [(a["aim"], a["measured"], a["met"]) for a in out["aims"]])
    print("wrote", write_benchmark("dictionary_training", out, directory))


if __name__ == "__main__":
    main()
