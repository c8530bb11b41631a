"""Concept binding, fragmentation and swaps: the metrics on hand-made cases, and every swap checked against a real
intervention on a tiny random model (the splice keeps the error term, so an edit moves the run by exactly the
decoded difference)."""

import math

import pytest
import torch

from workbench import hooks, interventions
from workbench.analysis import alignment
from workbench.datasets import RELATIONS
from workbench.dictionaries import make_training_sae


def test_efffeat_is_one_for_a_one_hot_mass_and_n_for_a_uniform_one():
    concept = torch.tensor([0, 0, 1, 1])
    codes = torch.zeros(4, 5)
    codes[:2, 3] = 2.0  # concept 0: all its mass on feature 3
    codes[2:, :4] = 1.0  # concept 1: even over 4 features
    frag = alignment.fragmentation(codes, concept, 2)
    assert frag.efffeat == pytest.approx([1.0, 4.0]) and frag.top1conc == pytest.approx([1.0, 0.25])
    assert frag.mean_efffeat == pytest.approx(2.5)
    over = alignment.fragmentation(codes, concept, 2, features=[0, 3])  # over two chosen features only
    assert over.efffeat == pytest.approx([1.0, 2.0])
    codes[:2] = -1.0  # negative means carry no mass; nothing left for concept 0
    frag = alignment.fragmentation(codes, concept, 2)
    assert frag.efffeat[0] == 5.0 and frag.top1conc[0] == 0.0 and all(map(math.isfinite, frag.efffeat))


def test_confusion_rows_are_true_concepts_and_the_diagonal_accuracy_is_their_mean():
    slot_codes = torch.tensor([[3.0, 0, 0], [0, 2.0, 0], [0, 3.0, 1.0], [1.0, 0, 0], [0, 0, 4.0], [0, 0, 1.0]])
    concept = torch.tensor([0, 1, 1, 1, 2, 2])
    conf = alignment.confusion_matrix(slot_codes, concept)
    expected = torch.tensor([[1.0, 0, 0], [1 / 3, 2 / 3, 0], [0, 0, 1.0]])
    assert torch.allclose(conf, expected)
    assert alignment.diagonal_accuracy(conf) == pytest.approx((1 + 2 / 3 + 1) / 3)


def test_selective_features_pick_the_planted_feature_not_the_one_that_fires_everywhere():
    concept = torch.tensor([0, 0, 1, 1])
    codes = torch.tensor([[9.0, 2.0, 0.0], [9.0, 2.0, 0.0], [9.0, 0.0, 1.0], [9.0, 0.0, 1.0]])
    assert alignment.selective_features(codes, concept, 2) == [1, 2]


def test_lenient_match_is_the_official_substring_comparison():
    assert alignment.lenient_match("Zoulfield University", "University")
    assert alignment.lenient_match("Dance", "dance")
    assert not alignment.lenient_match("Dance", "")
    assert not alignment.lenient_match("Trastead", "Semstead")


def test_swap_edit_changes_only_the_two_slots_at_the_position():
    torch.manual_seed(0)
    codes = torch.rand(3, 5, 8)
    source, target = torch.tensor([0, 1, 2]), torch.tensor([1, 2, 0])
    keep, mult, add = alignment.swap_parameters(["latent_decode", "decoder_column", "latent_decode"],
                                                torch.tensor([2.0, 1.0, 0.5]), torch.tensor([3.0, 1.0, 4.0]),
                                                torch.tensor([1.0, 10.0, 1.0]), torch.tensor([1.0, 2.0, 1.0]))
    edited = alignment.swap_edit(4, source, target, keep, mult, add)(codes.clone())
    changed = (edited != codes).nonzero().tolist()
    assert changed == [[0, 4, 0], [0, 4, 1], [1, 4, 2], [2, 4, 0], [2, 4, 2]]  # row 1 keeps its source slot
    assert edited[0, 4, 0] == 0 and edited[0, 4, 1] == 6.0  # latent: z[r] = 0, z[r'] = alpha * m[r']
    assert edited[1, 4, 2] == pytest.approx(codes[1, 4, 2] + 5.0)  # column: + alpha * ||h|| / ||d||
    with pytest.raises(ValueError, match="unknown swap mode"):
        alignment.swap_parameters(["steer"], torch.ones(1), torch.ones(1), torch.ones(1), torch.ones(1))


