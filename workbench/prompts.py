"""Prompts as one type, and the metrics every notebook reads off them.

A :class:`PromptBatch` holds IOI, greater-than, QA or topic prompts alike: right-padded tokens with each
row's length (so the position that matters, the last prompt token, is known), answer and foil token ids,
optional counterfactual prompts and labels. Right padding is exact for a causal model with absolute
positions: a pad after the last token cannot change the logits at or before it.

Metrics are free functions of logits at the final positions: logit difference (IOI), Hanna et al.'s
greater-than probability difference, and the KL divergence to a reference run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
from jaxtyping import Float, Int
from torch import Tensor

from workbench.tokenizer import encode_strict

LogitsFn = Callable[[Int[Tensor, "batch pos"]], Float[Tensor, "batch pos d_vocab"]]


@dataclass(frozen=True)
class PromptBatch:
    """Prompts of any lengths, right-padded, with what the metrics need about each."""

    tokens: Int[Tensor, "batch pos"]
    """Prompt tokens (BOS first when the batch was built with it), right-padded with ``pad_id``."""
    lengths: Int[Tensor, " batch"]
    """Tokens per prompt before the padding."""
    answer_ids: Int[Tensor, " batch"] | None = None
    """First token of the right answer (IOI: the indirect object)."""
    foil_ids: Int[Tensor, " batch"] | None = None
    """First token of the wrong answer the metric compares with (IOI: the subject)."""
    counterfactual: PromptBatch | None = None
    """The same prompts with one thing changed (e.g. another indirect object), for patching."""
    labels: dict[str, Tensor] = field(default_factory=dict)
    """Per-prompt labels, e.g. the relation id of a QA prompt or the start year of a greater-than one."""
    pad_id: int = 0

    def __post_init__(self) -> None:
        n = self.tokens.shape[0]
        for name in ("lengths", "answer_ids", "foil_ids"):
            value = getattr(self, name)
            if value is not None and value.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},) for {n} prompts, got {tuple(value.shape)}")
        for name, value in self.labels.items():
            if len(value) != n:
                raise ValueError(f"label {name!r} has {len(value)} values for {n} prompts")
        if self.counterfactual is not None and len(self.counterfactual) != n:
            raise ValueError(f"counterfactual batch has {len(self.counterfactual)} prompts, expected {n}")

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def final_positions(self) -> Int[Tensor, " batch"]:
        """The last prompt token of each row: where the next-token prediction is read."""
        return self.lengths - 1

    @classmethod
    def from_token_lists(cls, seqs: Sequence[Sequence[int]], pad_id: int = 0, **fields) -> PromptBatch:
        """Right-pad token lists into a batch; ``fields`` are passed on (answer_ids, labels, ...)."""
        if not seqs:
            raise ValueError("a PromptBatch needs at least one prompt")
        width = max(len(s) for s in seqs)
        tokens = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        for i, s in enumerate(seqs):
            tokens[i, :len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        return cls(tokens, torch.tensor([len(s) for s in seqs]), pad_id=pad_id, **fields)

    @classmethod
    def from_texts(cls, tokenizer, prompts: Sequence[str], answers: Sequence[str] | None = None,
                   foils: Sequence[str] | None = None, counterfactuals: Sequence[str] | None = None,
                   labels: dict[str, Tensor] | None = None, prepend_bos: bool = True) -> PromptBatch:
        """Tokenize prompts (an unknown word raises, naming it); answers and foils keep their first token."""
        def encode(texts: Sequence[str]) -> list[list[int]]:
            bos = [tokenizer.bos_token_id] if prepend_bos else []
            return [bos + encode_strict(tokenizer, t) for t in texts]

        def first_ids(texts: Sequence[str] | None) -> Tensor | None:
            return None if texts is None else torch.tensor([encode_strict(tokenizer, t)[0] for t in texts])

        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        cf = None if counterfactuals is None else cls.from_token_lists(encode(counterfactuals), pad)
        return cls.from_token_lists(encode(prompts), pad, answer_ids=first_ids(answers), foil_ids=first_ids(foils),
                                    counterfactual=cf, labels=dict(labels or {}))

    def select(self, index: Tensor | Sequence[int]) -> PromptBatch:
        """The prompts at ``index`` (a subset, or a new order)."""
        index = torch.as_tensor(index, dtype=torch.long)
        pick = (lambda t: None if t is None else t[index])  # noqa: E731
        return replace(self, tokens=self.tokens[index], lengths=self.lengths[index], answer_ids=pick(self.answer_ids),
                       foil_ids=pick(self.foil_ids), labels={k: v[index] for k, v in self.labels.items()},
                       counterfactual=None if self.counterfactual is None else self.counterfactual.select(index))

    @torch.no_grad()
    def final_logits(self, logits_fn: LogitsFn, device: torch.device | str = "cpu",
                     batch_size: int = 256) -> Float[Tensor, "batch d_vocab"]:
        """Next-token logits at each prompt's last token (run in chunks on ``device``), returned on the CPU."""
        out = []
        for start in range(0, len(self), batch_size):
            chunk = self.select(range(start, min(start + batch_size, len(self))))
            width = int(chunk.lengths.max())
            logits = logits_fn(chunk.tokens[:, :width].to(device))
            out.append(logits[torch.arange(len(chunk)), chunk.final_positions.to(logits.device)].float().cpu())
        return torch.cat(out)


def logit_diff(final_logits: Float[Tensor, "batch d_vocab"], batch: PromptBatch) -> Float[Tensor, " batch"]:
    """``logit(answer) - logit(foil)`` per prompt (IOI: indirect object minus subject)."""
    if batch.answer_ids is None or batch.foil_ids is None:
        raise ValueError("logit_diff needs a PromptBatch with answer_ids and foil_ids")
    rows = torch.arange(len(batch))
    return final_logits[rows, batch.answer_ids] - final_logits[rows, batch.foil_ids]


def greater_than_prob_diff(final_logits: Float[Tensor, "batch d_vocab"], year_ids: Sequence[int],
                           start_years: Int[Tensor, " batch"]) -> Float[Tensor, " batch"]:
    """Hanna et al.: with the softmax restricted to the 100 two-digit year tokens ``year_ids`` ("00".."99"),
    ``sum_{y > YY} p(y) - sum_{y <= YY} p(y)`` per prompt, where YY is its start year."""
    if len(year_ids) != 100:
        raise ValueError(f"year_ids must list the 100 tokens 00..99, got {len(year_ids)}")
    probs = final_logits[:, list(year_ids)].float().softmax(-1)
    above = torch.arange(100, device=probs.device)[None, :] > start_years.to(probs.device)[:, None]
    return (probs * above).sum(-1) - (probs * ~above).sum(-1)


def kl_divergence(reference_logits: Float[Tensor, "*batch d_vocab"], logits: Float[Tensor, "*batch d_vocab"],
                  ) -> Float[Tensor, "*batch"]:
    """``KL(reference || other)`` of the next-token distributions, per position given (e.g. the final ones):
    how far a patched run is from the reference run it should match."""
    if reference_logits.shape != logits.shape:
        raise ValueError(f"logits of shape {tuple(logits.shape)} do not match the reference {tuple(reference_logits.shape)}")
    ref = reference_logits.float().log_softmax(-1)
    return (ref.exp() * (ref - logits.float().log_softmax(-1))).sum(-1)
