import pytest
import torch

from workbench.analysis import interpretability as interp


def _world(n_seq: int = 200, seq_len: int = 50, n_ids: int = 60, seed: int = 0):
    """Tokens drawn uniformly from ``n_ids`` ids. Facet ``category``: ``c<id % 6>`` for ids below 50 (the rest are
    "other"); facet ``parity``: even or odd."""
    gen = torch.Generator().manual_seed(seed)
    token_ids = torch.randint(n_ids, (n_seq * seq_len,), generator=gen)
    sequence_index = torch.arange(n_seq).repeat_interleave(seq_len)
    labels = {"category": {i: f"c{i % 6}" for i in range(50)},
              "parity": {i: "even" if i % 2 == 0 else "odd" for i in range(n_ids)}}
    return token_ids, sequence_index, labels


def _has(token_ids, labels, facet, value):
    return torch.tensor([labels[facet].get(t, "other") == value for t in token_ids.tolist()])


def _noise(n, k, seed):
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed))


def test_a_planted_label_is_found_and_scores_near_one_and_noise_scores_near_zero():
    token_ids, seq, labels = _world()
    n = len(token_ids)
    c1 = _has(token_ids, labels, "category", "c1").float()
    unlabelled = _has(token_ids, labels, "category", "other").float()
    noise = _noise(n, 42, 1)
    codes = torch.stack([c1 * (1 + 0.1 * noise[:, 0].abs()),  # fires exactly on c1, with varying strength
                         unlabelled * (1 + 0.1 * noise[:, 1].abs()),  # fires on the tokens category leaves unlabelled
                         2 * c1 + 0.5 * _has(token_ids, labels, "category", "c2").float()], dim=1)  # c1 matters more
    codes = torch.cat([codes, noise[:, 2:].clamp_min(0)], dim=1)  # 40 features of pure noise
    r = interp.explain_then_simulate(codes, token_ids, labels, seq, signed=False)
    assert r.n_scored == 43 and r.n_skipped == 0 and r.feature_index.tolist() == list(range(43))
    assert r.explanations[:3] == [("category", "c1"), ("category", "other"), ("category", "c1")]
    assert (r.score[:3] > 0.9).all() and (r.explain_correlation[:2] > 0.95).all()
    assert r.score[3:].abs().max() < 0.45 and abs(float(r.score[3:].mean())) < 0.08
    assert r.interval[0] < r.mean < r.interval[1]


def test_the_simulation_is_scored_on_held_out_sequences_not_on_the_labelling_split():
    """A feature that fires on c1 tokens of the labelling split only is explained as c1 there, and its simulation
    fails on the scoring split, where it fires on random tokens: fitting and scoring on one split would hide this."""
    token_ids, seq, labels = _world()
    label_mask, _ = interp.split_by_sequence(seq, seed=0)
    c1 = _has(token_ids, labels, "category", "c1")
    random_tokens = torch.rand(len(token_ids), generator=torch.Generator().manual_seed(3)) < c1.float().mean()
    codes = torch.where(label_mask, c1, random_tokens).float()[:, None]
    r = interp.explain_then_simulate(codes, token_ids, labels, seq, signed=False, seed=0)
    assert (r.facet[0], r.label[0]) == ("category", "c1") and r.explain_correlation[0] > 0.99
    assert abs(float(r.score[0])) < 0.3


def test_a_signed_direction_scores_high_only_as_its_negative_part():
    token_ids, seq, labels = _world()
    c3 = _has(token_ids, labels, "category", "c3").float()
    codes = (-c3 + 0.05 * _noise(len(token_ids), 1, 2)[:, 0])[:, None] + 7.0  # an offset, as uncentred neurons have
    r = interp.explain_then_simulate(codes, token_ids, labels, seq, signed=True)
    assert r.n_candidates == 2 and r.n_scored == 2 and r.sign.tolist() == [1, -1]
    assert (r.facet[1], r.label[1]) == ("category", "c3") and r.score[1] > 0.9
    assert r.score[0] < 0.5
    with pytest.raises(ValueError, match="signed=True"):
        interp.explain_then_simulate(codes - 7.0, token_ids, labels, seq, signed=False)


def test_splits_are_disjoint_by_sequence_and_cover_every_token():
    _, seq, _ = _world(n_seq=30, seq_len=7)
    seq = seq[torch.randperm(len(seq), generator=torch.Generator().manual_seed(0))]  # tokens of a sequence interleaved
    label_mask, score_mask = interp.split_by_sequence(seq, label_fraction=0.4, seed=5)
    assert not (label_mask & score_mask).any() and (label_mask | score_mask).all()
    assert not set(seq[label_mask].tolist()) & set(seq[score_mask].tolist())
    assert len(set(seq[label_mask].tolist())) == 12
    assert not torch.equal(label_mask, interp.split_by_sequence(seq, label_fraction=0.4, seed=6)[0])
    with pytest.raises(ValueError, match="label_fraction"):
        interp.split_by_sequence(seq, label_fraction=0.01)


