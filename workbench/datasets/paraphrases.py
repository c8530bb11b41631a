"""What a pretrained model already knows about the six relations, taught from our own corpus.

The embedded model learns all its language from the synthetic world. With only two QA wordings per
relation it memorises question strings instead of reading what a question asks (issue #10: unseen-template
QA 0.44). This module adds two kinds of training document, both outside the ``"Q: ...\\nA:"`` format:

- ``question``: documents about one person that restate some facts in varied wordings and then ask
  about them in other formats ("Question: ...\\nAnswer: ...", dialogue, "asked ... replied ..."), using
  compositional question frames (wh-phrase x verb phrase, and "what is the <relation noun> of")
  with synonyms of each relation's words. Several questions about the same person in one document make the
  relation words, not the name, decide the answer.
- ``language``: general text about relation words: definitions and synonyms (birthday / date of birth,
  birthplace / home town, alma mater / college, major / field of study, employer / company, workplace /
  office), and questions about companies' office cities.

The unseen QA templates stay unseen: every frame is checked against :func:`forbidden_phrases` (the
wording before ``{name}`` of each unseen template, matched case-insensitively anywhere in a document), and
no question frame equals any QA template, so held-out training-template prompts stay held out as well.
"""

from __future__ import annotations

import itertools
import random

from workbench.datasets.biographies import N_TRAIN_TEMPLATES, QA_TEMPLATES, RELATIONS, Person


def forbidden_phrases() -> list[str]:
    """The distinctive wording of each unseen QA template: its text before ``{name}`` (e.g. "On what date was")."""
    return [t.split("{name}")[0].strip() for r in RELATIONS for t in QA_TEMPLATES[r][N_TRAIN_TEMPLATES:]]


def contains_forbidden(text: str) -> str | None:
    """The first forbidden phrase ``text`` contains (case-insensitive), or ``None``."""
    low = text.lower()
    return next((p for p in forbidden_phrases() if p.lower() in low), None)


# Verb-phrase frames: {wh} + {vp}; each group pairs wh-phrases with the verb phrases that fit them.
_VERB_FRAMES: dict[str, list[tuple[list[str], list[str]]]] = {
    "birth_date": [
        (["When", "On which date", "On which day", "On what day", "What date", "What day", "Which day",
          "In which year and on which day"],
         ["was {name} born", "did {name} come into the world", "did {name} arrive in the world"]),
        (["When", "On which date", "On which day", "On what day"], ["does {name} celebrate a birthday"]),
    ],
    "birth_city": [
        (["Where", "In which town", "In what town", "In what city", "In which place", "In what place"],
         ["was {name} born", "did {name} spend early childhood", "did {name} grow up", "did {name} come into the world"]),
        (["Which city", "What city", "Which town", "What town", "Which place"],
         ["was {name} born in", "did {name} grow up in", "is the birthplace of {name}", "is the home town of {name}"]),
    ],
    "university": [
        (["Where", "At which university", "At what university", "At which college", "At what college", "At which school"],
         ["did {name} study", "did {name} get an education", "did {name} receive an education", "was {name} a student"]),
        (["From what university", "From which college", "From what college", "From which school"],
         ["did {name} graduate", "did {name} get a degree", "did {name} receive a degree"]),
        (["Which university", "What university", "Which college", "What college", "Which school", "What school"],
         ["did {name} graduate from", "did {name} study at", "did {name} go to", "is the alma mater of {name}",
          "did {name} attend"]),
    ],
    "major": [
        (["What", "Which subject", "What subject", "Which field", "What field", "What field of study",
          "Which area of study", "What area of study"],
         ["did {name} major in", "did {name} study", "did {name} choose", "did {name} earn a degree in",
          "did {name} get a degree in", "did {name} choose as a field of study", "is the major of {name}"]),
        (["In which subject", "In what subject", "In which field", "In what field", "In which area"],
         ["did {name} major", "did {name} earn a degree", "did {name} get a degree", "does {name} hold a degree"]),
    ],
    "employer": [
        (["Which company", "What company", "Which firm", "What firm", "Who", "Which employer"],
         ["employs {name}", "does {name} work for", "is {name} employed by", "hired {name}", "pays {name}",
          "is the employer of {name}", "gives {name} a job"]),
        (["For which company", "For what company", "For which firm", "For what firm", "For whom"],
         ["does {name} work", "is {name} working"]),
        (["By which company", "By what company", "By which firm", "By what firm"], ["is {name} employed"]),
        (["At which company", "At what company", "At which firm"], ["does {name} have a job", "is {name} employed"]),
    ],
    "employer_city": [
        (["Where", "In what city", "In which town", "In what town"],
         ["does {name} work", "is the office of {name}", "is the workplace of {name}", "does {name} have a workplace",
          "is the job of {name}", "does {name} commute to work"]),
        (["Which city", "What city", "Which town", "What town"],
         ["does {name} work in", "does {name} commute to", "is the office of {name} in", "is the workplace of {name} in",
          "is the company of {name} in"]),
    ],
}

