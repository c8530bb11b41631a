"""The synthetic world: every data set of the project, built deterministically from one config.

``synthesize(WorldConfig)`` makes the vocabularies, people, biographies, QA prompts, IOI and
greater-than prompts and topic passages; ``World.save`` writes the evaluation sets and a metadata file
under ``data/datasets/<name>/``; ``World.training_documents()`` yields the mixed training corpus
(regenerated from the seed rather than stored, since it is large).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from workbench.datasets import biographies, greater_than, ioi, paraphrases, topics
from workbench.datasets.vocab import VocabSizes, Vocabulary, make_vocabulary
from workbench.paths import datasets_dir

FORMAT_VERSION = 1


@dataclass(frozen=True)
class WorldConfig:
    """Sizes and seed of the synthetic world. ``full`` is the AlignSAE paper's scale."""

    name: str = "full"
    """Folder name under ``data/datasets/``."""
    seed: int = 0
    """Every generator derives its random state from this."""
    n_people: int = 1000
    """People with biographies (paper: 1,000)."""
    n_bio_variants: int = 5
    """Biographies per person with shuffled order and wording (paper: 5)."""
    vocab: VocabSizes = field(default_factory=VocabSizes)
    """How many invented words each category gets."""
    ioi_heldout_fraction: float = 0.2
    """Share of first names never used in IOI training text (evaluation uses only these)."""
    ioi_train_on_all_name_lists: bool = True
    """Draw IOI training names from the middle and last names too, not only the remaining first names:
    ~1,800 distinct name tokens teach a copying mechanism that transfers to the held-out names, where
    ~330 invite memorising each name (measured: 0.91 vs 1.0 accuracy on held-out vs training names)."""
    question_docs_per_person: int = 48
    """Documents per person that restate facts in new wordings and ask about them outside the QA format
    (``question`` kind, see ``datasets/paraphrases.py``); 0 leaves them out. Never the unseen templates' wording."""
    language_docs: int = 10_000
    """Documents of general language about the relation words (definitions, synonyms, companies' office
    cities; ``language`` kind); 0 leaves them out."""
    n_ioi_train: int = 100_000
    """IOI sentences in the training corpus."""
    n_ioi_eval: int = 500
    """IOI evaluation prompts (held-out names)."""
    n_gt_train: int = 60_000
    """Greater-than sentences in the training corpus."""
    n_topic_train: int = 1_500
    """Training passages per topic (and of neutral filler)."""
    n_topic_eval: int = 50
    """Held-out passages per topic, for topic-continuation evaluation and classifiers."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.startswith("n_") and value < 1:
                raise ValueError(f"WorldConfig.{f.name} must be >= 1, got {value}")
        for name in ("question_docs_per_person", "language_docs"):
            if getattr(self, name) < 0:
                raise ValueError(f"WorldConfig.{name} must be >= 0, got {getattr(self, name)}")

    @classmethod
    def for_scale(cls, scale: str) -> WorldConfig:
        """``"full"`` (the paper's sizes) or ``"smoke"`` (tiny, for tests: seconds to build and train on)."""
        if scale == "full":
            return cls()
        if scale == "smoke":
            return cls(name="smoke", n_people=40, n_bio_variants=2, n_ioi_train=400, n_ioi_eval=40,
                       n_gt_train=300, n_topic_train=20, n_topic_eval=5, question_docs_per_person=1, language_docs=20,
                       vocab=VocabSizes(first=60, middle=40, last=60, city=30, university=20, major=20, company=20))
        raise ValueError(f"unknown scale {scale!r}; choose 'full' or 'smoke'")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> WorldConfig:
        # Worlds saved before the paraphrase kinds existed had none.
        old = {"question_docs_per_person": 0, "language_docs": 0}
        return cls(**(old | d | {"vocab": VocabSizes(**d["vocab"])}))


@dataclass
class World:
    """Everything synthesized from a :class:`WorldConfig`."""

    config: WorldConfig
    vocab: Vocabulary
    people: list[biographies.Person]
    bios: list[dict]
    qa: list[biographies.QAExample]
    ioi_train_names: list[str]
    ioi_heldout_names: list[str]
    ioi_eval: list[ioi.IOIPrompt]
    gt_train_nouns: list[str]
    gt_heldout_nouns: list[str]
    gt_eval: list[greater_than.GreaterThanPrompt]
    topic_eval: list[topics.TopicPassage]

    def held_out(self) -> dict:
        """What the model never reads in training, for the model's ``metadata.json`` and notebook 02: the unseen
        QA templates per relation, the IOI names and templates held out of IOI text (and the held-out names
        dropped from evaluation because no training text contains them), and the greater-than nouns."""
        first_names = self.vocab.words["first"]
        _, split_off = ioi.split_names(first_names, self.config.ioi_heldout_fraction, seed=self.config.seed)
        return {
            "qa_unseen_templates": {r: t[biographies.N_TRAIN_TEMPLATES:]
                                    for r, t in biographies.QA_TEMPLATES.items()},
            "qa_training_template_prompts": "for each (person, relation), one of the two training templates is in "
                                            "the corpus and the other is held out: evaluation asks with that one",
            "ioi_names": {
                "held_out_of_ioi_text": self.ioi_heldout_names,
                "note": "seen in biographies, not in IOI text",
                "excluded_from_evaluation": sorted(set(split_off) - set(self.ioi_heldout_names)),
                "why_excluded": "these held-out first names occur in no training text at all (no biography uses "
                                "them): their embeddings are untrained, which no copying mechanism can read",
            },
            "ioi_templates_held_out_of_training": list(ioi.HELDOUT_TEMPLATES),
            "greater_than_nouns_held_out": self.gt_heldout_nouns,
        }

    def qa_split(self, split: str) -> list[biographies.QAExample]:
        splits = {"corpus", "heldout_train_template", "unseen_template"}
        if split not in splits:
            raise ValueError(f"unknown QA split {split!r}; choose from {sorted(splits)}")
        return [q for q in self.qa if q.split == split]

    def training_documents(self) -> Iterator[tuple[str, str]]:
        """(kind, text) for every training document, in a fixed order; the trainer shuffles and mixes."""
        c = self.config
        for b in self.bios:
            yield "biography", b["text"]
        for q in self.qa_split("corpus"):
            yield "qa", q.text
        if c.question_docs_per_person:
            for text in paraphrases.make_question_documents(self.people, c.question_docs_per_person, seed=c.seed):
                yield "question", text
        if c.language_docs:
            companies = {p.employer: p.employer_city for p in self.people}
            for text in paraphrases.make_language_documents(companies, c.language_docs, seed=c.seed):
                yield "language", text
        for p in ioi.make_ioi_prompts(self.ioi_train_names, c.n_ioi_train, seed=c.seed + 1):
            yield "ioi", p.text
        for g in greater_than.make_training_sentences(self.gt_train_nouns, c.n_gt_train, seed=c.seed + 2):
            yield "greater_than", g.text
        for topic in [*topics.TOPICS, "neutral"]:
            for p in topics.make_passages(topic, c.n_topic_train, seed=c.seed + 3):
                yield "topic", p.text

    def all_texts(self) -> Iterator[str]:
        """Every text the world can produce (training and evaluation), e.g. to build a tokenizer's vocabulary."""
        yield from (text for _, text in self.training_documents())
        for q in self.qa:
            yield q.text
        for p in self.ioi_eval:
            yield p.text
            yield f"{p.counterfactual_prompt} {p.counterfactual_io}."
        for g in self.gt_eval:
            yield g.prompt + "".join(f"{yy:02d}" for yy in range(100))
        for p in self.topic_eval:
            yield p.text
        yield " ".join(w for ws in self.vocab.words.values() for w in ws)

    def save(self, root: Path | None = None) -> Path:
        """Write the world's data sets and ``metadata.json`` to ``root`` (default ``data/datasets/<name>``)."""
        root = Path(root) if root is not None else datasets_dir() / self.config.name
        root.mkdir(parents=True, exist_ok=True)
        _write_jsonl(root / "people.jsonl", [biographies.person_to_dict(p) for p in self.people])
        _write_jsonl(root / "biographies.jsonl", self.bios)
        _write_jsonl(root / "qa.jsonl", [biographies.qa_to_dict(q) for q in self.qa])
        _write_jsonl(root / "ioi_eval.jsonl", [ioi.ioi_to_dict(p) for p in self.ioi_eval])
        _write_jsonl(root / "greater_than_eval.jsonl", [greater_than.gt_to_dict(g) for g in self.gt_eval])
        _write_jsonl(root / "topic_eval.jsonl", [topics.passage_to_dict(p) for p in self.topic_eval])
        (root / "vocabulary.json").write_text(json.dumps(self.vocab.words, indent=1))
        meta = {
            "format_version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "produced_by": "workbench synth (notebook 01_dataset_synthesis shows it)",
            "counts": self.counts(),
            "ioi_heldout_names": self.ioi_heldout_names,
            "gt_heldout_nouns": self.gt_heldout_nouns,
        }
        (root / "metadata.json").write_text(json.dumps(meta, indent=1))
        return root

    def counts(self) -> dict[str, int]:
        c = self.config
        return {
            "people": len(self.people),
            "biographies": len(self.bios),
            "qa_corpus": len(self.qa_split("corpus")),
            "qa_heldout_train_template": len(self.qa_split("heldout_train_template")),
            "qa_unseen_template": len(self.qa_split("unseen_template")),
            "question_documents": c.question_docs_per_person * len(self.people),
            "language_documents": c.language_docs,
            "ioi_train_sentences": c.n_ioi_train,
            "ioi_eval_prompts": len(self.ioi_eval),
            "ioi_train_names": len(self.ioi_train_names),
            "ioi_heldout_names": len(self.ioi_heldout_names),
            "greater_than_train_sentences": c.n_gt_train,
            "greater_than_eval_prompts": len(self.gt_eval),
            "topic_train_passages": c.n_topic_train * (len(topics.TOPICS) + 1),
            "topic_eval_passages": len(self.topic_eval),
        } | {f"vocab_{k}": len(v) for k, v in self.vocab.words.items()}


def synthesize(config: WorldConfig = WorldConfig()) -> World:
    """Build the whole world from ``config``; the same config always gives the same world."""
    s = config.seed
    vocab = make_vocabulary(config.vocab, seed=s, reserved=topics.topic_vocabulary())
    people = biographies.make_people(vocab, config.n_people, seed=s)
    train_names, heldout_names = ioi.split_names(vocab["first"], config.ioi_heldout_fraction, seed=s)
    # A held-out name must still occur somewhere in training text (the biographies): a name the model never
    # saw has an untrained embedding, which no copying mechanism can read (measured: every IOI failure of
    # the first embedded model involved one of the ~8 such names).
    in_biographies = {p.first for p in people}
    heldout_names = [n for n in heldout_names if n in in_biographies]
    train_nouns, heldout_nouns = greater_than.split_nouns(seed=s)
    topic_eval = [p for t in topics.TOPICS
                  for p in topics.make_passages(t, config.n_topic_eval, seed=s + 1000)]
    return World(
        config=config, vocab=vocab, people=people,
        bios=biographies.make_biographies(people, config.n_bio_variants, seed=s),
        qa=biographies.make_qa(people, seed=s),
        ioi_train_names=train_names + (vocab["middle"] + vocab["last"] if config.ioi_train_on_all_name_lists else []),
        ioi_heldout_names=heldout_names,
        ioi_eval=ioi.make_ioi_prompts(heldout_names, config.n_ioi_eval, seed=s + 4, templates=ioi.EVAL_TEMPLATES),
        gt_train_nouns=train_nouns, gt_heldout_nouns=heldout_nouns,
        gt_eval=greater_than.make_eval_prompts(heldout_nouns, seed=s + 5),
        topic_eval=topic_eval,
    )


def load_world(name_or_path: str | Path = "full") -> World:
    """Rebuild the world recorded in ``data/datasets/<name>/metadata.json`` (or a folder path)."""
    root = Path(name_or_path)
    if not root.is_dir():
        root = datasets_dir() / str(name_or_path)
    meta_path = root / "metadata.json"
    if not meta_path.exists():
        raise FileNotFoundError(
            f"no synthesized data set at {root} (missing metadata.json). Create it with "
            f"`workbench synth --scale {name_or_path if name_or_path in ('full', 'smoke') else 'full'}` "
            "or run notebook 01_dataset_synthesis.")
    meta = json.loads(meta_path.read_text())
    return synthesize(WorldConfig.from_dict(meta["config"]))


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


