"""Steering, input and output scores against hand computations and direct interventions, on the tiny model."""

import pytest
import torch

from workbench import hooks, interventions, load_model
from workbench.analysis import judge as judging
from workbench.analysis import steering
from workbench.dictionaries import make_training_sae
from workbench.generation import generate

HOOK = hooks.resid_pre(1)


@pytest.fixture(scope="module")
def sae(tiny_bridge):
    torch.manual_seed(0)
    return make_training_sae("standard", d_in=tiny_bridge.cfg.d_model, d_sae=24)


@pytest.fixture(scope="module")
def prompts():
    return steering.neutral_prompts(6, seed=1)


def test_factor_zero_leaves_generation_unchanged_token_for_token(tiny_bridge, sae, prompts):
    plain = steering.generate_steered(tiny_bridge, prompts, None, max_new_tokens=8, temperature=0.7, seed=3,
                                      batch_size=4)
    zero_feature = steering.Steering(HOOK, torch.zeros(6), features=torch.arange(6), dictionary=sae)
    zero_direction = steering.Steering(HOOK, torch.zeros(6), directions=torch.randn(6, tiny_bridge.cfg.d_model))
    for zero in (zero_feature, zero_direction):
        assert steering.generate_steered(tiny_bridge, prompts, zero, max_new_tokens=8, temperature=0.7, seed=3,
                                         batch_size=4) == plain
    strong = steering.Steering(HOOK, torch.full((6,), 50.0), directions=torch.randn(6, tiny_bridge.cfg.d_model),
                               scale=10.0)
    assert steering.generate_steered(tiny_bridge, prompts, strong, max_new_tokens=8, temperature=0.7, seed=3) != plain
    # greedy and unsteered, it is the package's generate
    greedy = steering.generate_steered(tiny_bridge, prompts, None, max_new_tokens=8, temperature=0.0, stop_at=None)
    assert greedy == generate(tiny_bridge, prompts, max_new_tokens=8)


@pytest.mark.parametrize("kind", ["feature", "direction"])
def test_cached_generation_steers_exactly_as_full_forward_passes(tiny_bridge, sae, prompts, kind):
    """Greedy, the KV-cached engine (one new position per step through the hooks) and one full forward pass per token
    give the same tokens under steering at every non-BOS position."""
    rows = steering.Steering(HOOK, torch.full((6,), 50.0), features=torch.arange(6), dictionary=sae) if kind == "feature" \
        else steering.Steering(HOOK, torch.full((6,), 50.0), directions=torch.randn(6, tiny_bridge.cfg.d_model), scale=2.0)
    runs = {engine: steering.generate_steered(tiny_bridge, prompts, rows, max_new_tokens=8, temperature=0.0,
                                              stop_at=None, engine=engine) for engine in steering.ENGINES}
    assert runs["cached"] == runs["full"]
    assert runs["full"] != steering.generate_steered(tiny_bridge, prompts, None, max_new_tokens=8, temperature=0.0,
                                                     stop_at=None)


def test_feature_steering_adds_factor_times_the_peak_code_at_every_position_but_bos(tiny_bridge, sae, tiny_tokens):
    tokens = tiny_tokens[:2]
    factors, features = torch.tensor([2.0, 0.5]), torch.tensor([3, 7])
    _, cache = tiny_bridge.run_with_cache(tokens, names_filter=[HOOK])
    act = cache[HOOK]
    with torch.no_grad():
        peak = sae.encode(act).max(-1).values
        vector = factors[:, None, None] * peak[..., None] * sae.W_dec[features][:, None, :]
        vector[:, 0] = 0
        with interventions.patched(tiny_bridge, HOOK, act + vector):
            direct = tiny_bridge(tokens)
        with steering.Steering(HOOK, factors, features=features, dictionary=sae).applied(tiny_bridge):
            steered = tiny_bridge(tokens)
    torch.testing.assert_close(steered, direct, atol=1e-4, rtol=1e-4)


