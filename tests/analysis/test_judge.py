"""The offline AxBench-style judge: its arithmetic by hand, and its three scores ordering hand-picked texts as
expected under a bigram language model of the synthetic world's sentences (a model that knows word order)."""

import random

import numpy as np
import pytest
import torch

from workbench.analysis import judge as judging
from workbench.datasets import TOPICS
from workbench.tokenizer import build_tokenizer


def test_harmonic_mean_is_zero_when_any_criterion_is_zero():
    hm = judging.harmonic_mean(np.array([2, 1, 2, 0]), np.array([2, 2, 1, 2]), np.array([2, 2, 2, 2]))
    np.testing.assert_allclose(hm, [2.0, 1.5, 1.5, 0.0])


def test_thresholds_map_to_zero_one_two_and_overlapping_references_meet_in_the_middle():
    t = judging.fit_thresholds(good=np.linspace(5, 10, 101), bad=np.linspace(0, 2, 101))
    assert (t.low, t.high) == pytest.approx((1.8, 5.5))
    np.testing.assert_array_equal(t(np.array([0.0, 1.8, 3.0, 5.5, 9.0])), [0, 0, 1, 2, 2])
    overlap = judging.fit_thresholds(good=np.linspace(0, 10, 101), bad=np.linspace(0, 10, 101))
    assert overlap.low == overlap.high == pytest.approx(5.0)
    with pytest.raises(ValueError, match="high >= low"):
        judging.Thresholds(low=1.0, high=0.0)
    with pytest.raises(ValueError, match="0 good and 3 bad"):
        judging.fit_thresholds([], [1, 2, 3])


def test_loops_are_recognised():
    assert judging.is_loop(" reef reef reef reef reef.")
    assert not judging.is_loop(" the salty wave crashes near the reef.")
    assert not judging.is_loop(" reef reef.")  # too short to call


class BigramLM(torch.nn.Module):
    """A bigram language model of the world's sentences (add-0.1 smoothing), as ``tokens -> logits``."""

    def __init__(self, tokenizer, texts):
        super().__init__()
        self.tokenizer = tokenizer
        counts = torch.full((len(tokenizer), len(tokenizer)), 0.1)
        for text in texts:
            ids = [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False).input_ids
            for a, b in zip(ids, ids[1:], strict=False):
                counts[a, b] += 1
        self.log_probs = torch.nn.Parameter((counts / counts.sum(-1, keepdim=True)).log(), requires_grad=False)

    def forward(self, tokens):
        return self.log_probs[tokens]


@pytest.fixture(scope="module")
def bigram():
    texts = [s for c in [*TOPICS, "neutral"] for s in judging.topic_sentences(c, 400, seed=100)]
    return BigramLM(build_tokenizer(texts), texts)


@pytest.fixture(scope="module")
def judge(bigram):
    rng = random.Random(0)
    prompts = [judging.split_sentence(s, rng)[0] for s in judging.topic_sentences("neutral", 30, seed=200)]
    return judging.fit_judge(bigram, prompts, seed=300, n_train=100, n_reference=60)


def test_the_judge_scores_hand_picked_texts_in_the_expected_order(judge):
    prompt = "Nobody forgets the"
    texts = {"ocean sentence": " salty wave crashes near the reef.", "cooking sentence": " spicy soup and the oven.",
             "shuffled ocean": " near the reef crashes salty wave."}
    s = judge.score([prompt] * 3, list(texts.values()), ["ocean"] * 3)
    concept, fluency = dict(zip(texts, s.concept, strict=True)), dict(zip(texts, s.fluency, strict=True))
    assert concept["ocean sentence"] == 2 and concept["cooking sentence"] == 0 and concept["shuffled ocean"] == 2
    assert s.loss[0] < s.loss[2] and fluency["ocean sentence"] > fluency["shuffled ocean"] == 0
    # instruction: a continuation that fits its prompt against the same words after a prompt they do not fit
    fits = judge.score(["The quiet friend"], [" waits near the road."], ["neutral"])
    misfit = judge.score(["Nobody forgets the"], [" waits near the road."], ["neutral"])
    assert fits.prompt_gain[0] > misfit.prompt_gain[0] and fits.instruction[0] > misfit.instruction[0]
    # an empty continuation scores 0 everywhere, and a loop has fluency 0
    empty = judge.score([prompt, prompt], ["", " reef reef reef reef reef."], ["ocean", "ocean"])
    assert (empty.concept[0], empty.instruction[0], empty.fluency[0]) == (0, 0, 0) and empty.fluency[1] == 0
    assert empty.harmonic[0] == 0 and empty.concept[1] == 2


def test_the_judge_ranks_real_topic_text_above_other_topic_and_shuffled_text(judge):
    for topic in ["ocean", "garden"]:
        check = judging.reference_check(judge, topic, n=30)
        assert check["real"] > check["other topic"] and check["real"] > check["shuffled"], check


def test_judging_nothing_or_mismatched_lists_is_a_clear_error(judge):
    with pytest.raises(ValueError, match="list of continuations is empty"):
        judge.score([], [], [])
    with pytest.raises(ValueError, match="as many prompts, continuations and topics"):
        judge.score(["a"], [" b", " c"], ["ocean"])
    with pytest.raises(ValueError, match="unknown topic"):
        judge.score(["The quiet friend"], [" waits."], ["volcanoes"])
