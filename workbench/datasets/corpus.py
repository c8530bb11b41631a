"""Token sequences from the synthetic world's training mix, for caching activations.

Documents of every kind are shuffled, BOS-separated and packed into rows that each start with BOS, the
way the embedded model saw its training text.
"""

from __future__ import annotations

import random

import torch
from jaxtyping import Int
from torch import Tensor

from workbench.datasets.world import World


def token_sequences(world: World, tokenizer, n_sequences: int, seq_len: int = 128, seed: int = 0) -> Int[Tensor, "n seq"]:
    """``n_sequences`` rows of ``seq_len`` tokens (BOS first), drawn from the shuffled training documents."""
    if n_sequences < 1 or seq_len < 2:
        raise ValueError(f"need n_sequences >= 1 and seq_len >= 2, got {n_sequences}, {seq_len}")
    docs = [text for _, text in world.training_documents()]
    random.Random(seed).shuffle(docs)
    bos = tokenizer.bos_token_id
    body = seq_len - 1
    flat: list[int] = []
    for start in range(0, len(docs), 512):
        for ids in tokenizer(docs[start:start + 512], add_special_tokens=False).input_ids:
            flat += [bos, *ids]
        if len(flat) >= n_sequences * body:
            break
    if len(flat) < n_sequences * body:
        raise ValueError(f"the world has only {len(flat) // body} sequences of {seq_len} tokens; asked for {n_sequences}")
    rows = torch.tensor(flat[: n_sequences * body]).reshape(n_sequences, body)
    return torch.cat([torch.full((n_sequences, 1), bos), rows], dim=1)