def test_the_same_seed_gives_the_same_result_and_another_seed_another():
    token_ids, seq, labels = _world(n_seq=60)
    codes = _noise(len(token_ids), 30, 4)
    run = lambda seed: interp.explain_then_simulate(codes, token_ids, labels, seq, signed=True, n_features=20,  # noqa: E731
                                                    seed=seed, chunk_size=7)
    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a.score, b.score) and torch.equal(a.feature_index, b.feature_index) and a.label == b.label
    assert a.interval == b.interval
    assert not torch.equal(a.score, c.score)


def test_score_methods_scores_the_same_number_of_features_for_every_method():
    token_ids, seq, labels = _world(n_seq=60)
    n = len(token_ids)
    sae = _noise(n, 40, 5).clamp_min(0)
    sae[:, :5] = 0  # five features never fire
    directions = _noise(n, 12, 6)  # 12 signed directions: 24 candidates
    results = interp.score_methods({"SAE": sae, "PCA": directions}, token_ids, labels, seq, signed={"PCA"})
    table = interp.compare_methods(results)
    assert table["n_scored"].tolist() == [24, 24]
    assert table.loc["SAE", "n_skipped"] == 5 and table.loc["SAE", "n_candidates"] == 40
    assert table.loc["PCA", "n_skipped"] == 0 and table.loc["PCA", "n_candidates"] == 24
    assert not (results["SAE"].feature_index < 5).any()
    assert interp.live_feature_count(sae, seq, signed=False) == 35
    assert interp.compare_methods(interp.score_methods({"SAE": sae, "PCA": directions}, token_ids, labels, seq,
                                                       signed={"PCA"}, n_features=10))["n_scored"].tolist() == [10, 10]
    with pytest.raises(ValueError, match="n_features <= 24"):
        interp.explain_then_simulate(directions, token_ids, labels, seq, signed=True, n_features=25)


def _scores(mean: float, lo: float, hi: float) -> interp.SimulationScores:
    return interp.SimulationScores(score=torch.full((4,), mean), feature_index=torch.arange(4),
                                   sign=torch.ones(4, dtype=torch.long), facet=["f"] * 4, label=["l"] * 4,
                                   explain_correlation=torch.zeros(4), n_candidates=4, n_skipped=0, interval=(lo, hi))


def test_sae_beats_baselines_only_when_the_best_saes_interval_clears_every_baseline():
    saes = {"SAE (standard)": _scores(0.6, 0.55, 0.65), "SAE (gated)": _scores(0.3, 0.2, 0.4)}
    assert interp.sae_beats_baselines(saes | {"PCA": _scores(0.4, 0.3, 0.5), "ICA": _scores(0.5, 0.45, 0.54)})
    assert not interp.sae_beats_baselines(saes | {"PCA": _scores(0.4, 0.3, 0.5), "ICA": _scores(0.5, 0.45, 0.56)})
    assert not interp.sae_beats_baselines(saes | {"PCA": _scores(0.7, 0.6, 0.8)})
    assert interp.sae_beats_baselines({"mine": _scores(0.6, 0.55, 0.65), "PCA": _scores(0.1, 0.0, 0.2)},
                                      saes=["mine"])
    with pytest.raises(ValueError, match="baseline"):
        interp.sae_beats_baselines(saes)


def test_on_the_smoke_worlds_tokens_and_labels(smoke_world, smoke_tokenizer):
    """Real token ids and facets from the generator: a feature planted on person names is explained as such (the
    kind facet), random codes score near zero."""
    from workbench.analysis import features
    from workbench.datasets.corpus import token_sequences

    tokens = token_sequences(smoke_world, smoke_tokenizer, 40, seq_len=64, seed=1)[:, 1:]  # no BOS, as cached
    token_ids, seq = tokens.flatten(), torch.arange(len(tokens)).repeat_interleave(tokens.shape[1])
    labels = features.token_labels(smoke_world, smoke_tokenizer)
    person = _has(token_ids, labels, "kind", "person name").float()
    codes = torch.cat([person[:, None], _noise(len(token_ids), 30, 7)], dim=1)
    r = interp.explain_then_simulate(codes, token_ids, labels, seq, signed=True)
    assert (r.facet[0], r.label[0], r.sign[0].item()) == ("kind", "person name", 1) and r.score[0] > 0.95
    assert abs(float(r.score[2:].mean())) < 0.1
