"""What features respond to and what they do: max-activating examples, logit-lens effects, and a
ground-truth interpretability score that only a synthetic world allows.

Every token of the synthetic world has known labels (its category: first name, city, year digits, a
topic's word...; its kind: person name, place...; its part of speech). A feature is *pure* when its
top-activating tokens share one label, more than chance would give; the mean chance-corrected purity of a
dictionary's features measures "more interpretable than PCA/ICA/random/neurons" instead of asserting it.
"""

from __future__ import annotations

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


KIND_OF_CATEGORY = {"first": "person name", "middle": "person name", "last": "person name", "city": "place",
                    "university": "organisation", "company": "organisation", "major": "field of study",
                    "month": "month", "neutral": "neutral word", "two_digit": "number", "number": "number",
                    "punctuation": "punctuation", "newline": "newline"}
"""The coarser ``kind`` facet: what sort of thing a category is (every topic's words are "topic word")."""


def token_labels(world: World, tokenizer) -> dict[str, dict[int, str]]:
    """Ground-truth labels of the world's tokens under three facets, so a feature counts as pure when its
    top activations agree on any one of them:

    - ``category``: first name, city, two-digit year, a topic's word (``topic:music``), punctuation...;
    - ``kind``: person name (first, middle or last), place, organisation, topic word, number...;
    - ``role``: noun, verb or adjective, for topic and neutral words.

    A token a facet does not label (a template word such as "born") is its own label there
    (``token:<id>``), so a feature that fires on one such word is pure and one that mixes them is not.
    """
    category = token_categories(world, tokenizer)
    kind = {t: ("topic word" if c.startswith("topic:") else KIND_OF_CATEGORY[c]) for t, c in category.items()}
    role: dict[int, str] = {}
    words_by_role = {"noun": [NEUTRAL_NOUNS], "verb": [NEUTRAL_VERBS], "adjective": [NEUTRAL_ADJS]}
    for words in TOPICS.values():
        for part, name in [("nouns", "noun"), ("verbs", "verb"), ("adjs", "adjective")]:
            words_by_role[name].append(words[part])
    for name, lists in words_by_role.items():
        for ws in lists:
            for w in ws:
                ids = tokenizer(w, add_special_tokens=False).input_ids
                if len(ids) == 1 and ids[0] != tokenizer.unk_token_id:
                    role.setdefault(ids[0], name)
    return {"category": category, "kind": kind, "role": role}


@dataclass
class InterpretabilityScore:
    """How pure each feature's top activations are with respect to ground-truth token labels."""

    purity: Tensor
    """``[n_scored]`` chance-corrected purity of each scored feature: ``(p - b) / (1 - b)`` where ``p`` is the
    share of its top-k tokens carrying its most common label and ``b`` that label's share of all tokens
    (0: no better than chance, 1: every top token carries the label), best over facets."""
    raw_purity: Tensor
    """``[n_scored]`` the share ``p`` itself (not corrected for chance), for the same label."""
    category: list[str]
    """Each scored feature's label (its most common one, on the facet that scored best)."""
    facet: list[str]
    """The facet that label belongs to."""
    sign: Tensor
    """``[n_scored]`` +1, or -1 where the feature's most negative tokens scored better (``both_signs``)."""
    feature_index: Tensor
    """Which features were scored (those with at least k activations)."""

    @property
    def mean(self) -> float:
        return float(self.purity.mean()) if len(self.purity) else float("nan")

    def share_above(self, threshold: float = 0.9) -> float:
        return float((self.purity >= threshold).float().mean()) if len(self.purity) else float("nan")


def _label_arrays(token_ids: Tensor, labels: dict[str, dict[int, str]] | dict[int, str]) -> dict[str, np.ndarray]:
    """Each facet's label of every token (a bare ``{token_id: label}`` map is the one facet ``category``)."""
    facets = labels if all(isinstance(v, dict) for v in labels.values()) else {"category": labels}
    ids = token_ids.tolist()
    return {facet: np.array([m.get(t, f"token:{t}") for t in ids]) for facet, m in facets.items()}