def test_input_scores_equal_a_hand_computation():
    # two features, three sequences of three tokens; T_0 = {5, 6}, T_1 = {9}
    codes = torch.tensor([[[0.0, 1.0], [2.0, 0.0], [0.5, 0.0]],    # f0 peaks on token 5, f1 on token 4
                          [[1.0, 0.0], [0.0, 0.0], [3.0, 0.2]],    # f0 peaks on token 8, f1 on token 8
                          [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])   # nothing fires
    token_ids = torch.tensor([[4, 5, 6], [7, 7, 8], [1, 2, 3]])
    top_tokens = torch.tensor([[5, 6], [9, 9]])
    scores = steering.input_scores_from_codes(codes, token_ids, top_tokens, n_examples=3, min_examples=1)
    torch.testing.assert_close(scores, torch.tensor([0.5, 0.0]))  # f0: token 5 hit, token 8 not; f1: 0 of 2
    # only the top example counts with n_examples=1: f0's largest peak (3.0) is on token 8
    top1 = steering.input_scores_from_codes(codes, token_ids, top_tokens, n_examples=1, min_examples=1)
    torch.testing.assert_close(top1, torch.tensor([0.0, 0.0]))
    # a feature active in fewer than min_examples sequences is not scored
    assert torch.isnan(steering.input_scores_from_codes(codes, token_ids, top_tokens, 3, min_examples=3)).all()


def test_batched_input_scores_equal_one_pass_over_all_sequences(tiny_bridge, sae, tiny_tokens):
    top = steering.logit_lens_top_tokens(tiny_bridge, sae.W_dec)
    words = {"any": tiny_tokens[0, 1:4]}
    batched = steering.input_scores(tiny_bridge, sae, HOOK, tiny_tokens, top, n_examples=4, min_examples=1,
                                    batch_size=2, progress=False, topic_tokens=words)
    _, cache = tiny_bridge.run_with_cache(tiny_tokens, names_filter=[HOOK])
    with torch.no_grad():
        codes = sae.encode(cache[HOOK])
    codes = codes.masked_fill((tiny_tokens == tiny_bridge.tokenizer.bos_token_id)[..., None], 0.0)
    whole = steering.input_scores_from_codes(codes, tiny_tokens, top, n_examples=4, min_examples=1)
    torch.testing.assert_close(batched.scores, whole, equal_nan=True)
    by_words = steering.input_scores_from_codes(codes, tiny_tokens, words["any"].expand(len(top), -1), 4, 1)
    torch.testing.assert_close(batched.by_topic["any"], by_words, equal_nan=True)
    assert batched.n_scored > 0 and batched.seconds_per_1000_features > 0


def test_output_score_formula_on_a_hand_built_distribution():
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]])
    top_tokens = torch.tensor([[2, 1], [2, 0]])
    # row 0: best of T_f is token 1 (p 0.3), one token above it: (1 - 1/3) * 0.3; row 1: token 2 is top: 0.7
    torch.testing.assert_close(steering.output_score_from_probs(probs, top_tokens), torch.tensor([0.2, 0.7]))