@pytest.fixture()
def dictionary(tiny_bridge):
    torch.manual_seed(0)
    sae = make_training_sae("alignsae", d_in=tiny_bridge.cfg.d_model, d_sae=48, concepts=RELATIONS)
    with torch.no_grad():
        sae.b_enc.add_(0.5)  # every code fires, so every edit shows
    return sae.eval()


@pytest.fixture()
def qa(tiny_bridge, smoke_world):
    examples = alignment.qa_examples(smoke_world, "heldout_train_template", limit=12)
    return alignment.qa_activations(tiny_bridge, examples, [hooks.resid_pre(1)])


def test_qa_examples_interleave_relations(smoke_world):
    examples = alignment.qa_examples(smoke_world, "unseen_template", limit=12)
    assert [q.relation for q in examples[:6]] == list(RELATIONS) and len(examples) == 12


def test_qa_activations_read_the_last_prompt_token(tiny_bridge, qa):
    hook = hooks.resid_pre(1)
    i = 5
    tokens = qa.prompts.tokens[i:i + 1, :int(qa.prompts.lengths[i])]
    _, cache = tiny_bridge.run_with_cache(tokens, names_filter=[hook])
    assert torch.allclose(qa.acts[hook][i], cache[hook][0, -1], atol=1e-5)
    assert qa.concepts == RELATIONS and qa.concept[i] == RELATIONS.index(qa.examples[i].relation)


def test_decoder_column_swap_equals_adding_the_scaled_column_and_is_exact_at_alpha_zero(tiny_bridge, dictionary, qa):
    hook = hooks.resid_pre(1)
    idx = [i for i in range(len(qa)) if qa.prompts.lengths[i] == qa.prompts.lengths[0]][:3]
    n = int(qa.prompts.lengths[0])
    tokens = qa.prompts.tokens[idx, :n]
    source, target = qa.concept[idx], (qa.concept[idx] + 1) % 6
    h_norm = qa.acts[hook][idx].norm(dim=1)
    d_norm = dictionary.W_dec.detach()[target].norm(dim=1)
    clean = tiny_bridge(tokens)
    for alpha in (0.0, 2.0):
        keep, mult, add = alignment.swap_parameters(["decoder_column"] * 3, torch.full((3,), alpha), torch.ones(3),
                                                    h_norm, d_norm)
        splice = interventions.Splice(dictionary, hook, positions=[n - 1],
                                      edit=alignment.swap_edit(n - 1, source, target, keep, mult, add))
        with interventions.spliced(tiny_bridge, splice):
            swapped = tiny_bridge(tokens)
        vectors = (alpha * h_norm / d_norm)[:, None] * dictionary.W_dec.detach()[target]  # [3, d_model]
        with interventions.hooked(tiny_bridge, [(hook, lambda act, hook_, v=vectors: _add_last(act, v, n - 1))]):
            added = tiny_bridge(tokens)
        assert torch.allclose(swapped, added, atol=1e-4), f"alpha {alpha}: the column swap is not h + alpha beta d"
        if alpha == 0:
            assert torch.allclose(swapped, clean, atol=1e-4)
        else:
            assert torch.allclose(swapped[:, :n - 1], clean[:, :n - 1], atol=1e-5)  # earlier positions untouched
            assert not torch.allclose(swapped[:, -1], clean[:, -1], atol=1e-3)


def _add_last(act, vectors, position):
    act = act.clone()
    act[:, position] += vectors
    return act


