"""Steering during generation: per-row interventions (a feature's code amplified under the splice, or a direction
added) and the generation engines they run under.

Steering with feature ``f`` at factor ``c``: at every position but BOS, of the prompt and of each generated token,
``c x max_j a_j`` is added to feature ``f``'s code under the splice (error term kept), ``a`` being that position's
codes (the official addition; its KV cache reached the last prompt token and each generated token). A direction
``v`` (DiffMean, the supervised vector) adds ``c x s x v / |v|``, where ``s`` is the layer's mean over tokens of
``max_j a_j |W_dec[j]|`` (:func:`workbench.analysis.steering.layers.steering_scale`): the size of the largest
feature's contribution, so one factor grid suits both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from workbench import interventions
from workbench.generation import generate, generate_tokens


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's parameters."""
    return next(model.parameters()).device


def amplify(features: Int[Tensor, " batch"], factors: Float[Tensor, " batch"], skip_first: bool = False
            ) -> interventions.CodesEdit:
    """A codes edit adding ``factors[b] x max_j codes[b, pos, j]`` to feature ``features[b]`` of row ``b`` at every
    position, or with ``skip_first`` at every position but the first of a pass over several positions (BOS; a
    cached generation step's single position is a new token and is edited). A splice's ``positions`` limits where
    the edit is written."""

    def edit(codes: Tensor) -> Tensor:
        if len(codes) != len(features):
            raise ValueError(f"steering is set for {len(features)} rows but the batch has {len(codes)}")
        start = 1 if skip_first and codes.shape[1] > 1 else 0
        peak = codes[:, start:].max(-1).values
        rows = torch.arange(len(codes), device=codes.device)[:, None]
        f = features.to(codes.device)[:, None]
        pos = torch.arange(start, codes.shape[1], device=codes.device)[None, :]
        codes[rows, pos, f] = codes[rows, pos, f] + factors.to(codes.device, codes.dtype)[:, None] * peak
        return codes

    return edit


NON_BOS = "non-BOS"
"""Steering's default positions: every position but the first of a pass over several positions (BOS), and the one
position of a cached generation step (a new token), so a full pass and a KV-cached generation steer alike."""


@dataclass
class Steering:
    """Per-row steering at one hook: row ``b`` of a batch is steered by feature ``features[b]`` of ``dictionary``
    (its code gets ``factors[b] x max_j a_j`` under the splice, error term kept) or by ``directions[b]`` (adds
    ``factors[b] x scale x directions[b] / |directions[b]|``), at ``positions``: :data:`NON_BOS` (the default) or
    any :data:`workbench.interventions.Positions`."""

    hook: str
    factors: Float[Tensor, " batch"]
    features: Int[Tensor, " batch"] | None = None
    dictionary: object | None = None
    directions: Float[Tensor, "batch d_model"] | None = None
    scale: float = 1.0
    positions: interventions.Positions | str = NON_BOS

    def __post_init__(self) -> None:
        self.factors = torch.as_tensor(self.factors, dtype=torch.float32)
        if (self.features is None) == (self.directions is None):
            raise ValueError("Steering needs exactly one of features (with a dictionary) or directions")
        if self.features is not None and self.dictionary is None:
            raise ValueError("steering by features needs the dictionary they belong to (dictionary=...)")
        if isinstance(self.positions, str) and self.positions != NON_BOS:
            raise ValueError(f"positions must be {NON_BOS!r} or interventions.Positions, got {self.positions!r}")
        rows = self.features if self.features is not None else self.directions
        if len(rows) != len(self.factors):
            raise ValueError(f"got {len(self.factors)} factors for {len(rows)} rows of steering")

    def __len__(self) -> int:
        return len(self.factors)

    def select(self, rows: Sequence[int]) -> Steering:
        """The steering of a subset of rows, in that order."""
        idx = torch.as_tensor(list(rows), dtype=torch.long)
        return Steering(self.hook, self.factors[idx], None if self.features is None else self.features[idx],
                        self.dictionary, None if self.directions is None else self.directions[idx], self.scale,
                        self.positions)

    def applied(self, model: torch.nn.Module):
        """The intervention for a batch whose rows are this steering's rows (a context manager)."""
        dynamic = isinstance(self.positions, str)
        if self.features is not None:
            edit = amplify(self.features, self.factors, skip_first=dynamic)
            splice = interventions.Splice(self.dictionary, self.hook, edit=edit,
                                          positions=None if dynamic else self.positions)
            return interventions.spliced(model, splice)
        unit = self.directions.float() / self.directions.float().norm(dim=-1, keepdim=True).clamp_min(1e-8)
        return added_per_row(model, self.hook, self.factors[:, None] * self.scale * unit, self.positions)


