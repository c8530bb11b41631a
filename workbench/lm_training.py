"""Train the embedded model: a small Hugging Face GPT-2 learned from scratch on the synthetic world.

Deterministic under a seed, with a tqdm bar (loss, tokens/s), periodic checkpoints in safetensors and
exact resume: a run stopped mid-way and restarted from its last checkpoint reaches the same weights as an
uninterrupted one (the data order is a pure function of the seed and the step).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Int
from tqdm.auto import tqdm
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from workbench import behaviours
from workbench.checkpoints import has_checkpoint, load_checkpoint, save_checkpoint
from workbench.datasets import World
from workbench.datasets.corpus import pack_documents
from workbench.models import default_device
from workbench.tokenizer import build_tokenizer

log = logging.getLogger(__name__)

DOCUMENT_KINDS = ("biography", "qa", "question", "language", "ioi", "greater_than", "topic")
"""Kinds of training document ``World.training_documents`` yields (``question`` and ``language`` only when
the world's config enables them)."""


@dataclass(frozen=True)
class LMTrainConfig:
    """Model shape, data mix and optimisation of the embedded model."""

    n_layer: int = 6
    """Transformer blocks (at least 6, so layer sweeps have a shape)."""
    d_model: int = 256
    """Residual stream width."""
    n_head: int = 8
    """Attention heads per block."""
    seq_len: int = 128
    """Tokens per packed training sequence (and the model's context)."""
    batch_size: int = 32
    """Sequences per optimiser step."""
    lr: float = 2e-3
    """Peak learning rate (AdamW)."""
    min_lr_ratio: float = 0.05
    """Final learning rate as a fraction of the peak (cosine decay)."""
    warmup_steps: int = 100
    """Linear warm-up steps."""
    weight_decay: float = 0.1
    """Decoupled weight decay, on matrices only."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    grad_clip: float = 1.0
    """Gradient-norm clipping."""
    epochs_per_kind: dict[str, float] = field(default_factory=lambda: {
        "biography": 10, "qa": 12, "question": 1, "language": 1, "ioi": 1, "greater_than": 4, "topic": 1})
    """Passes over each kind of training document; a fraction takes a prefix of that kind's documents (a kind
    not listed gets one pass). About 13.5M tokens at full scale: biographies 2.9M, QA 1.2M, questions 2.8M,
    language 0.5M, IOI 1.9M, greater-than 3.7M, topics 0.6M. (A first v2 run with IOI 1.5 and greater-than 2.5
    passes reached unseen-template QA 1.00 but greater-than prob diff only 0.50: IOI had margin to give.)"""
    seed: int = 0
    """Seeds the weights and the data order."""
    bf16: bool = True
    """bfloat16 autocast for matmuls (fast on CPUs with AMX/AVX-512 bf16 and on GPUs); weights stay fp32."""
    compile: bool = False
    """``torch.compile`` the model (faster steps after a minute of compiling)."""
    checkpoint_every: int = 500
    """Steps between checkpoints (for resume)."""
    eval_every: int = 500
    """Steps between learning-curve evaluations (held-out loss and a quick QA accuracy)."""

    def __post_init__(self) -> None:
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_head={self.n_head}")
        unknown = set(self.epochs_per_kind) - set(DOCUMENT_KINDS)
        if unknown:
            raise ValueError(f"epochs_per_kind has unknown kinds {sorted(unknown)}")

    @classmethod
    def for_scale(cls, scale: str) -> LMTrainConfig:
        if scale == "full":
            return cls(compile=True)
        if scale == "smoke":
            return cls(n_layer=2, d_model=64, n_head=2, seq_len=64, batch_size=8, warmup_steps=5,
                       epochs_per_kind={"biography": 2, "qa": 2, "question": 1, "language": 1, "ioi": 1,
                                        "greater_than": 1, "topic": 1},
                       checkpoint_every=10, eval_every=20)
        raise ValueError(f"unknown scale {scale!r}; choose 'full' or 'smoke'")

    def lr_at(self, step: int, total_steps: int) -> float:
        """Learning rate at ``step`` of ``total_steps``: linear warm-up to ``lr``, then cosine decay to
        ``min_lr_ratio * lr`` at the last step."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, total_steps - self.warmup_steps)
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def token_stream(world: World, tokenizer: PreTrainedTokenizerFast,
                 cfg: LMTrainConfig) -> Int[np.ndarray, "n_sequences seq_len"]:
    """All training documents, each kind repeated per ``epochs_per_kind``, shuffled under ``cfg.seed`` and
    packed BOS-separated into rows of ``seq_len`` tokens (:func:`~workbench.datasets.corpus.pack_documents`).

    The rows are a pure function of the world and the config: exact resume and the committed model's
    training data depend on it.
    """
    docs_by_kind: dict[str, list[str]] = {}
    for kind, text in world.training_documents():
        docs_by_kind.setdefault(kind, []).append(text)
    docs: list[str] = []
    for kind, texts in docs_by_kind.items():
        epochs = cfg.epochs_per_kind.get(kind, 1)
        whole, frac = int(epochs), epochs - int(epochs)
        docs += texts * whole + texts[: round(frac * len(texts))]
    return pack_documents(docs, tokenizer, cfg.seq_len, cfg.seed)


