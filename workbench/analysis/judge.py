"""An offline AxBench-style judge of steered continuations: concept, instruction and fluency, each on AxBench's
0-2 scale, and their harmonic mean.

AxBench (Wu et al. 2025) asks gpt-4o-mini to rate each continuation 0, 1 or 2 on three criteria and aggregates a
sample as the harmonic mean of the three, 0 when any criterion is 0. No LLM judge is reachable here, and none is
needed in a world whose topics we generated. Each criterion is a raw number mapped to 0-2 by two thresholds
(:class:`Thresholds`) fitted on reference text the model never trained on (sentences generated with the judge's own
seed, each cut after a random word into a prompt and a continuation, as the evaluation's prompts are cut):

- **concept**: the probability a bag-of-words topic classifier (logistic regression over word counts, trained on
  sentences of every topic and of neutral filler) gives the target topic for the continuation alone; 0 when the
  continuation holds none of the topic's words (a text of words the classifier never saw, such as names, gets
  near-uniform probabilities, which are no evidence of the topic). Reference: continuations of the topic's
  sentences (good) against continuations of every other class's (bad).
- **instruction** (the continuation still follows its prompt): the unsteered model's mean log-likelihood per token
  of the continuation given its own prompt, minus the same given other prompts (the mean over
  ``n_other_prompts`` of the evaluation's prompts). Prompts stop mid-sentence, so a continuation that goes on from
  its prompt is likelier after it than after another. Reference, on neutral text like the evaluation's prompts:
  continuations after their own prompt (good) against after another sentence's prompt (bad).
- **fluency**: the unsteered model's median log-likelihood per token of the continuation given its prompt (the
  median, so that the one surprising token where a steered sentence turns to its topic does not make a fluent
  sentence look broken; a broken one has most of its tokens surprising). A continuation of at least 4 words that
  repeats itself (fewer than half of its words distinct) scores 0 whatever its likelihood, because a language model
  predicts a loop well. Reference: natural continuations of every class (good) against the same words shuffled
  (bad; continuations of at least 3 words).

Thresholds: 2 when the value reaches the 10th percentile of the good reference (90% of natural text scores 2), 0
when it is at or below the 90th percentile of the bad reference (90% of bad text scores 0), 1 in between; when
the two overlap, both sit at their midpoint and no value scores 1. An empty continuation scores 0 on every
criterion. The aggregate of a sample is ``3 / (1/c + 1/i + 1/f)``, 0 when any criterion is 0 (AxBench).

The judge scores with the *unsteered* model: call it outside any intervention's ``with`` block.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from workbench.datasets import topics as topics_mod

CRITERIA = ("concept", "instruction", "fluency")
"""AxBench's three criteria, each scored 0, 1 or 2."""

NEUTRAL = "neutral"
"""The classifier's class for filler text about no topic."""

GOOD_QUANTILE = 0.1
"""A value at or above this quantile of the good reference scores 2."""
BAD_QUANTILE = 0.9
"""A value at or below this quantile of the bad reference scores 0."""
MIN_REPEAT_WORDS = 4
"""Continuations of at least this many words are checked for loops."""
MIN_DISTINCT_SHARE = 0.5
"""Below this share of distinct words, a continuation is a loop and scores fluency 0."""


@dataclass(frozen=True)
class Thresholds:
    """Maps a raw value (higher is better) to 0-2: 2 at or above ``high``, 0 at or below ``low``, else 1."""

    low: float
    """At or below: 0."""
    high: float
    """At or above: 2 (``high >= low``)."""

    def __post_init__(self) -> None:
        if not self.high >= self.low:
            raise ValueError(f"Thresholds need high >= low, got low={self.low}, high={self.high}")

    def __call__(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=float)
        return np.where(values >= self.high, 2, np.where(values <= self.low, 0, 1)).astype(int)


