import dataclasses
import re

from workbench.datasets import RELATIONS, WorldConfig, synthesize
from workbench.datasets import paraphrases as para
from workbench.datasets.biographies import N_TRAIN_TEMPLATES, QA_TEMPLATES


def _unseen_patterns(world):
    """For every unseen template and person: the template's prefix, the name, then its suffix."""
    for r in RELATIONS:
        for template in QA_TEMPLATES[r][N_TRAIN_TEMPLATES:]:
            prefix, suffix = template.split("{name}")
            yield re.compile(re.escape(prefix) + r"\s*(" + "|".join(re.escape(p.name) for p in world.people)
                             + r")\s*" + re.escape(suffix), re.IGNORECASE)


def test_forbidden_phrases_are_the_unseen_templates_wording():
    assert para.forbidden_phrases() == [
        "On what date was", "What day is the birthday of", "In which city was", "What is the birthplace of",
        "From which university did", "What is the alma mater of", "Which field of study did", "In what did",
        "What is the employer of", "Which company is", "In which city is the office of", "Where is the workplace of"]


def test_unseen_templates_appear_nowhere_in_the_training_text(smoke_world):
    docs = list(smoke_world.training_documents())
    kinds = {k for k, _ in docs}
    assert {"question", "language"} <= kinds, "the smoke world must exercise the paraphrase generators"
    patterns = list(_unseen_patterns(smoke_world))
    phrases = [p.lower() for p in para.forbidden_phrases()]
    for kind, text in docs:
        low = text.lower()
        assert not any(p in low for p in phrases), (kind, text)
        assert not any(p.search(text) for p in patterns), (kind, text)


def test_every_frame_and_sentence_the_generators_can_use_is_clean():
    qa_templates = {t for r in RELATIONS for t in QA_TEMPLATES[r]}
    for r in RELATIONS:
        frames = para.question_frames(r)
        assert len(frames) >= 50, r
        assert all("{name}" in f for f in frames)
        assert qa_templates.isdisjoint(frames)
        assert all(para.contains_forbidden(f) is None for f in frames)
        assert all(para.contains_forbidden(s) is None for s in para.STATEMENTS[r] + para.DEFINITIONS[r])
    for fmt in para._PAIR_FORMATS:
        assert "Q:" not in fmt and "\nA:" not in fmt
    for q, _ in para._COMPANY_QUESTIONS:
        assert para.contains_forbidden(q) is None
    assert all(para.contains_forbidden(s) is None for s in para._COMPANY_STATEMENTS)


def test_qa_format_keeps_two_training_templates_per_relation(smoke_world):
    train_questions = {t.format(name=p.name) for r in RELATIONS for t in QA_TEMPLATES[r][:N_TRAIN_TEMPLATES]
                       for p in smoke_world.people}
    for kind, text in smoke_world.training_documents():
        if kind == "qa":
            question = text.removeprefix("Q: ").split("\nA:")[0]
            assert question in train_questions
        else:
            assert "Q:" not in text and "\nA:" not in text, (kind, text)


def test_question_documents_answer_with_the_persons_values(smoke_world):
    people = {p.name: p for p in smoke_world.people}
    docs = [t for k, t in smoke_world.training_documents() if k == "question"]
    assert len(docs) == smoke_world.config.question_docs_per_person * len(smoke_world.people)
    for doc in docs:
        person = next(p for n, p in people.items() if n in doc)
        values = {person.value(r) for r in RELATIONS}
        answers = re.findall(r"Answer: (.*)", doc)
        assert all(a in values for a in answers)


def test_paraphrase_kinds_are_off_at_zero_and_deterministic():
    cfg = dataclasses.replace(WorldConfig.for_scale("smoke"), question_docs_per_person=0, language_docs=0)
    assert {k for k, _ in synthesize(cfg).training_documents()}.isdisjoint({"question", "language"})
    smoke = WorldConfig.for_scale("smoke")
    a = [t for k, t in synthesize(smoke).training_documents() if k in ("question", "language")]
    b = [t for k, t in synthesize(smoke).training_documents() if k in ("question", "language")]
    assert a == b and a