# Relation nouns (for "what is the <noun> of {name}") and the category word of the answer.
RELATION_NOUNS: dict[str, list[str]] = {
    "birth_date": ["birth date", "date of birth", "birthday", "day of birth", "birth day"],
    "birth_city": ["birth city", "city of birth", "birthplace", "place of birth", "home town", "native city", "birth town"],
    "university": ["university", "alma mater", "college", "school", "old university"],
    "major": ["major", "field of study", "subject", "field", "area of study", "degree subject", "main subject"],
    "employer": ["employer", "company", "firm", "employing company", "boss company"],
    "employer_city": ["work city", "city of work", "workplace", "office city", "office location", "work town"],
}
ANSWER_CATEGORY: dict[str, list[str]] = {
    "birth_date": ["date", "day"], "birth_city": ["city", "town", "place"],
    "university": ["university", "college", "school"], "major": ["subject", "field"],
    "employer": ["company", "firm"], "employer_city": ["city", "town"],
}
_NOUN_FRAMES = ["What is the {noun} of {name}", "What was the {noun} of {name}", "Do you know the {noun} of {name}",
                "Tell me the {noun} of {name}", "Which {cat} is the {noun} of {name}", "What {cat} is the {noun} of {name}",
                "What is {name}'s {noun}", "Which {cat} was the {noun} of {name}", "Can you say the {noun} of {name}"]
_WHERE_NOUNS = {"birth_city": ["birthplace", "place of birth", "home town"], "employer_city": ["office", "workplace", "job", "company office"]}

# Statements in wordings the biographies do not use.
STATEMENTS: dict[str, list[str]] = {
    "birth_date": ["The birthday of {name} is {value}.", "{name}'s date of birth is {value}.", "{name} was born on the date {value}.",
                   "On {value}, {name} was born.", "The day of birth of {name} is {value}."],
    "birth_city": ["The birthplace of {name} is {value}.", "{name}'s home town is {value}.", "{name} is a native of {value}.",
                   "{name} grew up in the town of {value}.", "The place of birth of {name} is {value}."],
    "university": ["{name} is a graduate of {value}.", "{name}'s alma mater is {value}.", "{name} went to college at {value}.",
                   "The university of {name} was {value}.", "{name} attended {value}."],
    "major": ["{name}'s field of study is {value}.", "{name} holds a degree in {value}.", "The subject {name} studied is {value}.",
              "{name} graduated with a major in {value}.", "The area of study of {name} is {value}."],
    "employer": ["{name}'s employer is {value}.", "{name} works at the company {value}.", "{value} employs {name}.",
                 "{name} is on the staff of {value}.", "The company of {name} is {value}."],
    "employer_city": ["The workplace of {name} is in {value}.", "{name}'s office is in {value}.", "{name} goes to work in {value}.",
                      "The office of {name} is located in {value}.", "{name} has a job in the town of {value}."],
}

# Documents that ask questions outside the "Q: ...\nA:" format: {qa} is one or more formatted pairs.
_PAIR_FORMATS = ["Question: {q}\nAnswer: {a}", "Interviewer: {q}\nGuest: {a}.", "A student asked: {q} The teacher replied: {a}.",
                 "{q} The answer is {a}.", "Quiz question: {q} Correct answer: {a}.", "Someone asked, {q} I said {a}.",
                 "Ask: {q}\nReply: {a}"]

