import torch

from workbench.analysis import features, frontier


def test_categories_cover_the_worlds_words(smoke_world, smoke_tokenizer):
    cats = features.token_categories(smoke_world, smoke_tokenizer)
    first = smoke_tokenizer(smoke_world.vocab["first"][0], add_special_tokens=False).input_ids[0]
    assert cats[first] == "first"
    assert cats[smoke_tokenizer.convert_tokens_to_ids("32")] == "two_digit"
    assert cats[smoke_tokenizer.convert_tokens_to_ids(".")] == "punctuation"


def test_categories_and_facets_label_the_worlds_words(smoke_world, smoke_tokenizer):
    labels = features.token_labels(smoke_world, smoke_tokenizer)
    first = smoke_tokenizer(smoke_world.vocab["first"][0], add_special_tokens=False).input_ids[0]
    last = smoke_tokenizer(smoke_world.vocab["last"][0], add_special_tokens=False).input_ids[0]
    assert labels["kind"][first] == labels["kind"][last] == "person name"
    assert labels["role"][smoke_tokenizer(" piano", add_special_tokens=False).input_ids[0]] == "noun"
    assert labels["role"][smoke_tokenizer(" sings", add_special_tokens=False).input_ids[0]] == "verb"


def _two_category_world():
    token_ids = torch.arange(200)
    categories = {i: ("city" if i < 100 else "first") for i in range(200)}
    codes = torch.zeros(200, 2)
    codes[:100, 0] = torch.rand(100, generator=torch.Generator().manual_seed(0)) + 1  # fires on cities only
    codes[::2, 1] = torch.rand(100, generator=torch.Generator().manual_seed(1)) + 1  # half cities, half names
    return token_ids, categories, codes


def _imbalanced_world(n_tokens: int = 4000, n_random: int = 20):
    """A quarter of the tokens are "rare" (every fourth), the rest "common". Feature 0 fires exactly on the rare
    tokens, feature 1 exactly on the common ones, and features 2.. on every token with random strengths, so
    their top tokens are a random sample, three quarters common by chance alone."""
    token_ids = torch.arange(n_tokens)
    categories = {i: "rare" if i % 4 == 0 else "common" for i in range(n_tokens)}
    rare = token_ids % 4 == 0
    gen = torch.Generator().manual_seed(0)
    codes = torch.zeros(n_tokens, 2 + n_random)
    codes[rare, 0] = torch.rand(int(rare.sum()), generator=gen) + 1
    codes[~rare, 1] = torch.rand(int((~rare).sum()), generator=gen) + 1
    codes[:, 2:] = torch.rand(n_tokens, n_random, generator=gen) + 0.01
    return token_ids, categories, codes


def test_a_feature_that_fires_on_one_label_is_pure_and_one_on_random_tokens_is_at_chance():
    token_ids, categories, codes = _imbalanced_world()
    score = features.interpretability_score(codes, token_ids, categories, k=1000)
    assert score.feature_index.tolist() == list(range(codes.shape[1]))
    assert score.category[:2] == ["rare", "common"] and torch.allclose(score.purity[:2], torch.ones(2))
    # random features: about 75% of their top tokens are common (the base rate), which chance correction removes;
    # without it they would score 0.75, and with a uniform base rate (1/2 for two labels) 0.5
    assert (score.raw_purity[2:] - 0.75).abs().max() < 0.05
    assert score.purity[2:].abs().max() < 0.15 and abs(score.purity[2:].mean()) < 0.03
    neg = features.interpretability_score(-codes, token_ids, categories, k=1000, both_signs=True)
    assert torch.allclose(neg.purity[:2], torch.ones(2)) and (neg.sign[:2] == -1).all()


def test_purity_is_best_over_facets():
    token_ids, categories, codes = _two_category_world()
    coarse = {i: "entity" if i % 2 == 0 else "other" for i in range(200)}  # feature 1 fires on exactly these
    score = features.interpretability_score(codes, token_ids, {"category": categories, "parity": coarse}, k=40)
    assert score.facet[1] == "parity" and score.purity[1] == 1.0


def test_explanation_purity_rewards_codes_made_of_features_that_fit_the_token():
    token_ids, categories, codes = _two_category_world()
    sparse = torch.zeros(200, 2)
    sparse[:100, 0], sparse[100:, 1] = 1.0, 1.0  # one feature per category: every token fully explained
    score = features.interpretability_score(sparse, token_ids, categories, k=40)
    assert features.explanation_purity(sparse, token_ids, categories, score) == 1.0
    # six more features that fire on everything: each fits only the half of the tokens of its label
    dense = torch.cat([sparse, torch.rand(200, 6, generator=torch.Generator().manual_seed(0))], dim=1)
    score = features.interpretability_score(dense, token_ids, categories, k=40)
    assert features.explanation_purity(dense, token_ids, categories, score) < 0.75


def test_l0_ratio_interpolates_the_reference_frontier():
    def pt(arch, l0, ev):
        return frontier.SweepPoint(arch, {}, {"l0": l0, "explained_variance": ev})
    reference = [pt("s", 10, 0.8), pt("s", 20, 0.9), pt("s", 40, 0.95)]
    test = [pt("g", 10, 0.9), pt("g", 2, 0.5)]  # the second lies outside the reference's range
    r = frontier.l0_ratio_at_equal_ev(test, reference)
    assert r["n_points_in_range"] == 1 and abs(r["median"] - 0.5) < 1e-9


def test_density_plot_counts_features_that_never_fire(tmp_path):
    import matplotlib.pyplot as plt

    from workbench import viz

    density = torch.tensor([0.0, 0.0, 1e-3, 1e-2, 0.2])
    fig = viz.plot_feature_density({"standard": frontier.SweepPoint("standard", {}, {"l0": 3.0}, density=density)})
    assert "2 never fire" in fig.axes[0].get_legend().get_texts()[0].get_text()
    assert viz.save_figure(fig, "density", tmp_path).exists()  # titled and labelled, or save_figure refuses
    plt.close(fig)