def new_model(cfg: LMTrainConfig, tokenizer: PreTrainedTokenizerFast) -> GPT2LMHeadModel:
    torch.manual_seed(cfg.seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=cfg.seq_len, n_embd=cfg.d_model,
                        n_layer=cfg.n_layer, n_head=cfg.n_head, resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    return GPT2LMHeadModel(config)


def run_fingerprint(world: World, cfg: LMTrainConfig) -> str:
    """A short hash of everything that determines a run, so a checkpoint is never resumed by another run."""
    payload = json.dumps({"world": world.config.to_dict(), "train": asdict(cfg)}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def make_optimizer(model: torch.nn.Module, cfg: LMTrainConfig) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=cfg.betas)


@dataclass
class TrainState:
    """What a checkpoint holds besides the weights."""

    fingerprint: str = ""
    step: int = 0
    tokens_seen: int = 0
    wall_time_s: float = 0.0
    history: list[dict] = field(default_factory=list)


def train_lm(world: World, cfg: LMTrainConfig, out_dir: Path, checkpoint_dir: Path, max_steps: int | None = None,
             device: torch.device | None = None, progress: bool = True) -> tuple[GPT2LMHeadModel, PreTrainedTokenizerFast, TrainState]:
    """Train (or resume) and save the model to ``out_dir`` in Hugging Face format with ``metadata.json``.

    ``max_steps`` stops early (leaving a checkpoint to resume from); ``None`` trains to the end.
    """
    device = device or default_device()
    tokenizer = build_tokenizer(world.all_texts())
    data = torch.from_numpy(token_stream(world, tokenizer, cfg))
    total_steps = len(data) // cfg.batch_size
    model = new_model(cfg, tokenizer).to(device)
    opt = make_optimizer(model, cfg)
    fingerprint = run_fingerprint(world, cfg)
    state = TrainState(fingerprint=fingerprint)
    if has_checkpoint(checkpoint_dir):
        state = TrainState(**load_checkpoint(checkpoint_dir, model, opt))
        if state.fingerprint != fingerprint:
            raise ValueError(
                f"the checkpoint in {checkpoint_dir} belongs to a run with another configuration or data set "
                f"({state.fingerprint} != {fingerprint}); delete that folder to train from scratch, or pass "
                "another checkpoint directory")
        log.info("resumed from %s at step %d", checkpoint_dir, state.step)
    step_fn = torch.compile(model) if cfg.compile else model
    heldout = behaviours.heldout_texts(world, n=100)
    stop = total_steps if max_steps is None else min(total_steps, max_steps)
    bar = tqdm(range(state.step, stop), initial=state.step, total=total_steps, disable=not progress, desc="train LM")
    start = time.perf_counter() - state.wall_time_s
    model.train()
    for step in bar:
        batch = data[step * cfg.batch_size:(step + 1) * cfg.batch_size].to(device, torch.long)
        for group in opt.param_groups:
            group["lr"] = cfg.lr_at(step, total_steps)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            loss = step_fn(batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        state.step = step + 1
        state.tokens_seen += batch.numel()
        state.wall_time_s = time.perf_counter() - start
        bar.set_postfix(loss=f"{loss.item():.3f}", tok_s=f"{state.tokens_seen / max(state.wall_time_s, 1e-9):.0f}")
        if state.step % cfg.eval_every == 0 or state.step == total_steps:
            state.history.append(_curve_point(model, tokenizer, world, heldout, state, loss.item(), device))
            model.train()
        if state.step % cfg.checkpoint_every == 0 or state.step == stop:
            save_checkpoint(checkpoint_dir, model, opt, asdict(state))
    model.eval()
    if state.step == total_steps:
        save_model(model, tokenizer, out_dir, world, cfg, state, total_steps)
    return model, tokenizer, state


@torch.no_grad()
def _curve_point(model, tokenizer, world, heldout, state: TrainState, train_loss: float, device) -> dict:
    model.eval()
    fn = behaviours.logits_fn_of(model)
    losses = behaviours.heldout_loss(fn, tokenizer, heldout, device, max_len=model.config.n_positions)
    qa = behaviours.qa_accuracy(fn, tokenizer, world, "heldout_train_template", device, limit=300)
    point = {"step": state.step, "tokens_seen": state.tokens_seen, "wall_time_s": round(state.wall_time_s, 1),
             "train_loss": train_loss, "heldout_loss": {k: v["loss"] for k, v in losses.items()},
             "qa_heldout_train_template": qa["all"]}
    log.info("step %d: %s", state.step, point)
    return point


def save_model(model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerFast, out_dir: Path, world: World,
               cfg: LMTrainConfig, state: TrainState, total_steps: int) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    from workbench.versions import package_versions

    meta = {
        "architecture": "GPT2LMHeadModel",
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "training": asdict(cfg),
        "world": world.config.to_dict(),
        "held_out": world.held_out(),
        "data_seed": world.config.seed,
        "steps": state.step,
        "total_steps": total_steps,
        "tokens_seen": state.tokens_seen,
        "wall_time_s": round(state.wall_time_s, 1),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "device": str(next(model.parameters()).device)},
        "history": state.history,
        "produced_by": "workbench train-model (notebook 02_train_model with retrain=True)",
        "versions": package_versions(),
    }
    (out_dir / "metadata.json").write_text(json.dumps(meta, indent=1))
