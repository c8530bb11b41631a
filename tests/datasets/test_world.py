import dataclasses
from collections import Counter

import pytest

from workbench.datasets import RELATIONS, WorldConfig, load_world, synthesize
from workbench.datasets.ioi import BABA_TEMPLATES
from workbench.datasets.vocab import VocabSizes, make_vocabulary


def test_same_seed_same_world_other_seed_other_world(smoke_world):
    again = synthesize(WorldConfig.for_scale("smoke"))
    assert again.people == smoke_world.people
    assert list(again.training_documents()) == list(smoke_world.training_documents())
    other = synthesize(dataclasses.replace(WorldConfig.for_scale("smoke"), seed=1))
    assert other.people != smoke_world.people


def test_full_scale_vocabulary_has_the_papers_sizes_and_no_word_in_two_categories():
    vocab = make_vocabulary(VocabSizes())
    paper = {"first": 411, "middle": 461, "last": 1002, "university": 341, "major": 101, "company": 327}
    assert {k: len(vocab[k]) for k in paper} == paper
    all_words = [w for ws in vocab.words.values() for w in ws]
    assert len(all_words) == len(set(all_words))


def test_people_have_unique_names_and_employer_city_follows_employer(smoke_world):
    names = [p.name for p in smoke_world.people]
    assert len(set(names)) == len(names)
    city_of = {}
    for p in smoke_world.people:
        assert city_of.setdefault(p.employer, p.employer_city) == p.employer_city


def test_biographies_mention_every_relation_value(smoke_world):
    people = {p.person_id: p for p in smoke_world.people}
    for bio in smoke_world.bios:
        for r in RELATIONS:
            assert people[bio["person_id"]].value(r) in bio["text"]


def test_each_person_relation_has_one_corpus_one_heldout_and_two_unseen_prompts(smoke_world):
    splits = Counter((q.person_id, q.relation, q.split) for q in smoke_world.qa)
    for p in smoke_world.people:
        for r in RELATIONS:
            assert splits[(p.person_id, r, "corpus")] == 1
            assert splits[(p.person_id, r, "heldout_train_template")] == 1
            assert splits[(p.person_id, r, "unseen_template")] == 2
    corpus_texts = {t for k, t in smoke_world.training_documents() if k == "qa"}
    for q in smoke_world.qa_split("heldout_train_template") + smoke_world.qa_split("unseen_template"):
        assert q.prompt.startswith("Q: ") and q.prompt.endswith("\nA:")
        assert q.text not in corpus_texts


def test_ioi_eval_names_never_occur_in_ioi_training_text(smoke_world):
    heldout = set(smoke_world.ioi_heldout_names)
    assert heldout.isdisjoint(smoke_world.ioi_train_names)
    for kind, text in smoke_world.training_documents():
        if kind == "ioi":
            assert heldout.isdisjoint(text.replace(",", " ").replace(".", " ").split())
    for p in smoke_world.ioi_eval:
        assert {p.io, p.s, p.counterfactual_io} <= heldout
        assert len({p.io, p.s, p.counterfactual_io}) == 3
        assert p.counterfactual_prompt == p.prompt.replace(p.io, p.counterfactual_io)


def test_ioi_has_at_least_15_templates_in_both_orders(smoke_world):
    assert len(BABA_TEMPLATES) >= 15
    orders = Counter(p.order for p in smoke_world.ioi_eval)
    assert orders["ABBA"] > 0 and orders["BABA"] > 0
    baba = next(p for p in smoke_world.ioi_eval if p.order == "BABA")
    assert baba.prompt.index(baba.s) < baba.prompt.index(baba.io)
    abba = next(p for p in smoke_world.ioi_eval if p.order == "ABBA")
    assert abba.prompt.index(abba.io) < abba.prompt.index(abba.s)


def test_greater_than_training_years_are_later_and_eval_nouns_are_held_out(smoke_world):
    from workbench.datasets.greater_than import make_training_sentences

    sentences = make_training_sentences(smoke_world.gt_train_nouns, 500)
    assert all(s.end_yy > s.yy for s in sentences)
    assert {g.noun for g in smoke_world.gt_eval}.isdisjoint(smoke_world.gt_train_nouns)
    assert [g.yy for g in smoke_world.gt_eval] == list(range(1, 99))
    assert smoke_world.gt_eval[0].prompt.endswith("from the year 1701 to the year 17")


def test_save_then_load_world_round_trips(tmp_path, smoke_world):
    smoke_world.save(tmp_path)
    assert (tmp_path / "metadata.json").exists() and (tmp_path / "qa.jsonl").exists()
    assert load_world(tmp_path).people == smoke_world.people


def test_missing_world_names_the_command_that_creates_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="workbench synth"):
        load_world(tmp_path / "nowhere")


def test_bad_config_values_are_rejected():
    with pytest.raises(ValueError, match="n_people"):
        WorldConfig(n_people=0)
    with pytest.raises(ValueError, match="scale"):
        WorldConfig.for_scale("huge")


def test_ioi_eval_names_occur_in_biographies(smoke_world):
    in_bios = {p.first for p in smoke_world.people}
    assert set(smoke_world.ioi_heldout_names) <= in_bios
    assert len(smoke_world.ioi_heldout_names) >= 3



def test_ioi_heldout_templates_never_occur_in_training_text_but_their_words_do(smoke_world):
    import re

    from workbench.datasets.ioi import HELDOUT_TEMPLATES

    def pattern(template: str) -> re.Pattern:
        body = re.escape(template.replace("[B] and [A]", "[X] and [Y]"))
        for slot in ("\\[X\\]", "\\[Y\\]", "\\[A\\]", "\\[B\\]", "\\[PLACE\\]", "\\[OBJECT\\]"):
            body = body.replace(slot, r"\w+")
        return re.compile(body + r" \w+\.$")

    assert len(HELDOUT_TEMPLATES) >= 3 and set(HELDOUT_TEMPLATES).isdisjoint(BABA_TEMPLATES)
    train_words = {w for t in BABA_TEMPLATES for w in t.replace(",", " ").replace(".", " ").split()}
    for t in HELDOUT_TEMPLATES:
        assert set(t.replace(",", " ").replace(".", " ").split()) <= train_words, t
    heldout_evals = [p for p in smoke_world.ioi_eval if p.heldout_template]
    assert heldout_evals and len(heldout_evals) < len(smoke_world.ioi_eval)
    assert all(pattern(HELDOUT_TEMPLATES[p.template_id - len(BABA_TEMPLATES)]).match(p.text) for p in heldout_evals)
    train_patterns = [pattern(t) for t in BABA_TEMPLATES]
    heldout_patterns = [pattern(t) for t in HELDOUT_TEMPLATES]
    for kind, text in smoke_world.training_documents():
        if kind == "ioi":
            assert any(p.match(text) for p in train_patterns), text
            assert not any(p.match(text) for p in heldout_patterns), text
