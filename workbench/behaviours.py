"""Measure the behaviours the papers study, on prompts held out from training.

Works on any causal LM given as ``logits_fn(tokens) -> logits`` (a ``TransformerBridge`` or a Hugging
Face model through :func:`logits_fn_of`), so the same numbers are computed during training and in the
notebooks. Next-token metrics read a right-padded ``PromptBatch`` at each prompt's last token; whole-answer
QA accuracy batches prompts of equal length.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from workbench import hooks
from workbench.datasets import RELATIONS, World
from workbench.datasets import greater_than as gt
from workbench.datasets import topics as topics_mod
from workbench.datasets.biographies import make_biographies
from workbench.generation import generate
from workbench.prompts import LogitsFn, PromptBatch, greater_than_prob_diff, logit_diff
from workbench.tokenizer import encode_strict


def logits_fn_of(model: torch.nn.Module) -> LogitsFn:
    """Wrap a ``TransformerBridge`` or a Hugging Face causal LM as ``tokens -> logits``."""
    def fn(tokens: Tensor) -> Tensor:
        out = model(tokens)
        return out if isinstance(out, Tensor) else out.logits
    return fn


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _by_length(seqs: Sequence[list[int]]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = defaultdict(list)
    for i, s in enumerate(seqs):
        groups[len(s)].append(i)
    return groups


@torch.no_grad()
def answer_correct(logits_fn: LogitsFn, prompts: Sequence[list[int]], answers: Sequence[list[int]],
                   device: torch.device, batch_size: int = 256) -> np.ndarray:
    """Whether greedy decoding after each prompt reproduces the whole answer.

    Teacher-forced argmax at every answer position is equivalent to greedy decoding of the answer's
    length, and takes one forward pass.
    """
    if len(prompts) != len(answers):
        raise ValueError(f"got {len(prompts)} prompts but {len(answers)} answers")
    seqs = [p + a[:-1] for p, a in zip(prompts, answers, strict=True)]
    correct = np.zeros(len(seqs), dtype=bool)
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, (p, a) in enumerate(zip(prompts, answers, strict=True)):
        groups[(len(p), len(a))].append(i)
    for (n_prompt, n_answer), idx in groups.items():
        for k in range(0, len(idx), batch_size):
            chunk = idx[k:k + batch_size]
            logits = logits_fn(torch.tensor([seqs[i] for i in chunk], device=device))
            pred = logits[:, n_prompt - 1:n_prompt - 1 + n_answer].argmax(-1).cpu()
            target = torch.tensor([answers[i] for i in chunk])
            correct[chunk] = (pred == target).all(-1).numpy()
    return correct


def _bos(tokenizer) -> list[int]:
    return [tokenizer.bos_token_id]


def qa_accuracy(logits_fn: LogitsFn, tokenizer, world: World, split: str, device: torch.device,
                limit: int | None = None) -> dict[str, float]:
    """Whole-answer greedy accuracy on a QA split, overall and per relation."""
    examples = world.qa_split(split)[:limit]
    prompts = [_bos(tokenizer) + encode_strict(tokenizer, q.prompt) for q in examples]
    answers = [encode_strict(tokenizer, q.answer) for q in examples]
    correct = answer_correct(logits_fn, prompts, answers, device)
    result = {"all": float(correct.mean())}
    for r in RELATIONS:
        mask = np.array([q.relation == r for q in examples])
        if mask.any():
            result[r] = float(correct[mask].mean())
    return result


def ioi_prompts(world: World, tokenizer) -> PromptBatch:
    """The IOI evaluation prompts (names seen in biographies, never in IOI text): answer = indirect object,
    foil = subject, counterfactual = the same prompt with another indirect object."""
    prompts = world.ioi_eval
    return PromptBatch.from_texts(tokenizer, [p.prompt for p in prompts], answers=[p.io for p in prompts],
                                  foils=[p.s for p in prompts], counterfactuals=[p.counterfactual_prompt for p in prompts],
                                  labels={"template_id": torch.tensor([p.template_id for p in prompts])})


def ioi_metrics(logits_fn: LogitsFn, tokenizer, world: World, device: torch.device) -> dict[str, float | list]:
    """IO-vs-S logit difference and accuracies on IOI prompts whose names never occur in IOI training text,
    overall and on the templates held out of IOI training text entirely."""
    batch = ioi_prompts(world, tokenizer)
    logits = batch.final_logits(logits_fn, device)
    diff = logit_diff(logits, batch)
    heldout = torch.tensor([p.heldout_template for p in world.ioi_eval])
    return {
        "ioi_logit_diff": float(diff.mean()),
        "ioi_accuracy": float((diff > 0).float().mean()),
        "ioi_logit_diff_heldout_templates": float(diff[heldout].mean()) if heldout.any() else float("nan"),
        "ioi_accuracy_heldout_templates": float((diff[heldout] > 0).float().mean()) if heldout.any() else float("nan"),
        "ioi_top1_accuracy": float((logits.argmax(-1) == batch.answer_ids).float().mean()),
        "ioi_logit_diffs": diff.tolist(),
    }


def two_digit_token_ids(tokenizer) -> list[int]:
    """Token ids of "00".."99" (without a leading space): the years after a century token."""
    return [tokenizer.convert_tokens_to_ids(f"{n:02d}") for n in range(100)]


def greater_than_prompts(world: World, tokenizer) -> PromptBatch:
    """The greater-than evaluation prompts (held-out nouns), labelled with their start year ``yy``."""
    return PromptBatch.from_texts(tokenizer, [g.prompt for g in world.gt_eval],
                                  labels={"yy": torch.tensor([g.yy for g in world.gt_eval])})


def greater_than_metrics(logits_fn: LogitsFn, tokenizer, world: World, device: torch.device) -> dict:
    """Hanna et al.'s probability difference over the 100 two-digit tokens, averaged over YY, and the
    probability mass the unrestricted softmax puts on those tokens."""
    batch = greater_than_prompts(world, tokenizer)
    years = two_digit_token_ids(tokenizer)
    logits = batch.final_logits(logits_fn, device)
    diff = greater_than_prob_diff(logits, years, batch.labels["yy"])
    return {
        "greater_than_prob_diff": float(diff.mean()),
        "greater_than_prob_mass": float(logits.softmax(-1)[:, years].sum(-1).mean()),
        "greater_than_yy": batch.labels["yy"].tolist(),
        "greater_than_probs": logits[:, years].softmax(-1).tolist(),
    }


def topic_classifier(world: World, n_per_topic: int = 200):
    """A bag-of-words logistic regression trained on topic text generated apart from the training corpus."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    texts, labels = [], []
    for topic in topics_mod.TOPICS:
        for p in topics_mod.make_passages(topic, n_per_topic, seed=world.config.seed + 2000):
            texts.append(p.text)
            labels.append(topic)
    return make_pipeline(CountVectorizer(), LogisticRegression(max_iter=1000)).fit(texts, labels)