def test_latent_decode_swap_moves_the_run_by_the_decoded_difference(tiny_bridge, dictionary, qa):
    hook = hooks.resid_pre(1)
    n = int(qa.prompts.lengths[0])
    tokens = qa.prompts.tokens[:1, :n]
    source, target = qa.concept[:1], (qa.concept[:1] + 2) % 6
    keep, mult, add = alignment.swap_parameters(["latent_decode"], torch.tensor([2.0]), torch.tensor([1.5]),
                                                torch.ones(1), torch.ones(1))
    splice = interventions.Splice(dictionary, hook, positions=[n - 1],
                                  edit=alignment.swap_edit(n - 1, source, target, keep, mult, add))
    with interventions.spliced(tiny_bridge, splice):
        swapped = tiny_bridge(tokens)
    h = qa.acts[hook][:1]
    z = dictionary.encode(h)
    z_new = z.clone()
    z_new[0, source] = 0
    z_new[0, target] = 3.0
    delta = (dictionary.decode(z_new) - dictionary.decode(z)).detach()
    with interventions.hooked(tiny_bridge, [(hook, lambda act, hook_: _add_last(act, delta, n - 1))]):
        expected = tiny_bridge(tokens)
    assert torch.allclose(swapped, expected, atol=1e-4)


def test_run_swaps_records_every_swap_and_scores_them_consistently(tiny_bridge, dictionary, qa, smoke_world):
    hook = hooks.resid_pre(1)
    data = alignment.subset(qa, 4)
    results = alignment.run_swaps(tiny_bridge, dictionary, hook, data, smoke_world, list(range(6)), [1.0] * 6,
                                  alphas=(1.0, 5.0), modes=alignment.SWAP_MODES)
    assert len(results.records) == 4 * 5 * 2 * 2
    assert all(r["lenient"] for r in results.records if r["strict"])
    assert all(r["target"] != r["relation"] for r in results.records)
    people = {p.person_id: p for p in smoke_world.people}
    assert all(r["gold"] == people[r["person_id"]].value(r["target"]) for r in results.records)
    summary = results.summary()
    assert set(summary["strict"]) == set(alignment.SWAP_MODES) and set(summary["strict"]["latent_decode"]) == {"1", "5"}
    assert summary["n_swaps_per_setting"] == 20 and 0 <= summary["baseline_accuracy"] <= 1


def test_concept_report_uses_the_slots_of_an_alignsae_and_selective_features_otherwise(dictionary, qa):
    hook = hooks.resid_pre(1)
    report = alignment.concept_report(dictionary, hook, qa, qa, qa)
    assert report.slots == list(range(6)) and len(report.fragmentation.efffeat) == 6
    assert 1 <= report.fragmentation.mean_efffeat <= 6  # over the 6 slots only
    standard = make_training_sae("standard", d_in=dictionary.cfg.d_in, d_sae=48).eval()
    report = alignment.concept_report(standard, hook, qa, qa)
    assert report.unseen_template_slot_accuracy is None and len(report.slots) == 6
    summary = report.summary()
    assert {"diag_accuracy", "efffeat", "top1conc", "explained_variance"} <= set(summary)
    wrong = make_training_sae("alignsae", d_in=dictionary.cfg.d_in, d_sae=48, concepts=("a", "b")).eval()
    with pytest.raises(ValueError, match="has 2 concept slots but the data has K=6"):
        alignment.concept_report(wrong, hook, qa, qa)


def test_text_activations_skip_the_opening_sentence_and_label_each_token(tiny_bridge, smoke_world):
    passages = [smoke_world.topic_eval[0], smoke_world.topic_eval[-1]]
    texts, topics = [p.text for p in passages], [p.topic for p in passages]
    hook = hooks.resid_pre(0)
    data = alignment.text_activations(tiny_bridge, texts, [hook], labels=topics, concepts=tuple(dict.fromkeys(topics)),
                                      skip_first_sentence=True)
    tok = tiny_bridge.tokenizer
    expected = [len(tok(t.split(". ", 1)[1], add_special_tokens=False).input_ids) for t in texts]
    assert data.concept.tolist() == [0] * expected[0] + [1] * expected[1]
    plain = alignment.text_activations(tiny_bridge, texts, [hook])
    assert len(plain) == sum(len(tok(t, add_special_tokens=False).input_ids) for t in texts)
    assert (plain.concept == -1).all()


def test_swap_explorer_updates_without_a_front_end(tiny_bridge, dictionary, smoke_world):
    hook = hooks.resid_pre(1)
    box = alignment.swap_explorer(tiny_bridge, dictionary, hook, smoke_world, list(range(6)), [1.0] * 6)
    person, relation, target, mode, alpha, out = box.children
    first = smoke_world.people[0]
    assert first.name.split()[0] in out.value and "aimed at" in out.value
    person.value = smoke_world.people[3].person_id
    target.value = "major"
    mode.value = "decoder_column"
    alpha.value = 10.0
    chosen = smoke_world.people[3]
    assert chosen.name.split()[0] in out.value and f"aimed at {chosen.major}" in out.value
    assert "decoder_column, alpha 10" in out.value


