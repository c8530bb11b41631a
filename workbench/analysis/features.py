"""What features respond to and what they do: max-activating examples, logit-lens effects, and a
ground-truth interpretability score that only a synthetic world allows.

Every token of the synthetic world has a known category (first name, city, year digits, a topic's word,
punctuation...). A feature is *pure* when its top-activating tokens share one category; the mean purity
of a dictionary's features measures "more interpretable than PCA/ICA/random/neurons" instead of asserting it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from workbench.datasets import TOPICS, World
from workbench.datasets.topics import NEUTRAL_ADJS, NEUTRAL_NOUNS, NEUTRAL_VERBS

ENTITY_CATEGORIES = ("first", "middle", "last", "city", "university", "company", "major", "month")


def token_categories(world: World, tokenizer) -> dict[int, str]:
    """Ground-truth category of every token id the world uses (unlisted tokens are ``template``)."""
    categories: dict[int, str] = {}

    def put(word: str, category: str) -> None:
        ids = tokenizer(word, add_special_tokens=False).input_ids
        if len(ids) == 1 and ids[0] != tokenizer.unk_token_id:
            categories.setdefault(ids[0], category)

    for category in ENTITY_CATEGORIES:
        for word in world.vocab[category]:
            put(word, category)
    for topic, words in TOPICS.items():
        for ws in words.values():
            for w in ws:
                put(w, f"topic:{topic}")
    for w in NEUTRAL_NOUNS + NEUTRAL_VERBS + NEUTRAL_ADJS:
        put(w, "neutral")
    for n in range(100):
        tid = tokenizer.convert_tokens_to_ids(f"{n:02d}")
        categories[tid] = "two_digit"
        put(f"{n:02d}", "number")
        put(str(n), "number")
    for p in [".", ",", ":", "?", "'s"]:  # punctuation follows words without a space: look the piece up directly
        tid = tokenizer.convert_tokens_to_ids(p)
        if tid != tokenizer.unk_token_id:
            categories[tid] = "punctuation"
    nl = tokenizer.convert_tokens_to_ids("Ċ")
    if nl != tokenizer.unk_token_id:
        categories[nl] = "newline"
    return categories


@dataclass
class InterpretabilityScore:
    """Purity of each feature's top activations with respect to the ground-truth token categories."""

    purity: Tensor
    """``[n_scored]`` share of a feature's top-k tokens in its most common category."""
    category: list[str]
    """Each scored feature's most common category."""
    feature_index: Tensor
    """Which features were scored (those with at least k activations)."""

    @property
    def mean(self) -> float:
        return float(self.purity.mean()) if len(self.purity) else float("nan")

    def share_above(self, threshold: float = 0.9) -> float:
        return float((self.purity >= threshold).float().mean()) if len(self.purity) else float("nan")


@torch.no_grad()
def interpretability_score(codes: Float[Tensor, "n_tokens d_sae"], token_ids: Int[Tensor, " n_tokens"],
                           categories: dict[int, str], k: int = 20, both_signs: bool = False,
                           max_features: int | None = None, seed: int = 0) -> InterpretabilityScore:
    """Score features by the category purity of their ``k`` top-activating tokens.

    ``both_signs`` also scores each feature's most negative tokens and keeps the better of the two
    (fair to PCA/ICA/random directions, whose sign is arbitrary). ``max_features`` scores a random subset.
    """
    labels = np.array([categories.get(int(t), "template") for t in token_ids])
    n_feat = codes.shape[1]
    idx = torch.arange(n_feat)
    if max_features is not None and n_feat > max_features:
        idx = torch.randperm(n_feat, generator=torch.Generator().manual_seed(seed))[:max_features].sort().values
    purities, cats, kept = [], [], []
    for f in idx.tolist():
        col = codes[:, f].float()
        signs = (1, -1) if both_signs else (1,)
        best = (-1.0, "")
        for s in signs:
            vals, top = (s * col).topk(k)
            if (vals > 0).sum() < k:
                continue
            cat, count = Counter(labels[top.numpy()]).most_common(1)[0]
            best = max(best, (count / k, cat))
        if best[0] >= 0:
            purities.append(best[0])
            cats.append(best[1])
            kept.append(f)
    return InterpretabilityScore(torch.tensor(purities), cats, torch.tensor(kept, dtype=torch.long))


@torch.no_grad()
def top_activations(codes_f: Float[Tensor, " n_tokens"], k: int = 10) -> tuple[Tensor, Tensor]:
    """(values, token indices) of one feature's ``k`` largest activations."""
    return codes_f.float().topk(k)


@torch.no_grad()
def logit_effects(model, direction: Float[Tensor, " d_model"], k: int = 10,
                  apply_ln: bool = True) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """Logit lens of a residual direction: the tokens it promotes and suppresses most.

    ``W_U (LN_final(d))`` with the final LayerNorm's centring, normalisation and scale (not its bias,
    which would add the same vector to every direction) when ``apply_ln``.
    """
    d = direction.float().to(model.W_U.device)
    if apply_ln:
        ln = model.ln_final.original_component if hasattr(model.ln_final, "original_component") else None
        d = d - d.mean()
        d = d / d.norm().clamp_min(1e-8) * np.sqrt(d.numel())
        if ln is not None and getattr(ln, "weight", None) is not None:
            d = d * ln.weight.float()
    logits = d @ model.W_U.float()
    top = logits.topk(k)
    bottom = (-logits).topk(k)
    tok = model.tokenizer
    return ([(tok.decode([i]), v) for v, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)],
            [(tok.decode([i]), -v) for v, i in zip(bottom.values.tolist(), bottom.indices.tolist(), strict=True)])