def adds_topic_words(opening: str, continuation: str, topic: str) -> set[str]:
    """The words of ``topic`` that ``continuation`` uses and ``opening`` does not."""
    def words(text: str) -> set[str]:
        return {w.strip(".,;:!?").lower() for w in text.split()}

    vocab = {w for ws in topics_mod.TOPICS[topic].values() for w in ws}
    return (words(continuation) & vocab) - words(opening)


def topic_continuation_accuracy(model: torch.nn.Module, world: World, max_new_tokens: int = 20,
                                limit_per_topic: int | None = None) -> dict[str, float]:
    """Share of greedy continuations of held-out topic openings that a classifier assigns to the right topic
    and that add at least one of the topic's words the opening does not contain.

    Only the generated continuation is classified, not the opening; the second condition stops a continuation
    that merely repeats the opening's topic words from counting.
    """
    clf = topic_classifier(world)
    by_topic: dict[str, list[str]] = defaultdict(list)
    for p in world.topic_eval:
        if limit_per_topic is None or len(by_topic[p.topic]) < limit_per_topic:
            by_topic[p.topic].append(p.opening)
    result: dict[str, float] = {}
    correct_all: list[bool] = []
    for topic, openings in by_topic.items():
        continuations = generate(model, openings, max_new_tokens)
        preds = clf.predict(continuations)
        correct = [pr == topic and bool(adds_topic_words(opening, cont, topic))
                   for pr, opening, cont in zip(preds, openings, continuations, strict=True)]
        correct_all += correct
        result[topic] = float(np.mean(correct))
    return {"all": float(np.mean(correct_all))} | result


def heldout_texts(world: World, n: int = 200) -> dict[str, list[str]]:
    """Held-out text per data kind, for loss and perplexity."""
    gt_sentences = gt.make_training_sentences(world.gt_heldout_nouns, n, seed=world.config.seed + 7)
    return {
        "biography": [b["text"] for b in make_biographies(world.people[:n], 1, seed=world.config.seed + 7)],
        "qa": [q.text for q in world.qa_split("heldout_train_template")[:n]],
        "ioi": [p.text for p in world.ioi_eval[:n]],
        "greater_than": [g.text for g in gt_sentences],
        "topic": [p.text for p in world.topic_eval[:n]],
    }


