"""Synthetic biographies and QA prompts, as in AlignSAE (Yang et al. 2025).

People have six relations (birth date, birth city, university, major, employer, employer city; the
employer city is the employer's, as in the paper's data). Each person gets several biography variants
whose sentence order and wording vary. QA prompts use the paper's format ``"Q: ...\\nA:"``; each relation
has two *training* templates and two *unseen* ones. For every (person, relation) exactly one of the two
training templates appears in the training corpus; the other is held out, so "train-template accuracy"
is still measured on prompts the model never saw.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

from workbench.datasets.vocab import MONTHS, Vocabulary

RELATIONS: tuple[str, ...] = ("birth_date", "birth_city", "university", "major", "employer", "employer_city")

# Biography sentence templates: several wordings per relation, none shared between relations.
BIO_TEMPLATES: dict[str, list[str]] = {
    "birth_date": ["{name} was born on {value}.", "{name} came into the world on {value}.",
                   "{name} celebrates a birthday on {value}.", "The birth date of {name} is {value}."],
    "birth_city": ["{name} was born in {value}.", "{name} has {value} as a birthplace.",
                   "{name} spent early childhood in {value}.", "The birth city of {name} is {value}."],
    "university": ["{name} studied at {value}.", "{name} graduated from {value}.",
                   "{name} received an education at {value}.", "The alma mater of {name} is {value}."],
    "major": ["{name} majored in {value}.", "{name} earned a degree in {value}.",
              "{name} chose {value} as a field of study.", "The major of {name} was {value}."],
    "employer": ["{name} works for {value}.", "{name} is employed by {value}.",
                 "{name} has a job at {value}.", "The employer of {name} is {value}."],
    "employer_city": ["{name} works in the city of {value}.", "{name} commutes to an office in {value}.",
                      "{name} has a workplace in {value}.", "The work city of {name} is {value}."],
}

# QA templates: the first two are training templates, the last two are never trained on.
QA_TEMPLATES: dict[str, list[str]] = {
    "birth_date": ["When was {name} born?", "What is the birth date of {name}?",
                   "On what date was {name} born?", "What day is the birthday of {name}?"],
    "birth_city": ["Where was {name} born?", "What is the birth city of {name}?",
                   "In which city was {name} born?", "What is the birthplace of {name}?"],
    "university": ["Which university did {name} attend?", "Where did {name} study?",
                   "From which university did {name} graduate?", "What is the alma mater of {name}?"],
    "major": ["What did {name} major in?", "What was the major of {name}?",
              "Which field of study did {name} choose?", "In what did {name} earn a degree?"],
    "employer": ["Which company does {name} work for?", "Who employs {name}?",
                 "What is the employer of {name}?", "Which company is {name} employed by?"],
    "employer_city": ["Which city does {name} work in?", "What is the work city of {name}?",
                      "In which city is the office of {name}?", "Where is the workplace of {name}?"],
}
N_TRAIN_TEMPLATES = 2


@dataclass(frozen=True)
class Person:
    """One person of the synthetic world and their six attribute values (as answer strings)."""

    person_id: int
    first: str
    middle: str
    last: str
    birth_date: str
    birth_city: str
    university: str
    major: str
    employer: str
    employer_city: str

    @property
    def name(self) -> str:
        return f"{self.first} {self.middle} {self.last}"

    def value(self, relation: str) -> str:
        if relation not in RELATIONS:
            raise ValueError(f"unknown relation {relation!r}; choose from {RELATIONS}")
        return getattr(self, relation)


@dataclass(frozen=True)
class QAExample:
    """A QA prompt labelled with its person, relation and answer.

    ``split`` is ``"corpus"`` (in the training text), ``"heldout_train_template"`` (a training template,
    held out for this person and relation) or ``"unseen_template"``.
    """

    person_id: int
    relation: str
    template_id: int
    split: str
    prompt: str
    answer: str

    @property
    def text(self) -> str:
        """The prompt followed by its answer, as it appears in the training corpus."""
        return f"{self.prompt} {self.answer}"


def qa_prompt(question: str) -> str:
    return f"Q: {question}\nA:"


def make_people(vocab: Vocabulary, n_people: int, seed: int = 0) -> list[Person]:
    """``n_people`` people with unique full names and random attributes, deterministic in ``seed``."""
    rng = random.Random(seed)
    max_names = len(vocab["first"]) * len(vocab["middle"]) * len(vocab["last"])
    if n_people > max_names:
        raise ValueError(f"n_people={n_people} exceeds the {max_names} distinct full names the vocabulary allows")
    company_city = {c: rng.choice(vocab["city"]) for c in vocab["company"]}
    seen: set[tuple[str, str, str]] = set()
    people = []
    while len(people) < n_people:
        full = (rng.choice(vocab["first"]), rng.choice(vocab["middle"]), rng.choice(vocab["last"]))
        if full in seen:
            continue
        seen.add(full)
        employer = rng.choice(vocab["company"])
        people.append(Person(
            person_id=len(people), first=full[0], middle=full[1], last=full[2],
            birth_date=f"{rng.randint(1, 28)} {rng.choice(MONTHS)} {rng.randint(1900, 1999)}",
            birth_city=rng.choice(vocab["city"]),
            university=f"{rng.choice(vocab['university'])} University",
            major=rng.choice(vocab["major"]),
            employer=employer,
            employer_city=company_city[employer],
        ))
    return people


def make_biographies(people: list[Person], n_variants: int = 5, seed: int = 0) -> list[dict]:
    """``n_variants`` biographies per person: shuffled sentence order, a random wording per sentence."""
    rng = random.Random(seed)
    bios = []
    for person in people:
        for variant in range(n_variants):
            relations = list(RELATIONS)
            rng.shuffle(relations)
            sentences = [rng.choice(BIO_TEMPLATES[r]).format(name=person.name, value=person.value(r)) for r in relations]
            bios.append({"person_id": person.person_id, "variant": variant, "text": " ".join(sentences)})
    return bios


def make_qa(people: list[Person], seed: int = 0) -> list[QAExample]:
    """Every (person, relation, template) QA prompt, split as described in the module docstring."""
    rng = random.Random(seed)
    examples = []
    for person in people:
        for relation in RELATIONS:
            in_corpus = rng.randrange(N_TRAIN_TEMPLATES)
            for template_id, template in enumerate(QA_TEMPLATES[relation]):
                if template_id >= N_TRAIN_TEMPLATES:
                    split = "unseen_template"
                elif template_id == in_corpus:
                    split = "corpus"
                else:
                    split = "heldout_train_template"
                examples.append(QAExample(person.person_id, relation, template_id, split,
                                          qa_prompt(template.format(name=person.name)), person.value(relation)))
    return examples


def person_to_dict(person: Person) -> dict:
    return asdict(person) | {"name": person.name}


def qa_to_dict(example: QAExample) -> dict:
    return asdict(example)
