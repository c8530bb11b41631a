"""Token sequences from the synthetic world's training mix: one packing of documents for training the
embedded model and for caching activations.

Documents are shuffled under a seed, each is preceded by BOS, and the stream is cut into rows, the way
the embedded model saw its training text.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from workbench.datasets.world import World

_TOKENIZE_CHUNK = 512
"""Documents tokenized per call, so packing a few rows does not tokenize the whole corpus."""


def pack_documents(texts: Sequence[str], tokenizer, row_len: int, seed: int,
                   max_rows: int | None = None) -> Int[np.ndarray, "n_rows row_len"]:
    """Shuffle ``texts`` (``random.Random(seed)``), tokenize them, join them as ``BOS doc BOS doc ...`` and cut
    the stream into rows of ``row_len`` tokens; the tail that does not fill a row is dropped.

    ``max_rows`` stops tokenizing once that many rows are full (and returns at most that many). A row
    starts wherever the stream falls, mid-document included: the model learns from every position.
    """
    if row_len < 1:
        raise ValueError(f"row_len must be >= 1, got {row_len}")
    docs = list(texts)
    random.Random(seed).shuffle(docs)
    bos = tokenizer.bos_token_id
    needed = None if max_rows is None else max_rows * row_len
    chunks: list[np.ndarray] = []
    n_tokens = 0
    for start in range(0, len(docs), _TOKENIZE_CHUNK):
        ids = tokenizer(docs[start:start + _TOKENIZE_CHUNK], add_special_tokens=False).input_ids
        chunks.append(np.fromiter((t for doc in ids for t in (bos, *doc)), dtype=np.int32))
        n_tokens += len(chunks[-1])
        if needed is not None and n_tokens >= needed:
            break
    flat = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int32)
    n_rows = len(flat) // row_len if max_rows is None else min(max_rows, len(flat) // row_len)
    return flat[: n_rows * row_len].reshape(n_rows, row_len)


def token_sequences(world: World, tokenizer, n_sequences: int, seq_len: int = 128,
                    seed: int = 0) -> Int[Tensor, "batch pos"]:
    """``n_sequences`` rows of ``seq_len`` tokens, each starting with BOS (as a model's context does), drawn from
    the shuffled training documents (each kind once)."""
    if n_sequences < 1 or seq_len < 2:
        raise ValueError(f"need n_sequences >= 1 and seq_len >= 2, got {n_sequences}, {seq_len}")
    texts = [text for _, text in world.training_documents()]
    rows = pack_documents(texts, tokenizer, seq_len - 1, seed, max_rows=n_sequences)
    if len(rows) < n_sequences:
        raise ValueError(f"the world has only {len(rows)} sequences of {seq_len} tokens; asked for {n_sequences}")
    bos = np.full((n_sequences, 1), tokenizer.bos_token_id, dtype=rows.dtype)
    return torch.from_numpy(np.concatenate([bos, rows], axis=1)).long()
