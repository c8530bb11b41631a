"""Input and output scores of SAE features (Arad, Mueller & Belinkov 2025), each for every feature of a dictionary
in one batched pass.

- **Logit lens** of feature ``f``: ``softmax(W_U . LN_final(W_dec[f]))``; ``T_f`` = its top 20 tokens. The final
  LayerNorm centres, normalises and scales by its weight; its bias is left out, since it adds the same logits to
  every feature (as :func:`workbench.analysis.features.logit_effects` does; Gemma's RMSNorm has no bias).
- **Input score**: over the feature's top-activating examples (sequences ranked by the feature's largest code in
  them; at most 100; a feature active in fewer than 10 is not scored), the share whose most-activating token is in
  ``T_f``. BOS positions never count (the official code's ``input_ids[1]`` skips Gemma's BOS).
- **Output score**: one forward pass on a neutral prompt; at its last position the SAE codes ``a`` get
  ``10 x max_j a_j`` added to feature ``f``, decoded with the error term kept (the splice); ``r`` = the best rank of
  any token of ``T_f`` in the next-token distribution (0 = top), and the score is
  ``(1 - r / |V|) * max_{t in T_f} p(t)``. The prompt is ``"From my experience, the"``: after the paper's
  ``"From my experience,"`` this world's model predicts `` the`` with probability 1.00 (every topic sentence goes on
  that way), so the score would only ask whether `` the`` is in ``T_f``; one word later the next token is open
  (adjectives and nouns of every topic, none above 0.02).
- **Topic scores**: the same two formulas with a topic's words in place of ``T_f``: the share of a feature's top
  examples that peak on a word of the topic, and how likely amplifying the feature makes the topic's words. The
  paper names a feature's concept by its logit lens; we know each concept's words, and in this small model the
  logit lens of a middle layer's features is mostly rare names.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from workbench import interventions
from workbench.analysis.steering.engine import amplify, model_device
from workbench.datasets import topics as topics_mod

NEUTRAL_PROMPT = "From my experience, the"
"""The output score's prompt: the official code's ``"From my experience,"`` and the word this world's model always
puts after it (see the module docstring)."""
PAPER_PROMPT = "From my experience,"
"""The official code's neutral prompt."""

LOGIT_LENS_K = 20
"""``|T_f|``: the logit lens's top tokens."""

AMPLIFICATION = 10.0
"""The output score adds this times the largest code at the prompt's last position."""

HIGH_OUTPUT_SCORE = 0.01
"""Our cut for a "high output score" feature in the per-layer shares (the notebook reports the whole distribution)."""

HIGH_INPUT_SCORE = 0.5
"""Our cut for a "high input score" feature: half of its top examples peak on one of its logit-lens tokens."""


def layer_of(hook_name: str) -> int | None:
    """The block index of a ``blocks.{l}...`` hook name (None for other hooks)."""
    parts = hook_name.split(".")
    return int(parts[1]) if parts[0] == "blocks" and len(parts) > 1 and parts[1].isdigit() else None


@torch.no_grad()
def logit_lens_top_tokens(model: torch.nn.Module, W_dec: Float[Tensor, "d_sae d_model"], k: int = LOGIT_LENS_K,
                          batch_size: int = 4096) -> Int[Tensor, "d_sae k"]:
    """``T_f`` for every feature: the ``k`` tokens of highest ``softmax(W_U . LN_final(W_dec[f]))`` (LayerNorm
    without its bias), most probable first."""
    W_U = model.W_U.float()
    ln = getattr(model.ln_final, "original_component", None)
    weight = getattr(ln, "weight", None)
    out = []
    for start in range(0, W_dec.shape[0], batch_size):
        d = W_dec[start:start + batch_size].float().to(W_U.device)
        d = d - d.mean(-1, keepdim=True)
        d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-8) * d.shape[-1] ** 0.5
        if weight is not None:
            d = d * weight.float()
        out.append((d @ W_U).topk(k, dim=-1).indices.cpu())
    return torch.cat(out)


