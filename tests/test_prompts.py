import math

import pytest
import torch

from workbench.behaviours import logits_fn_of
from workbench.prompts import PromptBatch, greater_than_prob_diff, kl_divergence, logit_diff


def test_right_padding_gives_each_prompt_its_own_unpadded_logits(tiny_bridge, smoke_world, smoke_tokenizer):
    prompts = [q.prompt for q in smoke_world.qa_split("heldout_train_template")[:10]]
    batch = PromptBatch.from_texts(smoke_tokenizer, prompts)
    assert len(set(batch.lengths.tolist())) > 1  # lengths differ, so padding is really exercised
    fn = logits_fn_of(tiny_bridge)
    padded = batch.final_logits(fn, batch_size=4)
    for i in range(len(batch)):
        alone = fn(batch.tokens[i:i + 1, :batch.lengths[i]])[0, -1]
        assert torch.allclose(padded[i], alone, atol=1e-5)


def test_logit_diff_reads_answer_minus_foil():
    logits = torch.zeros(2, 5)
    logits[0, 1], logits[0, 2], logits[1, 3] = 2.0, 0.5, -1.0
    batch = PromptBatch.from_token_lists([[0, 1], [0, 1, 2]], answer_ids=torch.tensor([1, 3]),
                                         foil_ids=torch.tensor([2, 4]))
    assert torch.allclose(logit_diff(logits, batch), torch.tensor([1.5, -1.0]))
    with pytest.raises(ValueError, match="answer_ids and foil_ids"):
        logit_diff(logits, PromptBatch.from_token_lists([[0], [1]]))


def test_greater_than_is_strict_and_restricted_to_the_year_tokens():
    vocab, years = 130, list(range(20, 120))
    yy = torch.tensor([40, 40, 40])
    logits = torch.full((3, vocab), -1e4)
    logits[0, years[40]] = 10.0  # all mass on y == YY: counts as not greater
    logits[1, years[41]] = 10.0  # all mass on YY + 1
    logits[2, years[41]] = 10.0
    logits[2, :20] = 50.0  # huge mass on non-year tokens must not matter
    diff = greater_than_prob_diff(logits, years, yy)
    assert torch.allclose(diff, torch.tensor([-1.0, 1.0, 1.0]), atol=1e-6)
    uniform = greater_than_prob_diff(torch.zeros(1, vocab), years, torch.tensor([49]))
    assert uniform.item() == pytest.approx(0.0, abs=1e-6)  # 50 years above 49, 50 at or below


def test_kl_is_zero_on_equal_logits_and_matches_a_hand_computation():
    p = torch.tensor([[0.0, math.log(3.0)]])  # probabilities 1/4, 3/4
    q = torch.zeros(1, 2)  # 1/2, 1/2
    expected = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert kl_divergence(p, q).item() == pytest.approx(expected, abs=1e-6)
    assert kl_divergence(p, p).item() == pytest.approx(0.0, abs=1e-7)
    assert kl_divergence(q, p).item() != pytest.approx(expected, abs=1e-3)  # direction matters


def test_select_keeps_rows_aligned_and_shapes_are_checked():
    batch = PromptBatch.from_token_lists([[5], [6, 7], [8, 9, 10]], answer_ids=torch.tensor([1, 2, 3]),
                                         labels={"relation": torch.tensor([0, 1, 2])},
                                         counterfactual=PromptBatch.from_token_lists([[15], [16, 17], [18, 19, 20]]))
    sub = batch.select([2, 0])
    assert sub.answer_ids.tolist() == [3, 1] and sub.labels["relation"].tolist() == [2, 0]
    assert sub.final_positions.tolist() == [2, 0]
    assert sub.counterfactual.tokens[0].tolist() == [18, 19, 20]
    with pytest.raises(ValueError, match="label 'relation' has 2 values for 3 prompts"):
        PromptBatch.from_token_lists([[5], [6], [7]], labels={"relation": torch.tensor([1, 2])})
    with pytest.raises(ValueError, match="at least one prompt"):
        PromptBatch.from_token_lists([])