def test_swap_examples_alternate_a_success_and_a_failure():
    records = [{"mode": "latent_decode", "alpha": 2.0, "strict": i % 3 == 0, "id": i} for i in range(9)]
    results = alignment.SwapResults(records, 1.0)
    shown = alignment.swap_examples(results, "latent_decode", 2.0, n=2)
    assert [r["strict"] for r in shown] == [True, False]
    assert len(alignment.swap_examples(results, "latent_decode", 2.0, n=9)) == 9
    assert alignment.swap_examples(results, "decoder_column", 2.0) == []


def test_a_position_trains_saves_loads_and_records_the_same_numbers(tiny_bridge, smoke_world, tmp_path):
    """The notebook's path on a tiny model: splits, an AlignSAE and its standard control at two positions, saved,
    loaded back by the fast path with identical reports, and every headline number recorded as finite."""
    from workbench.results import NotebookResults

    hook_names = alignment.residual_hooks(tiny_bridge.cfg.n_layers)
    assert hook_names == ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", "blocks.1.hook_resid_post"]
    splits = alignment.qa_splits(tiny_bridge, smoke_world, hook_names[1:], n_train=120, n_held_out=24, n_unseen=24,
                                 n_bio_tokens=300)
    assert splits.counts() == {"train_prompts": 120, "held_out_prompts": 24, "unseen_prompts": 24,
                               "biography_tokens": 300}
    train_people = {q.person_id for q in splits.train.examples}
    assert not train_people & {q.person_id for q in splits.held_out.examples + splits.unseen.examples}
    settings = alignment.ConceptTraining(d_sae=32, reconstruction_steps=5, alignment_steps=10, batch_size=16)
    kw = dict(n_values=tiny_bridge.cfg.d_vocab, n_swap=2, load_root=tmp_path, save_root=tmp_path, scale="smoke")
    sweep = [alignment.align_position(tiny_bridge, smoke_world, splits, pos, hook, settings, train=True, **kw)
             for pos, hook in enumerate(hook_names[1:], start=1)]
    assert (tmp_path / "alignsae_resid_2" / "cfg.json").exists() and all(r.how == "trained" for r in sweep)
    again = alignment.align_position(tiny_bridge, smoke_world, splits, 2, hook_names[2], settings, train=False, **kw)
    assert again.how == "loaded" and again.report.summary() == sweep[1].report.summary()
    standard = alignment.align_position(tiny_bridge, smoke_world, splits, 2, hook_names[2], settings, train=True,
                                        kind="standard", **kw)
    per_layer = alignment.horizon_arrays(sweep)
    assert len(per_layer["diag_accuracy"]) == 2 and "swap_strict_alpha2_decoder_column" in per_layer
    best = sweep[alignment.best_position(per_layer)]
    results = NotebookResults("04_alignsae", "smoke")
    swaps = alignment.run_swaps(tiny_bridge, best.dictionary, best.hook, alignment.subset(
        alignment.rows(splits.held_out, best.hook), 2), smoke_world, best.report.slots, best.report.on_values)
    alignment.record_results(results, best=best, standard=standard, official=again, swaps=swaps, per_layer=per_layer,
                             topics=again, settings=settings, counts=splits.counts(), path="train")
    for key in ("hook", "best_layer", "diag_accuracy", "unseen_template_slot_accuracy", "swap_success",
                "swap_answer_type_rate_on_failure", "efffeat", "top1conc", "per_layer", "topic_diag_accuracy"):
        assert key in results.metrics, key
    assert set(results.metrics["swap_success"]["strict"]["latent_decode"]) == {"0.5", "1", "2", "5", "10"}
    numbers = [c.ours for c in results.claims]
    assert all(isinstance(v, float) and math.isfinite(v) for v in numbers), numbers
    with pytest.raises(ValueError, match="unknown dictionary kind"):
        alignment.dictionary_dir(tmp_path, 0, "crosscoder")
