import torch

from workbench.analysis import features, frontier


def test_categories_cover_the_worlds_words(smoke_world, smoke_tokenizer):
    cats = features.token_categories(smoke_world, smoke_tokenizer)
    first = smoke_tokenizer(smoke_world.vocab["first"][0], add_special_tokens=False).input_ids[0]
    assert cats[first] == "first"
    assert cats[smoke_tokenizer.convert_tokens_to_ids("32")] == "two_digit"
    assert cats[smoke_tokenizer.convert_tokens_to_ids(".")] == "punctuation"


def test_a_feature_that_fires_on_one_category_is_pure_and_a_mixed_one_is_not():
    token_ids = torch.arange(200)
    categories = {i: ("city" if i < 100 else "first") for i in range(200)}
    codes = torch.zeros(200, 2)
    codes[:100, 0] = torch.rand(100) + 1  # fires on cities only
    codes[::2, 1] = torch.rand(100) + 1  # fires on every other token: half cities, half names
    score = features.interpretability_score(codes, token_ids, categories, k=40)
    assert score.purity[0] == 1.0 and score.category[0] == "city"
    assert 0.4 <= score.purity[1] <= 0.6
    neg = features.interpretability_score(-codes, token_ids, categories, k=40, both_signs=True)
    assert neg.purity[0] == 1.0


def test_l0_ratio_interpolates_the_reference_frontier():
    def pt(arch, l0, ev):
        return frontier.SweepPoint(arch, {}, {"l0": l0, "explained_variance": ev})
    reference = [pt("s", 10, 0.8), pt("s", 20, 0.9), pt("s", 40, 0.95)]
    test = [pt("g", 10, 0.9), pt("g", 2, 0.5)]  # the second lies outside the reference's range
    r = frontier.l0_ratio_at_equal_ev(test, reference)
    assert r["n_points_in_range"] == 1 and abs(r["median"] - 0.5) < 1e-9
