"""ONE training loop for every dictionary: SAE variants, transcoders and AlignSAE alike.

The loop drives any SAELens training SAE through its ``training_forward_pass`` (so each architecture's own
loss terms apply) and owns everything around it: an activation source, Adam, LR warm-up and decay,
coefficient (L1) warm-up, the unit-norm decoder constraint, dead-feature detection and resampling,
curriculum stages, a tqdm bar with live L0 and explained variance, and checkpoints with exact resume.
It never asks which architecture it holds.

A source gives typed batches (:class:`ActivationBatch`): the inputs, and when a variant needs them the
targets (a transcoder's MLP output) and integer labels (AlignSAE's concepts), kept row-aligned. The loop
hands all three to the SAE in one step-input type (:class:`DictionaryStepInput`) built the same way for
every architecture; each variant reads what it needs.

Inputs are rescaled so that ``E[||x||] = sqrt(d_in)`` while training (SAELens's
``expected_average_only_in``), which makes one L1 coefficient mean the same thing at every hook; targets
are scaled by the same factor and labels are left alone. The factor is folded into the weights at the end,
so the returned SAE reads raw activations (and predicts raw targets).

Training runs on the SAE's device; batches are moved there and every random draw of the loop happens on it.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol, runtime_checkable

import torch
from jaxtyping import Float, Int
from sae_lens.saes.sae import TrainCoefficientConfig, TrainingSAE, TrainStepInput, TrainStepOutput
from torch import Tensor
from tqdm.auto import tqdm

from workbench import hooks
from workbench.checkpoints import has_checkpoint, load_checkpoint, save_checkpoint
from workbench.dictionaries.distributed import Ranks

MAX_SEED = 2**31
"""Seeds must be below this, so that ``(seed, step)`` maps to one generator seed without collisions."""


@dataclass(frozen=True)
class Stage:
    """A curriculum stage: ``n_steps`` steps with extra or overridden loss coefficients (e.g. AlignSAE's
    binding loss switched on after a reconstruction-only stage)."""

    name: str
    """Shown in errors and unique within a config."""
    n_steps: int
    """Length of the stage, >= 1."""
    coefficients: dict[str, float] = field(default_factory=dict)
    """Loss coefficients set for the stage's steps (on top of the SAE's own, warmed-up ones)."""


def _bad(name: str, value: object, valid: str, hint: str = "") -> ValueError:
    return ValueError(f"{name} must be {valid}, got {value!r}" + (f" ({hint})" if hint else ""))


@dataclass(frozen=True)
class DictionaryTrainConfig:
    """Optimisation of one dictionary."""

    n_steps: int = 2000
    """Total steps (ignored when ``stages`` is given: then the stages' steps add up)."""
    batch_size: int = 4096
    """Activations per step."""
    lr: float = 3e-4
    """Adam learning rate (SAELens's default)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam betas."""
    lr_warmup_steps: int = 0
    """Linear LR warm-up."""
    lr_decay_fraction: float = 0.2
    """LR decays linearly to zero over this final fraction of the steps (0: constant)."""
    coefficient_warmup_steps: int | None = None
    """Linear warm-up of every loss coefficient (L1...) from 0; None uses each SAE config's own."""
    decoder_unit_norm: bool = True
    """Keep decoder rows at unit norm (and project out the gradient along them), as the papers do."""
    grad_clip: float = 1.0
    """Gradient-norm clipping (SAELens clips at 1.0)."""
    dead_window: int = 500
    """A feature that has not fired for this many steps counts as dead."""
    resample_every: int = 0
    """Resample dead features every this many steps (0: never); Anthropic-style, from badly reconstructed inputs."""
    resample_until_fraction: float = 0.6
    """No resampling after this fraction of training (so features can settle)."""
    resample_pool_batches: int = 16
    """How many batches a resampling draws its rows from: those of the last this many steps (the current one
    included; fewer in the first steps), read again from the source and predicted by the SAE as it is then. A pool
    of many batches holds enough rare, badly reconstructed inputs for every dead feature (1: the current batch)."""
    resample_encoder_scale: float = 0.2
    """A resampled feature's encoder norm, relative to the mean alive one: 0.2 for L1 SAEs (Anthropic's), 1 for
    TopK, where a feature must out-compete the alive ones to fire at all."""
    normalize_activations: bool = True
    """Rescale inputs (and targets, by the same factor) to ``E[||x||] = sqrt(d_in)`` during training (folded
    into the weights at the end)."""
    bf16: bool = False
    """bfloat16 autocast for the forward and backward matmuls (weights, Adam and the loss stay fp32): ~2x on
    CPUs with AMX/AVX-512 bf16 and on GPUs, at a small cost in reconstruction."""
    stages: tuple[Stage, ...] = ()
    """Curriculum stages; empty means one stage of ``n_steps`` with the SAE's own coefficients."""
    log_every: int = 50
    """Steps between live metrics (L0, explained variance) on the bar and in the history."""
    checkpoint_every: int = 1000
    """Steps between checkpoints when a checkpoint folder is given."""
    seed: int = 0
    """Seeds resampling: each resample draws from a generator seeded by ``(seed, step)`` alone."""

    def __post_init__(self) -> None:
        for name in ("n_steps", "batch_size", "log_every", "checkpoint_every", "dead_window", "resample_pool_batches"):
            if getattr(self, name) < 1:
                raise _bad(name, getattr(self, name), ">= 1")
        for name in ("lr_warmup_steps", "resample_every"):
            if getattr(self, name) < 0:
                raise _bad(name, getattr(self, name), ">= 0", "0 switches it off")
        if self.coefficient_warmup_steps is not None and self.coefficient_warmup_steps < 0:
            raise _bad("coefficient_warmup_steps", self.coefficient_warmup_steps, ">= 0 or None",
                       "None uses each SAE config's own warm-up")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise _bad("lr", self.lr, "a finite number > 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise _bad("betas", self.betas, "two numbers in [0, 1)", "Adam's moment decays, e.g. (0.9, 0.999)")
        if not self.grad_clip > 0:
            raise _bad("grad_clip", self.grad_clip, "> 0", "use float('inf') to not clip")
        for name in ("lr_decay_fraction", "resample_until_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise _bad(name, getattr(self, name), "in [0, 1]")
        if not (math.isfinite(self.resample_encoder_scale) and self.resample_encoder_scale > 0):
            raise _bad("resample_encoder_scale", self.resample_encoder_scale, "a finite number > 0",
                       "0.2 for L1 SAEs, 1 for TopK")
        if not 0 <= self.seed < MAX_SEED:
            raise _bad("seed", self.seed, f"in [0, 2**31) = [0, {MAX_SEED})")
        if self.resample_every and self.resample_every <= self.dead_window // 10:
            raise ValueError(f"resample_every={self.resample_every} is too short for dead_window={self.dead_window}: "
                             f"features need time to fire before they can be called dead; use resample_every > "
                             f"{self.dead_window // 10} or a shorter dead_window")
        for stage in self.stages:
            if stage.n_steps < 1:
                raise _bad(f"stage {stage.name!r} n_steps", stage.n_steps, ">= 1")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            duplicated = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"stage names must be unique, got {names} ({duplicated} repeated)")

    @property
    def total_steps(self) -> int:
        return sum(s.n_steps for s in self.stages) if self.stages else self.n_steps

    def lr_at(self, step: int) -> float:
        """The learning rate at ``step``: linear warm-up, constant, then linear decay to zero over the final
        ``lr_decay_fraction`` of the steps."""
        total = self.total_steps
        if step < self.lr_warmup_steps:
            return self.lr * (step + 1) / self.lr_warmup_steps
        decay_start = total * (1 - self.lr_decay_fraction)
        if self.lr_decay_fraction > 0 and step >= decay_start:
            return self.lr * max(0.0, (total - step) / (total - decay_start))
        return self.lr


class ActivationBatch(NamedTuple):
    """One step's rows: inputs, and (when the source has them) targets and labels of the same rows."""

    inputs: Float[Tensor, "batch d_in"]
    """What the dictionary reads."""
    targets: Float[Tensor, "batch d_out"] | None = None
    """What it should predict when that is not its input (a transcoder's MLP output)."""
    labels: dict[str, Int[Tensor, " batch"]] | None = None
    """Integer labels per row, by name (e.g. AlignSAE's ``relation``)."""

    def to(self, device: str | torch.device) -> ActivationBatch:
        """The same batch on ``device`` (inputs and targets as float32)."""
        return ActivationBatch(
            self.inputs.to(device, torch.float32),
            None if self.targets is None else self.targets.to(device, torch.float32),
            None if self.labels is None else {k: v.to(device) for k, v in self.labels.items()})


@runtime_checkable
class ActivationSource(Protocol):
    """Anything that gives the batch for a step, deterministically (so training can resume exactly)."""

    d_in: int
    """Width of the inputs."""
    d_out: int | None
    """Width of the targets; None when the source has none."""

    def batch(self, step: int, batch_size: int) -> ActivationBatch: ...


def _permutation(n: int, seed: int) -> Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


class BatchOrder:
    """Which of ``n`` rows make each step's batch: without replacement, reshuffled each epoch, depending only on
    the seed and the step (every source that reads rows by index, in memory or on disk, draws them this way)."""

    def __init__(self, n: int, seed: int, what: str = "activations available") -> None:
        self.n, self.seed, self.what = n, seed, what
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def rows(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> Tensor:
        """Indices ``[rank * m, (rank + 1) * m)``, ``m = batch_size / world_size``, of the batch of ``step``."""
        if batch_size > self.n:
            raise ValueError(f"batch_size={batch_size} exceeds the {self.n} {self.what}")
        epoch, i = divmod(step, self.n // batch_size)
        if epoch != self._epoch:
            self._perm, self._epoch = _permutation(self.n, self.seed * 100_003 + epoch), epoch
        m = batch_size // world_size
        return self._perm[i * batch_size + rank * m:i * batch_size + (rank + 1) * m]


class TensorSource:
    """Batches drawn without replacement from ``[n_tokens, d_in]`` activations (in memory or a memmap),
    reshuffled each epoch; targets and labels, when given, follow their rows. The batch of a step depends
    only on the seed and the step."""

    def __init__(self, acts: Tensor, targets: Tensor | None = None, labels: dict[str, Tensor] | None = None,
                 seed: int = 0, device: str | torch.device | None = None) -> None:
        """``acts``: ``[n_tokens, d_in]``; ``targets``: ``[n_tokens, d_out]``, one row per activation row (a
        transcoder's MLP outputs); ``labels``: ``[n_tokens]`` integer labels per row, by name. Shapes are
        checked here, with messages naming both. ``device``: where batches are made (None: where ``acts`` is;
        the loop moves each batch to the SAE's device in any case)."""
        if acts.dim() != 2:
            raise ValueError(f"activations must be [n_tokens, d_in], got shape {tuple(acts.shape)}")
        if targets is not None and (targets.dim() != 2 or len(targets) != len(acts)):
            raise ValueError(f"targets must be [n_tokens, d_out] with one row per activation row: targets have shape "
                             f"{tuple(targets.shape)}, activations {tuple(acts.shape)}")
        for name, lab in (labels or {}).items():
            if lab.shape != (len(acts),):
                raise ValueError(f"labels[{name!r}] must be [n_tokens], one per activation row: labels have shape "
                                 f"{tuple(lab.shape)}, activations {tuple(acts.shape)}")
            if lab.is_floating_point() or lab.is_complex() or lab.dtype == torch.bool:
                raise ValueError(f"labels[{name!r}] must hold integers, got dtype {lab.dtype}")
        self.acts, self.targets, self.labels, self.seed = acts, targets, dict(labels) if labels else None, seed
        self.device = None if device is None else torch.device(device)
        self.n, self.d_in = acts.shape
        self.d_out = None if targets is None else targets.shape[1]
        self.order = BatchOrder(self.n, seed)

    def batch(self, step: int, batch_size: int) -> ActivationBatch:
        return self.shard(step, batch_size, 0, 1)

    def shard(self, step: int, batch_size: int, rank: int, world_size: int) -> ActivationBatch:
        """Rows ``[rank * n, (rank + 1) * n)``, ``n = batch_size / world_size``, of the batch of ``step``."""
        idx = self.order.rows(step, batch_size, rank, world_size)
        targets = None if self.targets is None else self.targets[idx.to(self.targets.device)]
        labels = None if self.labels is None else {k: v[idx.to(v.device)] for k, v in self.labels.items()}
        return ActivationBatch(self.acts[idx.to(self.acts.device)], targets, labels).to(self.device or self.acts.device)


class ModelActivationSource:
    """Activations computed from the model on the fly, a chunk of sequences at a time (bounded memory).

    Sequences are taken in a seeded order, ``sequences_per_chunk`` at a time; each chunk's activations at
    ``hook_name`` (BOS positions left out) are shuffled and cut into batches. With ``target_hook_name`` the
    same forward pass also gives each row's target (a transcoder reads ``blocks.{l}.mlp.hook_in`` and
    predicts ``blocks.{l}.hook_mlp_out``). The batch of a step depends only on the seed and the step, so
    training on it resumes exactly.
    """

    def __init__(self, model: torch.nn.Module, tokens: Tensor, hook_name: str, target_hook_name: str | None = None,
                 sequences_per_chunk: int = 256, seed: int = 0, device: str | torch.device | None = None) -> None:
        """``tokens``: ``[n_sequences, pos]``. ``device``: where batches are made (None: CPU, where activations
        are cached; the loop moves each batch to the SAE's device in any case)."""
        hooks.check_hook_name(model, hook_name)
        if target_hook_name is not None:
            hooks.check_hook_name(model, target_hook_name)
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be [n_sequences, pos], got shape {tuple(tokens.shape)}")
        self.model, self.tokens, self.seed = model, tokens, seed
        self.hook_name, self.target_hook_name = hook_name, target_hook_name
        self.device = torch.device("cpu") if device is None else torch.device(device)
        order = _permutation(len(tokens), seed)
        self.chunks = [order[i:i + sequences_per_chunk] for i in range(0, len(tokens), sequences_per_chunk)]
        bos = model.tokenizer.bos_token_id
        self.chunk_sizes = [int((tokens[idx] != bos).sum()) for idx in self.chunks]
        first = self._activations(self.chunks[0][:1])
        self.d_in = first.inputs.shape[1]
        self.d_out = None if first.targets is None else first.targets.shape[1]
        self._cached: tuple[tuple[int, int], ActivationBatch] | None = None

    def _activations(self, idx: Tensor) -> ActivationBatch:
        names = [self.hook_name] + ([self.target_hook_name] if self.target_hook_name else [])
        cache = hooks.cache_activations(self.model, self.tokens[idx], names, progress=False)
        return ActivationBatch(cache[self.hook_name], cache[self.target_hook_name] if self.target_hook_name else None)

    def _chunk(self, epoch: int, c: int) -> ActivationBatch:
        if self._cached is None or self._cached[0] != (epoch, c):
            acts = self._activations(self.chunks[c])
            perm = _permutation(len(acts.inputs), self.seed * 100_003 + epoch * 1_009 + c)
            self._cached = ((epoch, c), ActivationBatch(acts.inputs[perm],
                                                        None if acts.targets is None else acts.targets[perm]))
        return self._cached[1]

    def batch(self, step: int, batch_size: int) -> ActivationBatch:
        per_chunk = [m // batch_size for m in self.chunk_sizes]
        per_epoch = sum(per_chunk)
        if per_epoch == 0:
            raise ValueError(f"batch_size={batch_size} exceeds every chunk's {max(self.chunk_sizes)} activations; "
                             "use more sequences_per_chunk or a smaller batch")
        epoch, i = divmod(step, per_epoch)
        for c, n in enumerate(per_chunk):
            if i < n:
                chunk, rows = self._chunk(epoch, c), slice(i * batch_size, (i + 1) * batch_size)
                return ActivationBatch(chunk.inputs[rows], None if chunk.targets is None else chunk.targets[rows]
                                       ).to(self.device)
            i -= n
        raise AssertionError("unreachable: step index past the epoch")


@dataclass
class DictionaryStepInput(TrainStepInput):
    """SAELens's step input plus the batch's targets and labels; the loop builds this for every architecture,
    and each reads what it needs (a transcoder its targets, AlignSAE its labels, an SAE neither)."""

    targets: Float[Tensor, "batch d_out"] | None = None
    """What the dictionary should predict when that is not ``sae_in`` (scaled like ``sae_in``)."""
    labels: dict[str, Int[Tensor, " batch"]] | None = None
    """Integer labels of the batch's rows, by name (never scaled)."""


@dataclass
class TrainResult:
    """What a training run returns besides the trained SAE."""

    history: list[dict]
    steps: int
    wall_time_s: float
    activations_per_s: float
    dead_fraction: float
    activation_scale: float
    resamples: list[tuple[int, int]] = field(default_factory=list)
    """``(step, n_features)`` of each resampling that found dead features (steps count from 1)."""


def coefficient_at(spec: float | TrainCoefficientConfig, step: int, warmup: int | None) -> float:
    value, own_warmup = (spec.value, spec.warm_up_steps) if isinstance(spec, TrainCoefficientConfig) else (spec, 0)
    w = own_warmup if warmup is None else warmup
    return value * min(1.0, (step + 1) / w) if w > 0 else value


def stage_at(step: int, cfg: DictionaryTrainConfig) -> Stage | None:
    end = 0
    for stage in cfg.stages:
        end += stage.n_steps
        if step < end:
            return stage
    return None


def estimate_activation_scale(source: ActivationSource, batch_size: int, n_batches: int = 8) -> float:
    """The factor that makes ``E[||x||] = sqrt(d_in)`` on a few batches' inputs."""
    batches = [source.batch(i, batch_size) for i in range(n_batches)]
    for i, b in enumerate(batches):
        _check_batch_finite(b, i, "while estimating the activation scale")
    norms = torch.cat([b.inputs.norm(dim=-1) for b in batches])
    return math.sqrt(source.d_in) / norms.mean().item()


def _check_batch_finite(batch: ActivationBatch, step: int, when: str = "") -> None:
    """Raise naming the step and the tensor when ``batch`` holds NaN or inf (exact; used off the hot path)."""
    for name, t in (("inputs", batch.inputs), ("targets", batch.targets)):
        if t is not None and not torch.isfinite(t).all():
            bad = ~torch.isfinite(t)
            raise ValueError(f"the batch of step {step} has {int(bad.sum())} non-finite {name} (NaN or inf) in "
                             f"{int(bad.any(-1).sum())} of its {len(t)} rows{' ' + when if when else ''}; "
                             "clean the activations (e.g. drop those rows) before training")


def nonfinite_probe(batch: ActivationBatch) -> Tensor:
    """A 0-d tensor that is NaN when the batch may hold NaN or inf, and 0 otherwise. One reduction (a sum
    costs far less than ``isfinite().all()`` on CPU); a false alarm (the sum overflowing) is settled by the
    exact check."""
    probe = batch.inputs.sum() * 0
    return probe if batch.targets is None else probe + batch.targets.sum() * 0


@torch.no_grad()
def _remove_parallel_grad(W_dec: Tensor) -> None:
    if W_dec.grad is not None:
        unit = W_dec / W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        W_dec.grad -= (W_dec.grad * unit).sum(-1, keepdim=True) * unit


@torch.no_grad()
def _normalize_decoder(W_dec: Tensor) -> None:
    W_dec /= W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8)


@torch.no_grad()
def fired_features(feature_acts: Tensor) -> Tensor:
    """``[d_sae]`` bool: which features fired on the batch (dense codes or a sparse COO tensor of them)."""
    if feature_acts.is_sparse:
        fired = torch.zeros(feature_acts.shape[-1], dtype=torch.bool, device=feature_acts.device)
        return fired.index_fill_(0, feature_acts._indices()[-1][feature_acts._values() != 0], True)
    return (feature_acts != 0).any(0)


@torch.no_grad()
def batch_metrics(out: TrainStepOutput) -> dict[str, float]:
    """L0 and explained variance of one training batch (of the SAE's prediction against ``out.sae_in``, which
    is the target for a transcoder)."""
    x, x_hat, codes = out.sae_in, out.sae_out, out.feature_acts
    fvu = (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    n_active = (codes._values() != 0).sum() if codes.is_sparse else (codes != 0).sum()  # uncoalesced is fine
    return {"l0": n_active.item() / len(x), "explained_variance": 1 - fvu.item()}


PER_FEATURE_PARAMS = ("b_enc", "b_gate", "b_mag", "r_mag")
"""Per-feature parameters (of whichever architecture has them) that resampling resets to zero."""


def resample_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    """The generator of the resampling at ``step``: a function of ``(seed, step)`` only, so a resumed run
    draws what the uninterrupted one draws; on ``device``, where the draws happen."""
    return torch.Generator(device=device).manual_seed(seed * 2**32 + step)


class ResamplePool(NamedTuple):
    """The rows a resampling draws from, scaled as training scales them."""

    inputs: Float[Tensor, "pool d_in"]
    targets: Float[Tensor, "pool d_out"]
    """What the SAE should predict: its inputs, or a transcoder's targets."""
    prediction: Float[Tensor, "pool d_out"]
    """The SAE's prediction of each row at the resampling step."""


@torch.no_grad()
def resample_pool(sae: TrainingSAE, source: ActivationSource, step: int, batch_size: int, n_batches: int,
                  scale: float) -> ResamplePool:
    """The batches of steps ``step - n_batches + 1 .. step`` (from step 0 at the start) read again from ``source``,
    scaled by ``scale``, with ``sae``'s predictions of them now (``decode(encode(x))``, a batch at a time). A
    function of the source, the step and the SAE's weights, so a resumed run draws the same pool."""
    device = sae.W_dec.device
    inputs, targets, predictions = [], [], []
    for s in range(max(0, step - n_batches + 1), step + 1):
        batch = source.batch(s, batch_size).to(device)
        x = batch.inputs * scale
        inputs.append(x)
        targets.append(x if batch.targets is None else batch.targets * scale)
        predictions.append(sae.decode(sae.encode(x)).float())
    return ResamplePool(torch.cat(inputs), torch.cat(targets), torch.cat(predictions))


@torch.no_grad()
def resample_dead(sae: TrainingSAE, opt: torch.optim.Optimizer, dead: Tensor, inputs: Float[Tensor, "batch d_in"],
                  targets: Float[Tensor, "batch d_out"], prediction: Float[Tensor, "batch d_out"],
                  generator: torch.Generator, encoder_scale: float = 0.2) -> int:
    """Re-initialise dead features towards rows the SAE predicts worst (Anthropic, 2023).

    Rows are sampled with probability proportional to their squared error ``||targets - prediction||^2``.
    Each dead feature's decoder row becomes the normalised target of its row (minus ``b_dec``); its encoder
    column points along that row's input (minus ``b_dec`` when the SAE subtracts it from its input) at
    ``encoder_scale`` times the mean alive encoder norm; its biases and Adam moments are reset. For an SAE
    ``targets`` is ``inputs``. Returns how many were resampled.
    """
    idx = dead.nonzero().squeeze(-1)
    if len(idx) == 0:
        return 0
    err = (targets - prediction).float().pow(2).sum(-1)
    if err.sum() <= 0:
        return 0
    picks = torch.multinomial(err / err.sum(), len(idx), replacement=len(idx) > len(err), generator=generator)
    decoder_dirs = torch.nn.functional.normalize(targets[picks] - sae.b_dec, dim=-1, eps=1e-8)
    read = inputs[picks] - sae.b_dec if sae.cfg.apply_b_dec_to_input else inputs[picks]
    encoder_dirs = torch.nn.functional.normalize(read, dim=-1, eps=1e-8)
    alive = ~dead
    enc_norm = sae.W_enc[:, alive].norm(dim=0).mean() if alive.any() else 1.0
    sae.W_dec.data[idx] = decoder_dirs
    sae.W_enc.data[:, idx] = encoder_dirs.T * encoder_scale * enc_norm
    for name in PER_FEATURE_PARAMS:
        p = getattr(sae, name, None)
        if isinstance(p, torch.nn.Parameter):
            p.data[idx] = 0.0
    for p in (sae.W_dec, sae.W_enc, *(getattr(sae, n, None) for n in PER_FEATURE_PARAMS)):
        if isinstance(p, torch.nn.Parameter) and p in opt.state:
            for moment in ("exp_avg", "exp_avg_sq"):
                m = opt.state[p][moment]
                if m.shape[0] == sae.cfg.d_sae:
                    m[idx] = 0.0
                else:
                    m[:, idx] = 0.0
    return len(idx)


def _check_widths(sae: TrainingSAE, source: ActivationSource) -> None:
    if source.d_in != sae.cfg.d_in:
        raise ValueError(f"the source's inputs have d_in={source.d_in} but the SAE reads d_in={sae.cfg.d_in}")
    d_out = sae.W_dec.shape[1]
    if source.d_out is not None and source.d_out != d_out:
        raise ValueError(f"the source's targets have d_out={source.d_out} but the SAE predicts d_out={d_out} "
                         f"(W_dec is {tuple(sae.W_dec.shape)})")


def train_dictionary(sae: TrainingSAE, source: ActivationSource, cfg: DictionaryTrainConfig,
                     checkpoint_dir: str | Path | None = None, progress: bool = True,
                     max_steps: int | None = None) -> TrainResult:
    """Train ``sae`` in place, on its device, on ``source``'s batches and return its learning curve.

    Each step hands the SAE a :class:`DictionaryStepInput` with the batch's inputs, targets and labels.
    ``checkpoint_dir``: resume from / write checkpoints there. ``max_steps`` stops early (to resume later).
    Raises naming the step when a batch or the loss is not finite.

    Under an initialised ``torch.distributed`` process group each rank trains on its share of every global
    batch of ``cfg.batch_size`` rows and the ranks stay identical (see :mod:`.distributed`); rank 0 alone
    shows progress and writes checkpoints.
    """
    _check_widths(sae, source)
    ranks = Ranks.current()
    ranks.check_batch_size(cfg.batch_size)
    device = sae.W_dec.device
    params = [p for p in sae.parameters() if p.requires_grad]
    # the fused kernel does Adam's update in one pass over each parameter (~6x faster on CPU than the default)
    opt = torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, fused=device.type in ("cpu", "cuda"))
    coefficient_specs = sae.get_coefficients()
    total = cfg.total_steps
    stop = total if max_steps is None else min(total, max_steps)
    state = {"step": 0, "wall_time_s": 0.0, "history": [], "activation_scale": 1.0, "resamples": []}
    steps_since_fired = torch.zeros(sae.cfg.d_sae, dtype=torch.long, device=device)
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt is not None and has_checkpoint(ckpt):
        state = {"resamples": []} | load_checkpoint(ckpt, sae, opt)
        steps_since_fired = torch.tensor(state["steps_since_fired"], device=device)
    else:  # a fresh run: measure the input scale once (a resumed run restores it) and start from unit-norm
        # decoder rows (renormalising on resume would perturb the restored weights' last bits)
        if cfg.normalize_activations:
            state["activation_scale"] = ranks.broadcast_float(
                estimate_activation_scale(source, min(cfg.batch_size, 4096)))
        if cfg.decoder_unit_norm:
            _normalize_decoder(sae.W_dec.data)
    ranks.broadcast_state(sae, opt)  # every rank starts from rank 0's weights
    scale = state["activation_scale"]

    bar = tqdm(range(state["step"], stop), initial=state["step"], total=total, disable=not (progress and ranks.is_main),
               desc=f"train {sae.cfg.architecture()}")
    start = time.perf_counter() - state["wall_time_s"]
    sae.train()
    for step in bar:
        batch = ranks.batch(source, step, cfg.batch_size).to(device)
        x = batch.inputs * scale
        stage = stage_at(step, cfg)
        coefficients = {k: coefficient_at(v, step, cfg.coefficient_warmup_steps) for k, v in coefficient_specs.items()}
        if stage is not None:
            coefficients |= stage.coefficients
        for group in opt.param_groups:
            group["lr"] = cfg.lr_at(step)
        step_input = DictionaryStepInput(
            sae_in=x, coefficients=coefficients, dead_neuron_mask=steps_since_fired > cfg.dead_window,
            n_training_steps=step, is_logging_step=False,
            targets=None if batch.targets is None else batch.targets * scale, labels=batch.labels)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            out = sae.training_forward_pass(step_input)
        # one host sync per step covers the batch and the loss; the exact checks run only on an alarm
        if not torch.isfinite(out.loss.detach().float() + nonfinite_probe(batch)):
            _check_batch_finite(batch, step)
            if not torch.isfinite(out.loss):
                terms = {k: v.item() for k, v in out.losses.items()}
                raise FloatingPointError(f"the loss is {out.loss.item()} at step {step} (its terms: {terms}) on a "
                                         f"finite batch; try a lower lr (now {cfg.lr_at(step):.3g}), smaller "
                                         "coefficients, or bf16=False")
        out.loss.backward()
        ranks.average_gradients(params)
        if cfg.decoder_unit_norm:
            _remove_parallel_grad(sae.W_dec)
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if cfg.decoder_unit_norm:
            _normalize_decoder(sae.W_dec.data)
        fired = ranks.any_rank(fired_features(out.feature_acts.detach()))
        steps_since_fired = torch.where(fired, 0, steps_since_fired + 1)
        if (cfg.resample_every and (step + 1) % cfg.resample_every == 0
                and step < cfg.resample_until_fraction * total):
            dead = steps_since_fired > cfg.dead_window
            n = 0
            if dead.any() and ranks.is_main:  # from the global batches, as one process would
                pool = resample_pool(sae, source, step, cfg.batch_size, cfg.resample_pool_batches, scale)
                n = resample_dead(sae, opt, dead, *pool, resample_generator(cfg.seed, step, device),
                                  cfg.resample_encoder_scale)
            n = ranks.share_edit(n, sae, opt)  # rank 0's resampled weights and moments, on every rank
            steps_since_fired[dead] = 0  # a fresh chance for the resampled; the rest keep their counts
            if n:
                state["resamples"].append([step + 1, n])
        if (step + 1) % cfg.log_every == 0 or step + 1 == total:
            point = {"step": step + 1, "loss": out.loss.item(), **batch_metrics(out),
                     "dead_fraction": (steps_since_fired > cfg.dead_window).float().mean().item()}
            point |= {k: v.item() for k, v in out.losses.items()}
            point = ranks.mean(point)  # over the ranks' shards
            state["history"].append(point)
            bar.set_postfix(L0=f"{point['l0']:.1f}", EV=f"{point['explained_variance']:.3f}")
        state["step"] = step + 1
        state["wall_time_s"] = time.perf_counter() - start
        if ckpt is not None and ranks.is_main and (state["step"] % cfg.checkpoint_every == 0 or state["step"] == stop):
            save_checkpoint(ckpt, sae, opt, state | {"steps_since_fired": steps_since_fired.tolist(),
                                                     "config": asdict(cfg)})
    sae.eval()
    done = state["step"]
    if done == total and scale != 1.0:
        sae.fold_activation_norm_scaling_factor(scale)
    wall = max(state["wall_time_s"], 1e-9)
    return TrainResult(history=state["history"], steps=done, wall_time_s=wall,
                       activations_per_s=done * cfg.batch_size / wall,
                       dead_fraction=(steps_since_fired > cfg.dead_window).float().mean().item(),
                       activation_scale=scale, resamples=[(s, n) for s, n in state["resamples"]])
