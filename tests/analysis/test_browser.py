"""The feature card and the slider browser over it, on a tiny random model."""

import html

import pytest
import torch

from workbench.analysis import browser


@pytest.fixture()
def data(tiny_bridge):
    torch.manual_seed(0)
    sequences = torch.randint(1, tiny_bridge.cfg.d_vocab, (3, 10))
    seq, pos = torch.meshgrid(torch.arange(3), torch.arange(10), indexing="ij")
    codes = torch.relu(torch.randn(30, 5))
    return browser.FeatureData(codes, seq.reshape(-1), pos.reshape(-1), sequences, torch.randn(5, tiny_bridge.cfg.d_model),
                               {2: (0.8, "city")})


def test_card_shows_the_features_top_contexts_and_label(tiny_bridge, data):
    card = browser.feature_card(tiny_bridge, data, 2, k=3)
    assert "feature 2" in card and "label purity 0.80 (city)" in card and card.count("<li>") == 3
    top_row = int(data.codes[:, 2].argmax())
    top_token = tiny_bridge.tokenizer.decode([int(data.sequences[data.sequence_index[top_row], data.positions[top_row]])])
    assert f"<b style='background:#fd8'>{html.escape(top_token)}</b>" in card
    with pytest.raises(ValueError, match="out of range 0..4"):
        browser.feature_card(tiny_bridge, data, 5)


def test_moving_the_slider_shows_that_features_card(tiny_bridge, data):
    slider, card = browser.feature_browser(tiny_bridge, data, start=1).children
    assert "feature 1" in card.value
    slider.value = 4
    assert "feature 4" in card.value and "feature 1" not in card.value