@torch.no_grad()
def interpretability_score(codes: Float[Tensor, "n_tokens d_sae"], token_ids: Int[Tensor, " n_tokens"],
                           labels: dict[str, dict[int, str]] | dict[int, str], k: int = 20, both_signs: bool = False,
                           max_features: int | None = None, seed: int = 0) -> InterpretabilityScore:
    """Score features by the chance-corrected label purity of their ``k`` top-activating tokens.

    ``labels``: facets as from ``token_labels`` (or one ``{token_id: label}`` map, a single facet). Chance
    correction matters: a direction whose top tokens are all of the commonest label is no discovery.
    ``both_signs`` also scores each feature's most negative tokens and keeps the better of the two (fair
    to PCA/ICA/random directions, whose sign is arbitrary). ``max_features`` scores a random subset.
    """
    encoded = {}
    for facet, names in _label_arrays(token_ids, labels).items():
        uniq, inverse = np.unique(names, return_inverse=True)
        encoded[facet] = (uniq, inverse, np.bincount(inverse, minlength=len(uniq)) / len(inverse))
    n_feat = codes.shape[1]
    idx = torch.arange(n_feat)
    if max_features is not None and n_feat > max_features:
        idx = torch.randperm(n_feat, generator=torch.Generator().manual_seed(seed))[:max_features].sort().values
    rows = []
    for f in idx.tolist():
        col = codes[:, f].float()
        candidates = []  # (corrected, raw, label, facet) for each sign and facet
        for s in (1, -1) if both_signs else (1,):
            vals, top = (s * col).topk(k)
            if (vals > 0).sum() < k:
                continue
            for facet, (uniq, inverse, base) in encoded.items():
                counts = np.bincount(inverse[top.numpy()], minlength=len(uniq))
                j = int(counts.argmax())
                raw = counts[j] / k
                corrected = (raw - base[j]) / (1 - base[j]) if base[j] < 1 else 0.0
                candidates.append((float(corrected), float(raw), str(uniq[j]), facet, s))
        if candidates:
            rows.append((*max(candidates), f))
    return InterpretabilityScore(purity=torch.tensor([r[0] for r in rows]), raw_purity=torch.tensor([r[1] for r in rows]),
                                 category=[r[2] for r in rows], facet=[r[3] for r in rows],
                                 sign=torch.tensor([r[4] for r in rows], dtype=torch.float),
                                 feature_index=torch.tensor([r[5] for r in rows], dtype=torch.long))


@torch.no_grad()
def explanation_purity(codes: Float[Tensor, "n_tokens d_sae"], token_ids: Int[Tensor, " n_tokens"],
                       labels: dict[str, dict[int, str]] | dict[int, str], score: InterpretabilityScore,
                       decoder_norms: Float[Tensor, " d_sae"] | None = None) -> float:
    """The share of each token's code that is carried by features whose label fits the token, averaged
    over tokens: the interpretability of the decomposition rather than of its features one by one.

    A feature's label is the one ``score`` gave it (from its top activations); its part of token t's code is
    ``|c_tf| * ||d_f||``, and it fits when t carries that label and the code has the feature's scored sign.
    Features ``score`` did not label (too rarely active) count as unexplained. A dense code spreads each
    token over many directions, most of which are about something else, so this rewards sparse and
    monosemantic dictionaries together, as Cunningham et al. argue they are.
    """
    names = _label_arrays(token_ids, labels)
    mass = codes.float().abs() * (1.0 if decoder_norms is None else decoder_norms.float()[None, :])
    fits = torch.zeros(len(token_ids))
    for f, label, facet, sign in zip(score.feature_index.tolist(), score.category, score.facet, score.sign.tolist(),
                                     strict=True):
        has_label = torch.from_numpy(names[facet] == label)
        agrees = (codes[:, f] * sign) > 0
        fits += torch.where(has_label & agrees, mass[:, f], 0.0)
    total = mass.sum(-1)
    return float((fits[total > 0] / total[total > 0]).mean())


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
