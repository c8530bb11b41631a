"""Text generation that interventions reach: greedy or seeded sampling, one full forward pass per new token.

Why not ``TransformerBridge.generate``: with its KV cache, each step after the first sees one position,
so a position-indexed intervention must know which step it is in; and with transformers 5.24 it returns
wrong continuations for our model. A full forward pass per token costs little at our lengths, keeps
every hook's positions those of the whole sequence (prompt and generated tokens alike), and is
checked token for token against Hugging Face's ``generate`` (tests). Interventions are context
managers around the call: ``with interventions.added(...): generate(model, prompts)``.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import torch
from jaxtyping import Int
from torch import Tensor


@torch.no_grad()
def generate_tokens(model: torch.nn.Module, tokens: Int[Tensor, "batch pos"], max_new_tokens: int = 20,
                    temperature: float = 0.0, seed: int = 0, stop_token_id: int | None = None,
                    ) -> Int[Tensor, "batch new"]:
    """New tokens after each row of ``tokens`` (rows of equal length), greedy when ``temperature`` is 0,
    else sampled from ``softmax(logits / temperature)`` with a generator seeded by ``seed``.

    A row that emits ``stop_token_id`` keeps it and is padded with it afterwards.
    """
    if tokens.dim() != 2:
        raise ValueError(f"tokens must be [batch, pos], got shape {tuple(tokens.shape)}")
    if max_new_tokens < 0 or temperature < 0:
        raise ValueError(f"need max_new_tokens >= 0 and temperature >= 0, got {max_new_tokens}, {temperature}")
    n_ctx = model.cfg.n_ctx
    if tokens.shape[1] + max_new_tokens > n_ctx:
        raise ValueError(f"prompt of {tokens.shape[1]} tokens + {max_new_tokens} new exceeds the model's context "
                         f"of {n_ctx}")
    device = next(model.parameters()).device
    seq = tokens.to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    done = torch.zeros(len(seq), dtype=torch.bool, device=device)
    for _ in range(max_new_tokens):
        logits = model(seq)[:, -1].float()
        if temperature == 0:
            nxt = logits.argmax(-1)
        else:
            nxt = torch.multinomial((logits / temperature).softmax(-1), 1, generator=generator).squeeze(-1)
        if stop_token_id is not None:
            nxt = torch.where(done, stop_token_id, nxt)
            done |= nxt == stop_token_id
        seq = torch.cat([seq, nxt[:, None]], dim=1)
        if done.all():
            break
    return seq[:, tokens.shape[1]:].cpu()


def stop_token_id(tokenizer, text: str) -> int:
    """The id of the token ``text`` as it ends a sentence (``"."`` in ``"... Paris."``): the vocabulary's own token
    for ``text`` when it has one, else the single token ``text`` encodes to.

    Encoding ``text`` alone is not enough: the embedded model's word-level tokenizer puts a space before any text it
    encodes, so ``"."`` encodes to ``" ."``, which is no token of its vocabulary (the unknown token, which generation
    never emits), while the period that ends a sentence is the token ``"."``. Byte-level tokenizers (GPT-2) name
    that token ``"."`` too."""
    direct = tokenizer.convert_tokens_to_ids(text)
    if direct is not None and direct != tokenizer.unk_token_id:
        return int(direct)
    ids = tokenizer(text, add_special_tokens=False).input_ids
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        raise ValueError(f"stop_at must be one token of the vocabulary, {text!r} encodes to {ids}; give a token "
                         "the model can emit, e.g. '.'")
    return int(ids[0])


def generate(model: torch.nn.Module, prompts: Sequence[str], max_new_tokens: int = 20, temperature: float = 0.0,
             seed: int = 0, stop_at: str | None = None, prepend_bos: bool = True, batch_size: int | None = None,
             tokens_fn: Callable[..., Tensor] | None = None,
             context: Callable[[list[int]], AbstractContextManager] | None = None) -> list[str]:
    """Continuations of ``prompts`` (text only, prompt excluded), batched by prompt length (at most ``batch_size``
    rows at a time when given); cut after the first ``stop_at`` token (e.g. ``"."``, see :func:`stop_token_id`)
    when given. Seeded: the same call gives the same text. ``tokens_fn`` (default :func:`generate_tokens`, same
    arguments) makes each batch's new tokens; ``context(rows)``, when given, is entered around each batch with the
    indices of its prompts (e.g. a per-row steering intervention)."""
    tokenizer = model.tokenizer
    tokens_fn = generate_tokens if tokens_fn is None else tokens_fn
    stop_id = None if stop_at is None else stop_token_id(tokenizer, stop_at)
    encoded = [([tokenizer.bos_token_id] if prepend_bos else []) + tokenizer(p, add_special_tokens=False).input_ids
               for p in prompts]
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, ids in enumerate(encoded):
        by_length[len(ids)].append(i)
    out: list[str] = [""] * len(prompts)
    for group in by_length.values():
        step = batch_size or len(group)
        for start in range(0, len(group), step):
            idx = group[start:start + step]
            with context(idx) if context is not None else contextlib.nullcontext():
                new = tokens_fn(model, torch.tensor([encoded[i] for i in idx]), max_new_tokens, temperature, seed,
                                stop_id)
            for row, i in enumerate(idx):
                ids = new[row].tolist()
                if stop_id is not None and stop_id in ids:
                    ids = ids[:ids.index(stop_id) + 1]
                out[i] = tokenizer.decode(ids)
    return out