@dataclass
class FeatureScores:
    """One score per feature of a dictionary (nan: not scored) and what computing them cost."""

    scores: Float[Tensor, " d_sae"]
    seconds_per_1000_features: float
    """Wall time of the batched pass per 1,000 features."""
    by_topic: dict[str, Tensor] = field(default_factory=dict)
    """The same score with each topic's words in place of ``T_f``: ``{topic: [d_sae]}``."""

    @property
    def n_scored(self) -> int:
        return int(torch.isfinite(self.scores).sum())

    def finite(self) -> np.ndarray:
        """The scores of the scored features."""
        s = self.scores.numpy()
        return s[np.isfinite(s)]


class TopExamples:
    """Running top-``n`` sequences per feature by the feature's largest code in the sequence, and the token there."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.values: Tensor | None = None
        self.tokens: Tensor | None = None

    def add(self, codes: Float[Tensor, "batch pos d_sae"], token_ids: Int[Tensor, "batch pos"]) -> None:
        peak, where = codes.max(dim=1)
        tok = token_ids.to(where.device).gather(1, where)
        if self.values is not None:
            peak, tok = torch.cat([self.values, peak]), torch.cat([self.tokens, tok])
        top = peak.topk(min(self.n, len(peak)), dim=0)
        self.values, self.tokens = top.values, tok.gather(0, top.indices)


def input_scores_from_examples(values: Float[Tensor, "n_ex d_sae"], tokens: Int[Tensor, "n_ex d_sae"],
                               top_tokens: Int[Tensor, "d_sae k"], min_examples: int = 10) -> Float[Tensor, " d_sae"]:
    """The input score from each feature's top examples (``values``: its largest code in each, ``tokens``: the
    token there): the share of examples where it is active whose token is in ``T_f``; nan when it is active in
    fewer than ``min_examples``."""
    active = values > 0
    hit = (tokens.T[:, :, None] == top_tokens[:, None, :].to(tokens.device)).any(-1).T
    n_active = active.sum(0)
    score = (hit & active).sum(0).float() / n_active.clamp_min(1)
    return torch.where(n_active >= min_examples, score, torch.nan).cpu()


def input_scores_from_codes(codes: Float[Tensor, "n_seq pos d_sae"], token_ids: Int[Tensor, "n_seq pos"],
                            top_tokens: Int[Tensor, "d_sae k"], n_examples: int = 100,
                            min_examples: int = 10) -> Float[Tensor, " d_sae"]:
    """Input scores of every feature from the codes of whole sequences (zero the codes at positions that must not
    count, e.g. BOS, before calling)."""
    top = TopExamples(n_examples)
    top.add(codes, token_ids)
    return input_scores_from_examples(top.values, top.tokens, top_tokens, min_examples)


@torch.no_grad()
def input_scores(model: torch.nn.Module, dictionary, hook: str, tokens: Int[Tensor, "n_seq pos"],
                 top_tokens: Int[Tensor, "d_sae k"], n_examples: int = 100, min_examples: int = 10,
                 batch_size: int = 32, progress: bool = True,
                 topic_tokens: dict[str, Tensor] | None = None) -> FeatureScores:
    """Input scores of every feature in one batched pass over ``tokens`` (sequences, each an example), BOS excluded;
    with ``topic_tokens`` (``{topic: token ids}``) also each topic's (its words in place of ``T_f``)."""
    if n_examples < min_examples or min_examples < 1:
        raise ValueError(f"need n_examples >= min_examples >= 1, got n_examples={n_examples}, min_examples={min_examples}")
    start, device = time.perf_counter(), model_device(model)
    layer = layer_of(hook)
    stop = layer + 1 if layer is not None and layer + 1 < model.cfg.n_layers else None
    bos = model.tokenizer.bos_token_id
    top = TopExamples(n_examples)
    for i in tqdm(range(0, len(tokens), batch_size), desc=f"input scores {hook}", disable=not progress):
        batch = tokens[i:i + batch_size].to(device)
        _, cache = model.run_with_cache(batch, names_filter=[hook], stop_at_layer=stop)
        codes = dictionary.encode(cache[hook].to(dictionary.W_dec.dtype))
        codes = codes.masked_fill((batch == bos)[..., None], 0.0)
        top.add(codes.float(), batch)
    scores = input_scores_from_examples(top.values, top.tokens, top_tokens, min_examples)
    by_topic = {t: input_scores_from_examples(top.values, top.tokens, ids.expand(len(scores), -1), min_examples)
                for t, ids in (topic_tokens or {}).items()}
    return FeatureScores(scores, (time.perf_counter() - start) / len(scores) * 1000, by_topic)