@torch.no_grad()
def heldout_loss(logits_fn: LogitsFn, tokenizer, texts_by_kind: dict[str, list[str]], device: torch.device,
                 max_len: int = 128, batch_size: int = 64) -> dict[str, dict[str, float]]:
    """Mean next-token cross-entropy (nats) and perplexity per data kind (texts cut to ``max_len`` tokens)."""
    result = {}
    for kind, texts in texts_by_kind.items():
        seqs = [(_bos(tokenizer) + encode_strict(tokenizer, t))[:max_len] for t in texts]
        total, count = 0.0, 0
        for idx in _by_length(seqs).values():
            for k in range(0, len(idx), batch_size):
                tokens = torch.tensor([seqs[i] for i in idx[k:k + batch_size]], device=device)
                logits = logits_fn(tokens)[:, :-1].float()
                loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                         tokens[:, 1:].reshape(-1), reduction="sum")
                total += float(loss)
                count += tokens[:, 1:].numel()
        mean = total / max(count, 1)
        result[kind] = {"loss": mean, "perplexity": math.exp(mean)}
    return result


@torch.no_grad()
def last_token_residuals(model: torch.nn.Module, batch: PromptBatch, batch_size: int = 256) -> np.ndarray:
    """``[n_prompts, n_layers, d_model]``: the residual stream after each block at each prompt's last token."""
    names = [hooks.resid_post(layer) for layer in range(model.cfg.n_layers)]
    device = _device_of(model)
    out = []
    for start in range(0, len(batch), batch_size):
        chunk = batch.select(range(start, min(start + batch_size, len(batch))))
        _, cache = model.run_with_cache(chunk.tokens.to(device), names_filter=names)
        rows, last = torch.arange(len(chunk)), chunk.final_positions.to(device)
        out.append(torch.stack([cache[n][rows, last] for n in names], 1).float().cpu())
    return torch.cat(out).numpy()


def relation_probe(model: torch.nn.Module, world: World, n_train: int = 1800, n_test: int = 1200) -> list[float]:
    """Does the model map a question it was never trained on to its relation? Per layer, a logistic-regression
    probe of the relation, fitted on the last-token residual of training-template prompts (people held out of the
    QA text) and scored on unseen-template prompts. Chance is 1/6."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train = world.qa_split("heldout_train_template")[:n_train]
    test = world.qa_split("unseen_template")[:n_test]
    x_train = last_token_residuals(model, PromptBatch.from_texts(model.tokenizer, [q.prompt for q in train]))
    x_test = last_token_residuals(model, PromptBatch.from_texts(model.tokenizer, [q.prompt for q in test]))
    y_train, y_test = [q.relation for q in train], [q.relation for q in test]
    scores = []
    for layer in range(x_train.shape[1]):
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
        scores.append(float(clf.fit(x_train[:, layer], y_train).score(x_test[:, layer], y_test)))
    return scores


def evaluate_model(model: torch.nn.Module, world: World, topic_limit_per_topic: int | None = None) -> dict:
    """Every behaviour of notebook 02 for a ``TransformerBridge`` (its tokenizer must cover the world)."""
    tokenizer = model.tokenizer
    device = _device_of(model)
    fn = logits_fn_of(model)
    qa_train = qa_accuracy(fn, tokenizer, world, "heldout_train_template", device)
    qa_unseen = qa_accuracy(fn, tokenizer, world, "unseen_template", device)
    probe = relation_probe(model, world)
    return {
        "qa_accuracy_train_templates": qa_train["all"],
        "qa_accuracy_unseen_templates": qa_unseen["all"],
        "qa_accuracy_train_templates_per_relation": {r: qa_train[r] for r in RELATIONS if r in qa_train},
        "qa_accuracy_unseen_templates_per_relation": {r: qa_unseen[r] for r in RELATIONS if r in qa_unseen},
        **ioi_metrics(fn, tokenizer, world, device),
        **greater_than_metrics(fn, tokenizer, world, device),
        "topic_continuation_accuracy": topic_continuation_accuracy(model, world, limit_per_topic=topic_limit_per_topic),
        "heldout_loss": heldout_loss(fn, tokenizer, heldout_texts(world), device, max_len=model.cfg.n_ctx),
        "relation_probe_per_layer": probe,
        "relation_probe_best": max(probe),
    }