def _row_mask(n_pos: int, positions: interventions.Positions | str, device: torch.device) -> Tensor:
    """``[pos]`` bool: where steering applies in a pass over ``n_pos`` positions."""
    mask = torch.zeros(n_pos, dtype=torch.bool, device=device)
    if isinstance(positions, str):  # NON_BOS
        mask[1 if n_pos > 1 else 0:] = True
    elif positions is None:
        mask[:] = True
    else:
        mask[positions if isinstance(positions, int | slice) else list(positions)] = True
    return mask


def added_per_row(model: torch.nn.Module, hook: str, vectors: Float[Tensor, "batch d_model"],
                  positions: interventions.Positions | str = NON_BOS):
    """Add ``vectors[b]`` to row ``b`` of the activation at ``hook`` at ``positions`` (:data:`NON_BOS` by default),
    for the duration of a ``with`` block (``interventions.added`` adds one vector to every row). Gradients flow into
    ``vectors``."""

    def add(act: Tensor, hook_point) -> Tensor:
        if len(act) != len(vectors):
            raise ValueError(f"steering is set for {len(vectors)} rows but the batch has {len(act)}")
        if vectors.shape[-1] != act.shape[-1]:
            raise ValueError(f"steering vectors have d={vectors.shape[-1]} but {hook} has d={act.shape[-1]}")
        mask = _row_mask(act.shape[1], positions, act.device)[None, :, None]
        return act + mask * vectors.to(act.device, act.dtype)[:, None, :]

    return interventions.hooked(model, [(hook, add)])


def encode_prompts(tokenizer, prompts: Sequence[str]) -> list[list[int]]:
    return [[tokenizer.bos_token_id] + tokenizer(p, add_special_tokens=False).input_ids for p in prompts]


ENGINES = ("cached", "full")
"""``"cached"``: Hugging Face ``generate`` on the bridge's model with its KV cache (each step runs one new position
through the hooks); ``"full"``: :func:`workbench.generation.generate_tokens`, one full forward pass per token. Under
:data:`NON_BOS` steering they agree token for token when greedy (tested); sampling draws differently."""


@torch.no_grad()
def generate_cached(model: torch.nn.Module, tokens: Int[Tensor, "batch pos"], max_new_tokens: int = 20,
                    temperature: float = 0.0, seed: int = 0, stop_token_id: int | None = None
                    ) -> Int[Tensor, "batch new"]:
    """New tokens after each row of ``tokens`` (rows of equal length) by Hugging Face ``generate`` with the KV cache,
    through the bridge's hooks: greedy when ``temperature`` is 0, else sampled from ``softmax(logits / temperature)``
    (no top-k or top-p) with the random state seeded by ``seed`` (the caller's random state is left as it was). A row
    that emits ``stop_token_id`` is padded with it afterwards."""
    device = model_device(model)
    pad = stop_token_id if stop_token_id is not None else model.tokenizer.bos_token_id
    sampling = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0) if temperature > 0 else \
        dict(do_sample=False)
    tokens = tokens.to(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        out = model.original_model.generate(
            tokens, attention_mask=torch.ones_like(tokens), max_new_tokens=max_new_tokens, min_new_tokens=0,
            eos_token_id=stop_token_id, pad_token_id=pad, use_cache=True, **sampling)
    new = out[:, tokens.shape[1]:].cpu()
    if new.shape[1] < max_new_tokens:  # every row stopped early: pad as generate_tokens does
        new = torch.cat([new, torch.full((len(new), max_new_tokens - new.shape[1]), pad)], dim=1)
    return new


def generate_steered(model: torch.nn.Module, prompts: Sequence[str], steering: Steering | None = None,
                     max_new_tokens: int = 20, temperature: float = 0.7, seed: int = 0, stop_at: str | None = ".",
                     batch_size: int = 64, engine: str = "cached") -> list[str]:
    """Continuations of ``prompts`` (text after the prompt, cut after ``stop_at``), row ``b`` steered by row ``b`` of
    ``steering`` (None: unsteered). Prompts are batched by token length, ``batch_size`` rows at a time, each batch
    seeded with ``seed``; ``engine`` is one of :data:`ENGINES`."""
    if len(prompts) == 0:
        raise ValueError("no prompts to continue: the prompt list is empty")
    if steering is not None and len(steering) != len(prompts):
        raise ValueError(f"steering has {len(steering)} rows but there are {len(prompts)} prompts")
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose from {ENGINES}")
    context = (lambda idx: steering.select(idx).applied(model)) if steering is not None else None
    return generate(model, prompts, max_new_tokens, temperature, seed, stop_at, batch_size=batch_size,
                    tokens_fn=generate_cached if engine == "cached" else generate_tokens, context=context)
