"""The steering methods compared, and how each picks what to steer with per topic and layer.

SAE features selected by activation on topic text (the largest mean code on topic text minus the mean over the other
classes' means: the usual way); by the topic input score and by the topic output score (over all features); the
paper's filter: the ``n_candidates`` activation-selected candidates in their order, skipping those whose (paper's)
output score is below the layer's median, "filtering out features with low output scores" (re-ranking the
candidates by output score instead picks features whose logit lens is function words, " is", " and", which any
prompt makes likely; and an absolute cut does not carry over from Gemma's 256k-token vocabulary to our 3.5k, where
layers' median output scores differ by orders of magnitude); DiffMean (mean activation on topic text minus the mean of the other classes'
means); a supervised vector trained by gradient to raise the likelihood of topic continuations; and prompting (a
topic sentence before the prompt).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from workbench import hooks
from workbench.analysis.judge import split_sentence, topic_sentences
from workbench.analysis.steering.engine import added_per_row, encode_prompts, model_device
from workbench.analysis.steering.layers import SteeringLayer

SAE_METHODS = ("sae_activation", "sae_input", "sae_output", "sae_output_filtered")
DIRECTION_METHODS = ("diffmean", "supervised")
METHODS = (*SAE_METHODS, *DIRECTION_METHODS, "prompting")
METHOD_NAMES = {
    "sae_activation": "SAE, selected by activation", "sae_input": "SAE, selected by input score",
    "sae_output": "SAE, selected by output score", "sae_output_filtered": "SAE, output score among activation-selected",
    "diffmean": "DiffMean", "supervised": "supervised vector", "prompting": "prompting", "unsteered": "unsteered",
}


def topic_continuations(topic: str, n: int, seed: int) -> list[str]:
    """``n`` continuations cut from sentences about ``topic`` (what a supervised vector learns to produce)."""
    rng = random.Random(f"continuations-{seed}-{topic}")
    return [split_sentence(s, rng)[1] for s in topic_sentences(topic, n, seed)]


def class_activations(model: torch.nn.Module, hook_names: Sequence[str], texts_by_class: dict[str, list[str]],
                      batch_size: int = 64) -> dict[str, dict[str, Float[Tensor, "n_tokens d_model"]]]:
    """Activations at each hook of every non-BOS token of each class's texts: ``{hook: {class: [n_tokens, d]}}``."""
    tok = model.tokenizer
    out: dict[str, dict[str, Tensor]] = {h: {} for h in hook_names}
    for name, texts in texts_by_class.items():
        seqs = encode_prompts(tok, texts)
        width = max(len(s) for s in seqs)
        tokens = torch.full((len(seqs), width), tok.bos_token_id, dtype=torch.long)
        for r, s in enumerate(seqs):
            tokens[r, :len(s)] = torch.tensor(s)
        cached = hooks.cache_activations(model, tokens, list(hook_names), batch_size=batch_size, progress=False)
        for h in hook_names:
            out[h][name] = cached[h]
    return out


def contrast(means: dict[str, Tensor], topics: Sequence[str]) -> Float[Tensor, "n_topics d"]:
    """For each topic, its mean minus the mean of the other classes' means (other topics and neutral text)."""
    names = list(means)
    stacked = torch.stack([means[c] for c in names])
    out = []
    for t in topics:
        others = [i for i, c in enumerate(names) if c != t]
        out.append(means[t] - stacked[others].mean(0))
    return torch.stack(out)


@torch.no_grad()
def mean_codes(dictionary, acts: Float[Tensor, "n d_model"], batch_size: int = 8192) -> Float[Tensor, " d_sae"]:
    """Mean code of each feature over ``acts``."""
    param = dictionary.W_dec
    total = torch.zeros(param.shape[0])
    for i in range(0, len(acts), batch_size):
        total += dictionary.encode(acts[i:i + batch_size].to(param.device, param.dtype)).float().sum(0).cpu()
    return total / max(len(acts), 1)