def fit_thresholds(good: Sequence[float] | np.ndarray, bad: Sequence[float] | np.ndarray) -> Thresholds:
    """Thresholds from reference values of good text (e.g. natural) and bad text (e.g. shuffled), higher being better:
    ``high`` = the good values' 10th percentile, ``low`` = the bad values' 90th percentile; when ``low > high`` the
    references overlap and both move to their midpoint."""
    good, bad = np.asarray(good, dtype=float), np.asarray(bad, dtype=float)
    if good.size == 0 or bad.size == 0:
        raise ValueError(f"fit_thresholds needs good and bad reference values, got {good.size} good and {bad.size} bad")
    high, low = float(np.quantile(good, GOOD_QUANTILE)), float(np.quantile(bad, BAD_QUANTILE))
    if low > high:
        low = high = (low + high) / 2
    return Thresholds(low, high)


def harmonic_mean(*scores: np.ndarray) -> np.ndarray:
    """Per-sample harmonic mean of 0-2 scores, 0 when any of them is 0 (AxBench's aggregate)."""
    stacked = np.stack([np.asarray(s, dtype=float) for s in scores])
    safe = np.where(stacked > 0, stacked, 1.0)
    hm = len(scores) / (1.0 / safe).sum(0)
    return np.where((stacked > 0).all(0), hm, 0.0)


@dataclass
class JudgeScores:
    """The judge's verdict on each of ``n`` continuations: three 0-2 scores and the raw values they come from."""

    concept: np.ndarray
    instruction: np.ndarray
    fluency: np.ndarray
    topic_probability: np.ndarray
    """The classifier's probability of the target topic."""
    prompt_gain: np.ndarray
    """Mean log-likelihood per token given the own prompt minus given other prompts (nats)."""
    loss: np.ndarray
    """Median per-token loss given the own prompt (nats)."""

    @property
    def harmonic(self) -> np.ndarray:
        """Per-sample harmonic mean of the three scores (0 when any is 0)."""
        return harmonic_mean(self.concept, self.instruction, self.fluency)

    def means(self) -> dict[str, float]:
        """Mean of each criterion and of the per-sample harmonic mean."""
        return {c: float(np.mean(getattr(self, c))) for c in CRITERIA} | {"harmonic": float(np.mean(self.harmonic))}

    def __len__(self) -> int:
        return len(self.concept)


def _words(text: str) -> list[str]:
    return [w for w in text.replace(".", " ").replace(",", " ").split() if w]


def is_loop(text: str) -> bool:
    """Whether ``text`` repeats itself: at least 4 words and fewer than half of them distinct."""
    words = [w.lower() for w in _words(text)]
    return len(words) >= MIN_REPEAT_WORDS and len(set(words)) < MIN_DISTINCT_SHARE * len(words)


def topic_words(topic: str) -> set[str]:
    """The words of ``topic`` (or of neutral filler, ``"neutral"``), lower case."""
    if topic == NEUTRAL:
        return {w.lower() for w in topics_mod.NEUTRAL_NOUNS + topics_mod.NEUTRAL_VERBS + topics_mod.NEUTRAL_ADJS}
    if topic not in topics_mod.TOPICS:
        raise ValueError(f"unknown topic {topic!r}; choose from {[*topics_mod.TOPICS, NEUTRAL]}")
    return {w.lower() for ws in topics_mod.TOPICS[topic].values() for w in ws}


def has_topic_word(text: str, topic: str) -> bool:
    """Whether ``text`` holds at least one of ``topic``'s words."""
    return bool(topic_words(topic) & {w.lower() for w in _words(text)})


def topic_sentences(topic: str, n: int, seed: int) -> list[str]:
    """``n`` single sentences about ``topic`` (or ``"neutral"``) from the topic generator with ``seed``."""
    rng = random.Random(f"judge-{seed}-{topic}")
    return [topics_mod.make_sentence(topic, rng) for _ in range(n)]