DEFINITIONS: dict[str, list[str]] = {
    "birth_date": ["A birthday is the date on which a person was born.", "The birth date of a person is the day the person was born.",
                   "The date of birth is the day, month and year of birth.", "A person celebrates a birthday on the date of birth.",
                   "When someone was born is the birth date, also called the birthday."],
    "birth_city": ["A birthplace is the city where a person was born.", "The birth city of a person is the town of birth.",
                   "The home town of a person is the place where the person was born.", "Where someone was born is the birthplace, also called the city of birth."],
    "university": ["An alma mater is the university a person graduated from.", "The university of a person is the college the person studied at.",
                   "A graduate of a university studied at that college.", "Where someone studied is the alma mater, also called the university or the college."],
    "major": ["A major is the field of study a person chose.", "The major of a student is the subject of the degree.",
              "A field of study is the subject in which a person earns a degree.", "What someone studied is the major, also called the field of study."],
    "employer": ["An employer is the company a person works for.", "The employer of a worker is the firm that employs the worker.",
                 "A company employs people, and a person employed by a company works for it.", "Who employs someone is the employer, also called the company."],
    "employer_city": ["A workplace is the place where a person works.", "The work city of a person is the city of the office.",
                      "The office of a worker is in the city where the worker works.", "Where someone works is the workplace, also called the work city."],
}
_COMPANY_QUESTIONS = [("Where is the office of {c}?", "{city}"), ("In what city is {c} located?", "{city}"),
                      ("Which town is {c} based in?", "{city}"), ("What is the office city of {c}?", "{city}"),
                      ("Where does {c} have its office?", "{city}")]
_COMPANY_STATEMENTS = ["{c} has its office in {city}.", "The office of {c} is in {city}.", "{c} is a company based in {city}.",
                       "People employed by {c} work in {city}.", "The workplace of everyone at {c} is in {city}."]


def _sentence(frame: str) -> str:
    return frame[0].upper() + frame[1:] + "?"


def question_frames(relation: str) -> list[str]:
    """Every question frame (with ``{name}``) for ``relation``: no QA template, no forbidden phrase."""
    frames = []
    for whs, vps in _VERB_FRAMES[relation]:
        frames += [_sentence(f"{wh} {vp}") for wh, vp in itertools.product(whs, vps)]
    for template, noun in itertools.product(_NOUN_FRAMES, RELATION_NOUNS[relation]):
        for cat in ANSWER_CATEGORY[relation] if "{cat}" in template else [""]:
            frames.append(_sentence(template.format(noun=noun, cat=cat, name="{name}")))
    frames += [_sentence(f"Where is the {noun} of {{name}}") for noun in _WHERE_NOUNS.get(relation, [])]
    qa_templates = {t for r in RELATIONS for t in QA_TEMPLATES[r]}
    return sorted({f for f in frames if f not in qa_templates and contains_forbidden(f) is None})


def make_question_documents(people: list[Person], docs_per_person: int, seed: int = 0) -> list[str]:
    """``docs_per_person`` documents per person: 0-2 restated facts, then 1-4 questions in another format."""
    rng = random.Random(f"{seed}-questions")
    frames = {r: question_frames(r) for r in RELATIONS}
    docs = []
    for person in people:
        for _ in range(docs_per_person):
            parts = [rng.choice(STATEMENTS[r]).format(name=person.name, value=person.value(r))
                     for r in rng.sample(RELATIONS, rng.randint(0, 2))]
            fmt = rng.choice(_PAIR_FORMATS)
            pairs = [fmt.format(q=rng.choice(frames[r]).format(name=person.name), a=person.value(r))
                     for r in rng.sample(RELATIONS, rng.randint(1, 4))]
            docs.append(" ".join(parts) + ("\n" if parts else "") + "\n".join(pairs))
    return _checked(docs)


def make_language_documents(companies: dict[str, str], n_docs: int, seed: int = 0) -> list[str]:
    """``n_docs`` documents of definitions and synonyms of the relation words, and facts about companies."""
    rng = random.Random(f"{seed}-language")
    names = sorted(companies)
    docs = []
    for _ in range(n_docs):
        sentences = [rng.choice(DEFINITIONS[r]) for r in rng.sample(RELATIONS, rng.randint(1, 3))]
        c = rng.choice(names)
        sentences.append(rng.choice(_COMPANY_STATEMENTS).format(c=c, city=companies[c]))
        q, a = rng.choice(_COMPANY_QUESTIONS)
        fmt = rng.choice(_PAIR_FORMATS)
        sentences.append(fmt.format(q=q.format(c=c), a=a.format(city=companies[c])))
        rng.shuffle(sentences)
        docs.append(" ".join(sentences))
    return _checked(docs)


def _checked(docs: list[str]) -> list[str]:
    for d in docs:
        if (phrase := contains_forbidden(d)) is not None:
            raise AssertionError(f"a generated document contains the unseen-template wording {phrase!r}: {d!r}")
    return docs