def select_features(layer: SteeringLayer, topics: Sequence[str], activation_contrast: Float[Tensor, "n_topics d_sae"],
                    n_candidates: int = 20) -> None:
    """Fill ``layer.features`` for the four SAE methods (see the module docstring) and ``layer.pools`` (the
    activation-selected candidates per topic). Ties go to the larger activation contrast; unscored features rank
    last. The paper's filter keeps the activation order and skips candidates whose output score is below the
    layer's median (all of them skipped: the first candidate)."""
    if n_candidates < 1:
        raise ValueError(f"n_candidates must be >= 1, got {n_candidates}")
    missing = [t for t in topics if t not in layer.input.by_topic or t not in layer.output.by_topic]
    if missing:
        raise ValueError(f"no topic scores for {missing}: compute the scores with topic_tokens=topic_word_ids(...)")

    def best(scores: Tensor, among: Tensor, contrast: Tensor) -> int:
        s = torch.nan_to_num(scores[among], nan=-1.0)
        tied = among[s == s.max()]
        return int(tied[contrast[tied].argmax()])

    everything = torch.arange(activation_contrast.shape[1])
    cut = float(np.nanmedian(layer.output.scores.numpy()))  # the filter drops the features below the layer's median
    layer.features = {m: {} for m in SAE_METHODS}
    layer.pools = {"activation": {}}
    for i, t in enumerate(topics):
        contrast = activation_contrast[i]
        candidates = contrast.topk(n_candidates).indices
        layer.pools["activation"][t] = candidates.tolist()
        layer.features["sae_activation"][t] = int(candidates[0])
        layer.features["sae_input"][t] = best(layer.input.by_topic[t], everything, contrast)
        layer.features["sae_output"][t] = best(layer.output.by_topic[t], everything, contrast)
        kept = candidates[torch.nan_to_num(layer.output.scores[candidates], nan=-1.0) >= cut]
        layer.features["sae_output_filtered"][t] = int(kept[0] if len(kept) else candidates[0])


def train_steering_vectors(model: torch.nn.Module, hook: str, prompts: Sequence[str],
                           continuations: dict[str, list[str]], steps: int = 60, lr: float = 0.05,
                           rows_per_topic: int = 8, seed: int = 0, progress: bool = True
                           ) -> Float[Tensor, "n_topics d_model"]:
    """One vector per topic, added at every non-BOS position of ``hook``, trained by Adam to raise the likelihood of
    the topic's ``continuations`` after the neutral ``prompts`` (cross-entropy on the continuation's tokens only;
    the model's weights stay frozen). Topics in the order of ``continuations``."""
    if not prompts or not continuations or any(not c for c in continuations.values()):
        raise ValueError("train_steering_vectors needs prompts and, for every topic, continuations")
    tok, device = model.tokenizer, model_device(model)
    rng = random.Random(seed)
    names = list(continuations)
    vectors = torch.zeros(len(names), model.cfg.d_model, device=device, requires_grad=True)
    optimiser = torch.optim.Adam([vectors], lr=lr)
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in frozen:
            p.requires_grad_(False)
        for _ in tqdm(range(steps), desc=f"supervised vectors {hook}", disable=not progress):
            rows, topic_idx = [], []
            for i, t in enumerate(names):
                for _ in range(rows_per_topic):
                    rows.append((rng.choice(list(prompts)), rng.choice(continuations[t])))
                    topic_idx.append(i)
            heads = encode_prompts(tok, [p for p, _ in rows])
            tails = [tok(c, add_special_tokens=False).input_ids for _, c in rows]
            width = max(len(h) + len(t) for h, t in zip(heads, tails, strict=True))
            tokens = torch.full((len(rows), width), tok.bos_token_id, dtype=torch.long)
            target = torch.zeros_like(tokens, dtype=torch.bool)
            for r, (h, t) in enumerate(zip(heads, tails, strict=True)):
                tokens[r, :len(h) + len(t)] = torch.tensor(h + t)
                target[r, len(h):len(h) + len(t)] = True
            tokens, target = tokens.to(device), target.to(device)
            with torch.enable_grad(), added_per_row(model, hook, vectors[topic_idx]):
                logits = model(tokens)[:, :-1].float()
                loss = torch.nn.functional.cross_entropy(logits[target[:, 1:]], tokens[:, 1:][target[:, 1:]])
                optimiser.zero_grad()
                loss.backward()
            optimiser.step()
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
    return vectors.detach().cpu()
