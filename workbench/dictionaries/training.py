"""ONE training loop for every dictionary: SAE variants, transcoders and AlignSAE alike.

The loop drives any SAELens training SAE through its ``training_forward_pass`` (so each architecture's own
loss terms apply) and owns everything around it: an activation source, Adam, LR warm-up and decay,
coefficient (L1) warm-up, the unit-norm decoder constraint, dead-feature detection and resampling,
curriculum stages, a tqdm bar with live L0 and explained variance, and checkpoints with exact resume.
It never asks which architecture it holds.

Activations are rescaled so that ``E[||x||] = sqrt(d_in)`` while training (SAELens's
``expected_average_only_in``), which makes one L1 coefficient mean the same thing at every hook; the
factor is folded into the weights at the end, so the returned SAE reads raw activations.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from jaxtyping import Float
from sae_lens.saes.sae import TrainCoefficientConfig, TrainingSAE, TrainStepInput, TrainStepOutput
from torch import Tensor
from tqdm.auto import tqdm

from workbench import hooks
from workbench.checkpoints import has_checkpoint, load_checkpoint, save_checkpoint
from workbench.dictionaries import training_input_width


@dataclass(frozen=True)
class Stage:
    """A curriculum stage: ``n_steps`` steps with extra or overridden loss coefficients (e.g. AlignSAE's
    binding loss switched on after a reconstruction-only stage)."""

    name: str
    n_steps: int
    coefficients: dict[str, float] = field(default_factory=dict)


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
    resample_encoder_scale: float = 0.2
    """A resampled feature's encoder norm, relative to the mean alive one: 0.2 for L1 SAEs (Anthropic's), 1 for
    TopK, where a feature must out-compete the alive ones to fire at all."""
    normalize_activations: bool = True
    """Rescale inputs to ``E[||x||] = sqrt(d_in)`` during training (folded into the weights at the end)."""
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
    """Seeds the batch order (and resampling)."""

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.n_steps < 1:
            raise ValueError(f"batch_size and n_steps must be >= 1, got {self.batch_size}, {self.n_steps}")
        if not 0 <= self.lr_decay_fraction <= 1:
            raise ValueError(f"lr_decay_fraction must be in [0, 1], got {self.lr_decay_fraction}")
        if self.resample_every and self.resample_every <= self.dead_window // 10:
            raise ValueError(f"resample_every={self.resample_every} is too short for dead_window={self.dead_window}: "
                             "features need time to fire before they can be called dead")

    @property
    def total_steps(self) -> int:
        return sum(s.n_steps for s in self.stages) if self.stages else self.n_steps


@runtime_checkable
class ActivationSource(Protocol):
    """Anything that gives the batch for a step, deterministically (so training can resume exactly)."""

    d: int

    def batch(self, step: int, batch_size: int) -> Float[Tensor, "batch d"]: ...


class TensorSource:
    """Batches drawn without replacement from a ``[n, d]`` tensor (in memory or a memmap), reshuffled each
    epoch; the batch of a step depends only on the seed and the step."""

    def __init__(self, acts: Tensor, seed: int = 0, device: str | torch.device = "cpu") -> None:
        """``acts``: ``[n_tokens, d]`` (checked here, with a message that names the shape)."""
        if acts.dim() != 2:
            raise ValueError(f"activations must be [n_tokens, d], got shape {tuple(acts.shape)}")
        self.acts, self.seed, self.device = acts, seed, torch.device(device)
        self.n, self.d = acts.shape
        self._perm_epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def _permutation(self, epoch: int) -> Tensor:
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._perm, self._perm_epoch = torch.randperm(self.n, generator=g), epoch
        return self._perm

    def batch(self, step: int, batch_size: int) -> Float[Tensor, "batch d"]:
        if batch_size > self.n:
            raise ValueError(f"batch_size={batch_size} exceeds the {self.n} activations available")
        per_epoch = self.n // batch_size
        epoch, i = divmod(step, per_epoch)
        idx = self._permutation(epoch)[i * batch_size:(i + 1) * batch_size]
        return self.acts[idx].to(self.device, torch.float32)


class ModelActivationSource:
    """Activations computed from the model on the fly, a chunk of sequences at a time (bounded memory).

    Sequences are taken in a seeded order, ``sequences_per_chunk`` at a time; each chunk's activations at
    ``hook_name`` (BOS positions left out) are shuffled and cut into batches. The batch of a step depends
    only on the seed and the step, so training on it resumes exactly.
    """

    def __init__(self, model: torch.nn.Module, tokens: Tensor, hook_name: str, sequences_per_chunk: int = 256,
                 seed: int = 0, device: str | torch.device = "cpu") -> None:
        hooks.check_hook_name(model, hook_name)
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be [n_sequences, pos], got shape {tuple(tokens.shape)}")
        self.model, self.tokens, self.hook_name, self.seed = model, tokens, hook_name, seed
        self.device = torch.device(device)
        order = torch.randperm(len(tokens), generator=torch.Generator().manual_seed(seed))
        self.chunks = [order[i:i + sequences_per_chunk] for i in range(0, len(tokens), sequences_per_chunk)]
        bos = model.tokenizer.bos_token_id
        self.chunk_sizes = [int((tokens[idx] != bos).sum()) for idx in self.chunks]
        self.d = self._activations(self.chunks[0][:1]).shape[1]
        self._cached: tuple[tuple[int, int], Tensor] | None = None

    def _activations(self, idx: Tensor) -> Tensor:
        return hooks.cache_activations(self.model, self.tokens[idx], [self.hook_name], progress=False)[self.hook_name]

    def _chunk(self, epoch: int, c: int) -> Tensor:
        if self._cached is None or self._cached[0] != (epoch, c):
            acts = self._activations(self.chunks[c])
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch * 1_009 + c)
            self._cached = ((epoch, c), acts[torch.randperm(len(acts), generator=g)])
        return self._cached[1]

    def batch(self, step: int, batch_size: int) -> Float[Tensor, "batch d"]:
        per_chunk = [m // batch_size for m in self.chunk_sizes]
        per_epoch = sum(per_chunk)
        if per_epoch == 0:
            raise ValueError(f"batch_size={batch_size} exceeds every chunk's {max(self.chunk_sizes)} activations; "
                             "use more sequences_per_chunk or a smaller batch")
        epoch, i = divmod(step, per_epoch)
        for c, n in enumerate(per_chunk):
            if i < n:
                return self._chunk(epoch, c)[i * batch_size:(i + 1) * batch_size].to(self.device)
            i -= n
        raise AssertionError("unreachable: step index past the epoch")


@dataclass
class TrainResult:
    """What a training run returns besides the trained SAE."""

    history: list[dict]
    steps: int
    wall_time_s: float
    activations_per_s: float
    dead_fraction: float
    activation_scale: float


def coefficient_at(spec: float | TrainCoefficientConfig, step: int, warmup: int | None) -> float:
    value, own_warmup = (spec.value, spec.warm_up_steps) if isinstance(spec, TrainCoefficientConfig) else (spec, 0)
    w = own_warmup if warmup is None else warmup
    return value * min(1.0, (step + 1) / w) if w > 0 else value


def lr_at(step: int, cfg: DictionaryTrainConfig) -> float:
    total = cfg.total_steps
    if step < cfg.lr_warmup_steps:
        return cfg.lr * (step + 1) / cfg.lr_warmup_steps
    decay_start = total * (1 - cfg.lr_decay_fraction)
    if cfg.lr_decay_fraction > 0 and step >= decay_start:
        return cfg.lr * max(0.0, (total - step) / (total - decay_start))
    return cfg.lr


def stage_at(step: int, cfg: DictionaryTrainConfig) -> Stage | None:
    end = 0
    for stage in cfg.stages:
        end += stage.n_steps
        if step < end:
            return stage
    return None


def estimate_activation_scale(source: ActivationSource, batch_size: int, n_batches: int = 8) -> float:
    """The factor that makes ``E[||x||] = sqrt(d)`` on a few batches."""
    norms = torch.cat([source.batch(i, batch_size).norm(dim=-1) for i in range(n_batches)])
    return math.sqrt(source.d) / norms.mean().item()


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
    """L0 and explained variance of one training batch."""
    x, x_hat, codes = out.sae_in, out.sae_out, out.feature_acts
    fvu = (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    n_active = (codes._values() != 0).sum() if codes.is_sparse else (codes != 0).sum()  # uncoalesced is fine
    return {"l0": n_active.item() / len(x), "explained_variance": 1 - fvu.item()}


PER_FEATURE_PARAMS = ("b_enc", "b_gate", "b_mag", "r_mag")
"""Per-feature parameters (of whichever architecture has them) that resampling resets to zero."""


@torch.no_grad()
def resample_dead(sae: TrainingSAE, opt: torch.optim.Optimizer, dead: Tensor, x: Tensor, x_hat: Tensor,
                  generator: torch.Generator, encoder_scale: float = 0.2) -> int:
    """Re-initialise dead features towards inputs the SAE reconstructs worst (Anthropic, 2023).

    Each dead feature's decoder row becomes a normalised badly-reconstructed input (sampled with
    probability proportional to its squared error); its encoder column points the same way at
    ``encoder_scale`` times the mean alive encoder norm; its biases and Adam moments are reset. Returns how many were resampled.
    """
    idx = dead.nonzero().squeeze(-1)
    if len(idx) == 0:
        return 0
    err = (x - x_hat).pow(2).sum(-1)
    if err.sum() <= 0:
        return 0
    picks = torch.multinomial(err / err.sum(), len(idx), replacement=len(idx) > len(err), generator=generator)
    directions = x[picks] - sae.b_dec
    directions /= directions.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    alive = ~dead
    enc_norm = sae.W_enc[:, alive].norm(dim=0).mean() if alive.any() else torch.tensor(1.0)
    sae.W_dec.data[idx] = directions
    sae.W_enc.data[:, idx] = directions.T * encoder_scale * enc_norm
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


def train_dictionary(sae: TrainingSAE, source: ActivationSource, cfg: DictionaryTrainConfig,
                     checkpoint_dir: str | Path | None = None, progress: bool = True,
                     max_steps: int | None = None,
                     step_input_fn: Callable[[TrainStepInput, int], TrainStepInput] | None = None) -> TrainResult:
    """Train ``sae`` in place on ``source`` and return its learning curve.

    ``checkpoint_dir``: resume from / write checkpoints there. ``max_steps`` stops early (to resume later).
    ``step_input_fn`` lets a variant add to the step input (e.g. AlignSAE's labels) without a new loop.
    """
    width = training_input_width(sae)
    if source.d != width:
        raise ValueError(f"activations have d={source.d} but the SAE reads d_in={width}")
    device = sae.W_dec.device
    params = [p for p in sae.parameters() if p.requires_grad]
    # the fused kernel does Adam's update in one pass over each parameter (~6x faster on CPU than the default)
    opt = torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, fused=device.type in ("cpu", "cuda"))
    coefficient_specs = sae.get_coefficients()
    total = cfg.total_steps
    stop = total if max_steps is None else min(total, max_steps)
    state = {"step": 0, "wall_time_s": 0.0, "history": [], "activation_scale": 1.0}
    steps_since_fired = torch.zeros(sae.cfg.d_sae, dtype=torch.long, device=device)
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt is not None and has_checkpoint(ckpt):
        state = load_checkpoint(ckpt, sae, opt)
        steps_since_fired = torch.tensor(state["steps_since_fired"], device=device)
    else:  # a fresh run: measure the input scale once (a resumed run restores it) and start from unit-norm
        # decoder rows (renormalising on resume would perturb the restored weights' last bits)
        if cfg.normalize_activations:
            state["activation_scale"] = estimate_activation_scale(source, min(cfg.batch_size, 4096))
        if cfg.decoder_unit_norm:
            _normalize_decoder(sae.W_dec.data)
    scale = state["activation_scale"]
    generator = torch.Generator().manual_seed(cfg.seed + 7919 * state["step"])

    bar = tqdm(range(state["step"], stop), initial=state["step"], total=total, disable=not progress,
               desc=f"train {sae.cfg.architecture()}")
    start = time.perf_counter() - state["wall_time_s"]
    sae.train()
    for step in bar:
        x = source.batch(step, cfg.batch_size).to(device) * scale
        stage = stage_at(step, cfg)
        coefficients = {k: coefficient_at(v, step, cfg.coefficient_warmup_steps) for k, v in coefficient_specs.items()}
        if stage is not None:
            coefficients |= stage.coefficients
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        step_input = TrainStepInput(sae_in=x, coefficients=coefficients, dead_neuron_mask=steps_since_fired > cfg.dead_window,
                                    n_training_steps=step, is_logging_step=False)
        if step_input_fn is not None:
            step_input = step_input_fn(step_input, step)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            out = sae.training_forward_pass(step_input)
        out.loss.backward()
        if cfg.decoder_unit_norm:
            _remove_parallel_grad(sae.W_dec)
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if cfg.decoder_unit_norm:
            _normalize_decoder(sae.W_dec.data)
        fired = fired_features(out.feature_acts.detach())
        steps_since_fired = torch.where(fired, 0, steps_since_fired + 1)
        if (cfg.resample_every and (step + 1) % cfg.resample_every == 0
                and step < cfg.resample_until_fraction * total):
            dead = steps_since_fired > cfg.dead_window
            resample_dead(sae, opt, dead, x, out.sae_out.detach(), generator, cfg.resample_encoder_scale)
            steps_since_fired[dead] = 0  # a fresh chance for the resampled; the rest keep their counts
        if (step + 1) % cfg.log_every == 0 or step + 1 == total:
            point = {"step": step + 1, "loss": out.loss.item(), **batch_metrics(out),
                     "dead_fraction": (steps_since_fired > cfg.dead_window).float().mean().item()}
            point |= {k: v.item() for k, v in out.losses.items()}
            state["history"].append(point)
            bar.set_postfix(L0=f"{point['l0']:.1f}", EV=f"{point['explained_variance']:.3f}")
        state["step"] = step + 1
        state["wall_time_s"] = time.perf_counter() - start
        if ckpt is not None and (state["step"] % cfg.checkpoint_every == 0 or state["step"] == stop):
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
                       activation_scale=scale)