def test_output_scores_equal_the_direct_intervention_at_the_last_position(tiny_bridge, sae):
    top = steering.logit_lens_top_tokens(tiny_bridge, sae.W_dec)
    words = steering.topic_word_ids(tiny_bridge.tokenizer, ["ocean"])
    scores = steering.output_scores(tiny_bridge, sae, HOOK, top, batch_size=5, progress=False, topic_tokens=words)
    ids = [tiny_bridge.tokenizer.bos_token_id] + tiny_bridge.tokenizer(steering.NEUTRAL_PROMPT,
                                                                      add_special_tokens=False).input_ids
    tokens = torch.tensor([ids])
    _, cache = tiny_bridge.run_with_cache(tokens, names_filter=[HOOK])
    with torch.no_grad():
        peak = sae.encode(cache[HOOK])[0, -1].max()
        for f in [0, 7, 23]:
            with interventions.added(tiny_bridge, HOOK, 10 * peak * sae.W_dec[f], positions=[len(ids) - 1]):
                probs = tiny_bridge(tokens)[0, -1].softmax(-1)
            order = probs.argsort(descending=True).tolist()
            rank = min(order.index(t) for t in top[f].tolist())
            expected = (1 - rank / len(probs)) * probs[top[f]].max()
            torch.testing.assert_close(scores.scores[f], expected, atol=1e-5, rtol=1e-4)
            rank = min(order.index(t) for t in words["ocean"].tolist())  # a topic's words in place of T_f
            expected = (1 - rank / len(probs)) * probs[words["ocean"]].max()
            torch.testing.assert_close(scores.by_topic["ocean"][f], expected, atol=1e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def peaked_bridge(tiny_model_dir):
    """The tiny model with its (tied) unembedding scaled up, so that one direction can make one token likely."""
    model = load_model(tiny_model_dir, device="cpu")
    with torch.no_grad():
        model.original_model.get_output_embeddings().weight.mul_(20.0)
    return model


class _Directions(torch.nn.Module):
    """A dictionary whose features are given decoder directions and always fire with code 1."""

    def __init__(self, W_dec):
        super().__init__()
        self.W_dec = torch.nn.Parameter(W_dec)

    def encode(self, x):
        return torch.ones(*x.shape[:-1], self.W_dec.shape[0])

    def decode(self, codes):
        return codes @ self.W_dec


def test_a_token_unembedding_feature_raises_that_token_and_beats_a_random_direction(peaked_bridge):
    target = peaked_bridge.tokenizer(" wave", add_special_tokens=False).input_ids[0]
    unembed = peaked_bridge.W_U[:, target].detach()
    generator = torch.Generator().manual_seed(0)
    W_dec = torch.stack([unembed / unembed.norm(), torch.randn(len(unembed), generator=generator)])
    dictionary = _Directions(W_dec / W_dec.norm(dim=-1, keepdim=True))
    hook = hooks.resid_pre(peaked_bridge.cfg.n_layers - 1)
    top = steering.logit_lens_top_tokens(peaked_bridge, dictionary.W_dec)
    assert top[0, 0] == target
    ids = [peaked_bridge.tokenizer.bos_token_id] + peaked_bridge.tokenizer(steering.NEUTRAL_PROMPT,
                                                                          add_special_tokens=False).input_ids
    with torch.no_grad():
        before = peaked_bridge(torch.tensor([ids]))[0, -1].softmax(-1)[target]
        steer = steering.Steering(hook, torch.tensor([steering.AMPLIFICATION]), features=torch.tensor([0]),
                                  dictionary=dictionary, positions=[len(ids) - 1])
        with steer.applied(peaked_bridge):
            after = peaked_bridge(torch.tensor([ids]))[0, -1].softmax(-1)[target]
    assert after > 5 * before
    scores = steering.output_scores(peaked_bridge, dictionary, hook, top, progress=False).scores
    assert scores[0] > 2 * scores[1], scores


def test_an_empty_factor_grid_or_prompt_list_is_a_clear_error(tiny_bridge, small_setup):
    judge, layer = small_setup
    with pytest.raises(ValueError, match="factor grid is empty"):
        steering.SteeringConfig(factors=())
    with pytest.raises(ValueError, match="prompt list is empty"):
        steering.generate_steered(tiny_bridge, [])
    with pytest.raises(ValueError, match="prompt list is empty"):
        steering.run_arms(tiny_bridge, judge, [(steering.Arm("unsteered", "ocean"), 0.0)], [], [layer],
                          steering.SteeringConfig())
    with pytest.raises(ValueError, match="list of .arm, factor. pairs is empty"):
        steering.run_arms(tiny_bridge, judge, [], ["The quiet friend"], [layer], steering.SteeringConfig())
    with pytest.raises(ValueError, match="exactly one of features"):
        steering.Steering(HOOK, torch.zeros(2))


def test_feature_selection_picks_by_each_score():
    nan = float("nan")
    inp = steering.FeatureScores(torch.tensor([0.9, 0.1, nan, 0.5, 0.0]), 1.0,
                                 {"ocean": torch.tensor([0.2, 0.9, nan, 0.9, 0.0])})
    out = steering.FeatureScores(torch.tensor([0.0, 0.2, 0.3, 0.01, 0.5]), 1.0,
                                 {"ocean": torch.tensor([0.1, 0.0, 0.0, 0.0, 0.7])})
    layer = steering.SteeringLayer(1, HOOK, None, torch.zeros(5, 2, dtype=torch.long), inp, out, 1.0)
    activation = torch.tensor([[5.0, 4.0, 3.0, 0.0, -1.0]])  # candidates (n=3): 0, 1, 2
    steering.select_features(layer, ["ocean"], activation, n_candidates=3)
    # topic input score: 1 and 3 tie at 0.9, 1 has the larger contrast; topic output: 4; filter: the first of the
    # candidates 0, 1, 2 whose output score reaches the median of all (0.2): 1
    assert layer.features == {"sae_activation": {"ocean": 0}, "sae_input": {"ocean": 1}, "sae_output": {"ocean": 4},
                              "sae_output_filtered": {"ocean": 1}}
    assert layer.pools == {"activation": {"ocean": [0, 1, 2]}}
    with pytest.raises(ValueError, match="no topic scores for \\['music'\\]"):
        steering.select_features(layer, ["music"], activation)


def test_supervised_vectors_raise_the_likelihood_of_their_topic(tiny_bridge, prompts):
    conts = {t: steering.topic_continuations(t, 20, seed=0) for t in ["ocean", "music"]}
    before = judging.continuation_logprob(tiny_bridge, prompts[:4], conts["ocean"][:4])[0]
    flags = [p.requires_grad for p in tiny_bridge.parameters()]
    vectors = steering.train_steering_vectors(tiny_bridge, HOOK, prompts, conts, steps=25, lr=0.1, progress=False)
    assert vectors.shape == (2, tiny_bridge.cfg.d_model)
    assert [p.requires_grad for p in tiny_bridge.parameters()] == flags  # the model's flags are restored
    with steering.added_per_row(tiny_bridge, HOOK, vectors[:1].expand(4, -1)):
        after = judging.continuation_logprob(tiny_bridge, prompts[:4], conts["ocean"][:4])[0]
    assert after.mean() > before.mean() + 0.1


@pytest.fixture(scope="module")
def small_setup(tiny_bridge, sae, prompts):
    judge = judging.fit_judge(tiny_bridge, prompts, seed=5, n_train=30, n_reference=10)
    layer = steering.SteeringLayer(1, HOOK, sae, torch.zeros(24, 2, dtype=torch.long),
                                   steering.FeatureScores(torch.zeros(24), 1.0),
                                   steering.FeatureScores(torch.zeros(24), 1.0), 2.0)
    layer.features = {m: {"ocean": 3, "music": 5} for m in steering.SAE_METHODS}
    layer.directions = {m: torch.randn(2, tiny_bridge.cfg.d_model) for m in steering.DIRECTION_METHODS}
    return judge, layer


def test_run_arms_shares_generations_and_picks_the_best_factor(tiny_bridge, prompts, small_setup):
    judge, layer = small_setup
    cfg = steering.SteeringConfig(factors=(0.0, 4.0), max_new_tokens=5)
    arms = [(arm, f) for arm in steering.arms_for([layer], ["ocean", "music"], ["sae_activation", "sae_output",
                                                                                  "diffmean"]) for f in cfg.factors]
    frame = steering.run_arms(tiny_bridge, judge, arms, prompts[:3], [layer], cfg, progress=False)
    assert len(frame) == len(arms) * 3
    same = frame[frame.method.isin(["sae_activation", "sae_output"])].groupby(["topic", "factor", "prompt_index"])
    assert (same.continuation.nunique() == 1).all()  # one feature, one factor: one generation for both methods
    zero = frame[frame.factor == 0.0].groupby(["topic", "prompt_index"]).continuation.nunique()
    assert (zero == 1).all()  # at factor 0 every method is the unsteered run
    best = steering.best_factors(frame)
    assert set(best) == {(m, 1, t) for m in ["sae_activation", "sae_output", "diffmean"] for t in ["ocean", "music"]}
    table = steering.method_table(frame, best)
    assert list(table.columns) == ["concept", "instruction", "fluency", "harmonic", "median factor"]


def test_the_explorer_shows_a_steered_and_an_unsteered_continuation(tiny_bridge, prompts, small_setup):
    judge, layer = small_setup
    cfg = steering.SteeringConfig(max_new_tokens=5)
    box = steering.steering_explorer(tiny_bridge, judge, [layer], prompts[0], cfg=cfg, factors=(0.4, 8.0))
    (topic, method, factor), card = box.children[0].children, box.children[1]
    assert "unsteered" in card.value and "factor 8" in card.value and "topic <b>ocean</b>" in card.value
    factor.value = 0.4
    topic.value = "music"
    assert "factor 0.4" in card.value and "topic <b>music</b>" in card.value
    method.value = ("prompting", None)
    assert "prompting" in card.value


def test_side_by_side_gives_one_row_per_method_and_layer_whatever_factor_each_topic_chose():
    import pandas as pd

    frame = pd.DataFrame({"method": ["sae_output", "sae_output", "unsteered", "unsteered"], "layer": [3, 3, -1, -1],
                          "topic": ["ocean", "music", "ocean", "music"], "factor": [4.0, 0.8, 0.0, 0.0],
                          "prompt_index": [0] * 4, "continuation": [" the reef.", " a song.", " a day.", " a day."],
                          "harmonic": [2.0, 1.5, 0.0, 0.0]})
    table = steering.side_by_side(frame, ["ocean", "music"])
    assert list(table.index) == ["SAE, selected by output score, layer 3", "unsteered"]
    assert table.loc["SAE, selected by output score, layer 3"].to_dict() == {"ocean": " the reef. [2.0, x4]",
                                                                           "music": " a song. [1.5, x0.8]"}
    assert table.loc["unsteered", "ocean"] == " a day. [0.0]"