def split_sentence(sentence: str, rng: random.Random, min_prompt_words: int = 2) -> tuple[str, str]:
    """A sentence cut after a random word (at least ``min_prompt_words`` in, at least two words left): (prompt,
    continuation). The continuation starts with a space, so ``prompt + continuation`` is the sentence."""
    words = sentence.split(" ")
    cut = rng.randint(min(min_prompt_words, len(words) - 2), max(min_prompt_words, len(words) - 2))
    return " ".join(words[:cut]), " " + " ".join(words[cut:])


def shuffle_words(text: str, rng: random.Random) -> str:
    """The words of ``text`` in another random order when there is one (a final period stays last)."""
    end = "." if text.rstrip().endswith(".") else ""
    words = text.rstrip().rstrip(".").split()
    shuffled = list(words)
    for _ in range(10):
        rng.shuffle(shuffled)
        if shuffled != words:
            break
    return " " + " ".join(shuffled) + end


@torch.no_grad()
def continuation_logprob(model: torch.nn.Module, prompts: Sequence[str], continuations: Sequence[str],
                         batch_size: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mean and the median log-probability per token of each continuation after its prompt (BOS + prompt +
    continuation, right padded; causal, so padding changes nothing), and its number of tokens (0: both are 0)."""
    if len(prompts) != len(continuations):
        raise ValueError(f"got {len(prompts)} prompts but {len(continuations)} continuations")
    tok = model.tokenizer
    device = next(model.parameters()).device
    rows = []
    for p, c in zip(prompts, continuations, strict=True):
        head = [tok.bos_token_id] + tok(p, add_special_tokens=False).input_ids
        tail = tok(c, add_special_tokens=False).input_ids if c.strip() else []
        rows.append((head, tail))
    mean, median, count = np.zeros(len(rows)), np.zeros(len(rows)), np.array([len(t) for _, t in rows])
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]) + len(rows[i][1]))
    for start in range(0, len(order), batch_size):
        idx = [i for i in order[start:start + batch_size] if count[i] > 0]
        if not idx:
            continue
        seqs = [rows[i][0] + rows[i][1] for i in idx]
        width = max(len(s) for s in seqs)
        tokens = torch.full((len(seqs), width), tok.bos_token_id, dtype=torch.long)
        for r, s in enumerate(seqs):
            tokens[r, :len(s)] = torch.tensor(s)
        logp = model(tokens.to(device)).float().log_softmax(-1)[:, :-1]
        picked = logp.gather(-1, tokens[:, 1:, None].to(device)).squeeze(-1).cpu().numpy()
        for r, i in enumerate(idx):
            values = picked[r, len(rows[i][0]) - 1:len(seqs[r]) - 1]
            mean[i], median[i] = values.mean(), np.median(values)
    return mean, median, count


@dataclass
class Judge:
    """Scores continuations of prompts for a target topic on concept, instruction and fluency (0-2 each); see the
    module docstring for the definitions. Built by :func:`fit_judge`."""

    model: torch.nn.Module
    """The unsteered model (its loss gives fluency and instruction)."""
    classifier: object
    """A fitted scikit-learn pipeline from text to topic (the topics and ``"neutral"``)."""
    concept_thresholds: Thresholds
    instruction_thresholds: Thresholds
    fluency_thresholds: Thresholds
    other_prompts: list[str]
    """Prompts a continuation is compared against for instruction."""
    n_other_prompts: int = 1
    """How many other prompts each continuation is compared against."""
    seed: int = 0
    references: dict = field(default_factory=dict, repr=False)
    """The reference values the thresholds were fitted on, by criterion: ``{"good": [...], "bad": [...]}``."""
    _cache: dict = field(default_factory=dict, repr=False)

    def topic_probability(self, texts: Sequence[str], topics: Sequence[str]) -> np.ndarray:
        """The classifier's probability of each text's target topic."""
        classes = list(self.classifier.classes_)
        unknown = sorted(set(topics) - set(classes))
        if unknown:
            raise ValueError(f"unknown topic(s) {unknown}; the judge knows {classes}")
        probs = self.classifier.predict_proba(list(texts))
        return probs[np.arange(len(texts)), [classes.index(t) for t in topics]]

    def prompt_gain(self, prompts: Sequence[str], continuations: Sequence[str],
                    own_logprob: np.ndarray | None = None) -> np.ndarray:
        """Mean log-likelihood per token of each continuation after its own prompt minus after other prompts (each
        prompt's others drawn from ``other_prompts`` by a generator seeded with the judge's seed and the prompt)."""
        if own_logprob is None:
            own_logprob = continuation_logprob(self.model, prompts, continuations)[0]
        others = []
        for p in prompts:
            pool = [q for q in self.other_prompts if q != p]
            others.append(random.Random(f"{self.seed}-{p}").sample(pool, min(self.n_other_prompts, len(pool))))
        k = min(len(o) for o in others)
        if k == 0:
            raise ValueError("the judge needs other prompts to compare against (other_prompts holds none but the prompt)")
        other = np.mean([continuation_logprob(self.model, [o[j] for o in others], continuations)[0] for j in range(k)], 0)
        return own_logprob - other

    def _model_values(self, prompts: Sequence[str], continuations: Sequence[str]) -> np.ndarray:
        """``[n, 3]``: median log-likelihood per token, token count and prompt gain of each pair, computed once per
        distinct pair (kept for later calls: a steered grid repeats many continuations)."""
        keys = list(zip(prompts, continuations, strict=True))
        todo = [k for k in dict.fromkeys(keys) if k not in self._cache]
        if todo:
            ps, cs = [p for p, _ in todo], [c for _, c in todo]
            mean, median, count = continuation_logprob(self.model, ps, cs)
            gain = self.prompt_gain(ps, cs, mean)
            self._cache.update({k: (m, n, g) for k, m, n, g in zip(todo, median, count, gain, strict=True)})
        return np.array([self._cache[k] for k in keys], dtype=float).reshape(len(keys), 3)

    def score(self, prompts: Sequence[str], continuations: Sequence[str], topics: Sequence[str]) -> JudgeScores:
        """Judge each continuation of its prompt for its target topic (all three lists row-aligned)."""
        if not (len(prompts) == len(continuations) == len(topics)):
            raise ValueError(f"need as many prompts, continuations and topics, got {len(prompts)}, "
                             f"{len(continuations)}, {len(topics)}")
        if len(prompts) == 0:
            raise ValueError("nothing to judge: the list of continuations is empty")
        values = self._model_values(prompts, continuations)
        median, count, gain = values[:, 0], values[:, 1], values[:, 2]
        p_topic = self.topic_probability(continuations, topics)
        empty = count == 0
        loops = np.array([is_loop(c) for c in continuations])
        named = np.array([has_topic_word(c, t) for c, t in zip(continuations, topics, strict=True)])
        concept = np.where(empty | ~named, 0, self.concept_thresholds(p_topic))
        instruction = np.where(empty, 0, self.instruction_thresholds(gain))
        fluency = np.where(empty | loops, 0, self.fluency_thresholds(median))
        return JudgeScores(concept, instruction, fluency, p_topic, gain, -median)


def train_topic_classifier(texts: Sequence[str], labels: Sequence[str]):
    """A bag-of-words logistic regression from text to label."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(CountVectorizer(), LogisticRegression(max_iter=2000, C=1.0)).fit(list(texts), list(labels))


def fit_judge(model: torch.nn.Module, other_prompts: Sequence[str], seed: int, n_train: int = 300,
              n_reference: int = 100, n_other_prompts: int = 1) -> Judge:
    """Train the topic classifier and fit the three criteria's thresholds on text generated with ``seed`` (use a
    seed the model's training corpus and the prompts were not generated with): ``n_train`` sentences per class for
    the classifier, ``n_reference`` others per class, each cut into a prompt and a continuation, for the reference
    values. ``other_prompts`` are the prompts instruction compares against (the evaluation's prompts, neutral)."""
    if len(other_prompts) < 2:
        raise ValueError(f"the judge needs at least 2 other prompts to compare against, got {len(other_prompts)}")
    classes = [*topics_mod.TOPICS, NEUTRAL]
    texts, labels = [], []
    for c in classes:
        texts += topic_sentences(c, n_train, seed)
        labels += [c] * n_train
    unset = Thresholds(0, 0)
    judge = Judge(model, train_topic_classifier(texts, labels), unset, unset, unset, list(other_prompts),
                  n_other_prompts, seed)
    rng = random.Random(seed)
    pairs = {c: [split_sentence(s, rng) for s in topic_sentences(c, n_reference, seed + 1)] for c in classes}
    conts = {c: [x for _, x in ps] for c, ps in pairs.items()}
    # concept, on continuations (what is judged): each topic's for it (good), every other class's for it (bad)
    topics = list(topics_mod.TOPICS)
    good = np.concatenate([judge.topic_probability(conts[t], [t] * n_reference) for t in topics])
    bad = np.concatenate([judge.topic_probability(conts[c], [t] * n_reference) for t in topics for c in classes if c != t])
    judge.concept_thresholds = fit_thresholds(good, bad)
    judge.references["concept"] = {"good": good.tolist(), "bad": bad.tolist()}
    # fluency: natural continuations of every class after their prompts (good) against the same words shuffled
    # (bad; continuations of at least 3 words, shuffled into another order)
    prompts, natural = [p for c in classes for p, _ in pairs[c]], [x for c in classes for x in conts[c]]
    shuffled = [(p, shuffle_words(x, rng)) for p, x in zip(prompts, natural, strict=True) if len(_words(x)) >= 3]
    good = continuation_logprob(model, prompts, natural)[1]
    bad = continuation_logprob(model, [p for p, _ in shuffled], [x for _, x in shuffled])[1]
    judge.fluency_thresholds = fit_thresholds(good, bad)
    judge.references["fluency"] = {"good": good.tolist(), "bad": bad.tolist()}
    # instruction, on neutral text like the evaluation's prompts: a continuation after its own prompt (good) against
    # after another sentence's prompt (bad), each compared with the judge's other prompts
    neutral_prompts, neutral_conts = [p for p, _ in pairs[NEUTRAL]], conts[NEUTRAL]
    good = judge.prompt_gain(neutral_prompts, neutral_conts)
    bad = judge.prompt_gain(neutral_prompts[1:] + neutral_prompts[:1], neutral_conts)
    judge.instruction_thresholds = fit_thresholds(good, bad)
    judge.references["instruction"] = {"good": good.tolist(), "bad": bad.tolist()}
    return judge


def reference_check(judge: Judge, topic: str, n: int = 40, seed: int | None = None) -> dict[str, float]:
    """The judge's mean harmonic score for ``topic`` on three kinds of held-out text, each a sentence cut into a
    prompt and a continuation: real ``topic`` text, other-topic text, and real ``topic`` text with its continuation
    shuffled. A judge worth its name ranks them in that order."""
    seed = judge.seed + 7 if seed is None else seed
    rng = random.Random(seed)
    real = [split_sentence(s, rng) for s in topic_sentences(topic, n, seed)]
    other_topic = next(t for t in topics_mod.TOPICS if t != topic)
    other = [split_sentence(s, rng) for s in topic_sentences(other_topic, n, seed)]
    shuffled = [(p, shuffle_words(c, rng)) for p, c in real]
    out = {}
    for name, pairs in [("real", real), ("other topic", other), ("shuffled", shuffled)]:
        scores = judge.score([p for p, _ in pairs], [c for _, c in pairs], [topic] * len(pairs))
        out[name] = scores.means()["harmonic"]
    return out