@torch.no_grad()
def next_token_top(model: torch.nn.Module, prompt: str, k: int = 3) -> list[tuple[str, float]]:
    """The ``k`` likeliest next tokens after ``prompt`` (BOS first) with their probabilities."""
    ids = [model.tokenizer.bos_token_id] + model.tokenizer(prompt, add_special_tokens=False).input_ids
    probs = model(torch.tensor([ids], device=model_device(model)))[0, -1].float().softmax(-1)
    top = probs.topk(k)
    return [(model.tokenizer.decode([i]), float(v)) for v, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)]


def output_score_from_probs(probs: Float[Tensor, "batch d_vocab"], top_tokens: Int[Tensor, "batch k"]
                            ) -> Float[Tensor, " batch"]:
    """``(1 - r / |V|) * max_{t in T_f} p(t)``, ``r`` the best rank (0 = top) of a token of ``T_f`` in ``probs``."""
    p_best = probs.gather(1, top_tokens.to(probs.device)).max(-1).values
    rank = (probs > p_best[:, None]).sum(-1)
    return (1 - rank.float() / probs.shape[-1]) * p_best


@torch.no_grad()
def output_scores(model: torch.nn.Module, dictionary, hook: str, top_tokens: Int[Tensor, "d_sae k"],
                  prompt: str = NEUTRAL_PROMPT, amplification: float = AMPLIFICATION, batch_size: int = 256,
                  progress: bool = True, topic_tokens: dict[str, Tensor] | None = None) -> FeatureScores:
    """Output scores of every feature: the prompt repeated once per feature, each row amplifying its feature at the
    last position under the splice (error term kept), in batches of ``batch_size`` features; with ``topic_tokens``
    also each topic's (its words in place of ``T_f``)."""
    start, device = time.perf_counter(), model_device(model)
    ids = [model.tokenizer.bos_token_id] + model.tokenizer(prompt, add_special_tokens=False).input_ids
    last = len(ids) - 1
    d_sae = top_tokens.shape[0]
    out, by_topic = [], {t: [] for t in topic_tokens or {}}
    for i in tqdm(range(0, d_sae, batch_size), desc=f"output scores {hook}", disable=not progress):
        features = torch.arange(i, min(i + batch_size, d_sae))
        factors = torch.full((len(features),), float(amplification))
        splice = interventions.Splice(dictionary, hook, edit=amplify(features, factors), positions=[last])
        with interventions.spliced(model, splice):
            probs = model(torch.tensor([ids] * len(features), device=device))[:, -1].float().softmax(-1)
        out.append(output_score_from_probs(probs, top_tokens[features]).cpu())
        for t, words in (topic_tokens or {}).items():
            by_topic[t].append(output_score_from_probs(probs, words.expand(len(features), -1)).cpu())
    return FeatureScores(torch.cat(out), (time.perf_counter() - start) / d_sae * 1000,
                         {t: torch.cat(v) for t, v in by_topic.items()})


def topic_word_ids(tokenizer, topics: Sequence[str]) -> dict[str, Int[Tensor, " k"]]:
    """The token ids of each topic's words."""
    return {t: torch.tensor(sorted({tokenizer(w, add_special_tokens=False).input_ids[0]
                                    for ws in topics_mod.TOPICS[t].values() for w in ws})) for t in topics}
