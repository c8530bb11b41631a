"""Invented vocabularies for the synthetic world: names, cities, universities, companies, majors.

Every entity is one pronounceable invented word (so that it is one token), distinct across categories,
so a token's category is known exactly — the ground truth the interpretability scores use. Sizes default
to AlignSAE's (Yang et al. 2025): 411 first, 461 middle and 1,002 last names, 341 universities, 101
majors and 327 companies.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

ONSETS = ["b", "br", "c", "ch", "d", "dr", "f", "fl", "g", "gr", "h", "j", "k", "kl", "l", "m",
          "n", "p", "pr", "r", "s", "sh", "sl", "st", "t", "tr", "v", "w", "z"]
VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "ia", "eo"]
CODAS = ["", "", "", "n", "r", "l", "s", "m", "th", "nd", "rk", "st"]

# Category endings make an invented word's kind guessable by a reader; the model has to learn them.
SUFFIXES = {
    "first": ["", "a", "o", "in", "el", "ia"],
    "middle": ["e", "y", "an", "et", "is"],
    "last": ["son", "ley", "man", "ard", "sky", "sen", "er", "wood"],
    "city": ["burg", "ville", "port", "haven", "mouth", "stead", "wick", "grad"],
    "university": ["ham", "ington", "more", "dale", "field", "ridge"],
    "company": ["ex", "ix", "ora", "ify", "tech", "corp"],
}

MAJORS = [
    "Biology", "Chemistry", "Physics", "Mathematics", "History", "Philosophy", "Economics",
    "Psychology", "Sociology", "Linguistics", "Astronomy", "Geology", "Anthropology", "Architecture",
    "Music", "Literature", "Statistics", "Engineering", "Medicine", "Nursing", "Law", "Finance",
    "Accounting", "Marketing", "Journalism", "Theology", "Ecology", "Botany", "Zoology", "Genetics",
    "Neuroscience", "Pharmacology", "Geography", "Archaeology", "Design", "Dance", "Theater", "Film",
    "Photography", "Classics", "Politics", "Agriculture", "Forestry", "Oceanography", "Meteorology",
    "Robotics", "Cryptography", "Logic", "Rhetoric", "Education", "Criminology", "Epidemiology",
    "Nutrition", "Kinesiology", "Biochemistry", "Biophysics", "Astrophysics", "Geophysics",
    "Microbiology", "Immunology", "Toxicology", "Virology", "Paleontology", "Entomology",
    "Ornithology", "Mineralogy", "Metallurgy", "Optics", "Acoustics", "Thermodynamics", "Topology",
    "Algebra", "Calculus", "Geometry", "Informatics", "Computing", "Animation", "Sculpture",
    "Painting", "Ceramics", "Textiles", "Horticulture", "Viticulture", "Aquaculture", "Demography",
    "Econometrics", "Hydrology", "Seismology", "Volcanology", "Glaciology", "Cartography",
    "Typography", "Musicology", "Ethnography", "Phonetics", "Semantics", "Mythology", "Ethics",
    "Aesthetics", "Psychiatry", "Dentistry",
]  # 101

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]


@dataclass(frozen=True)
class VocabSizes:
    """How many distinct words each category gets (AlignSAE's sizes by default)."""

    first: int = 411
    middle: int = 461
    last: int = 1002
    city: int = 200
    university: int = 341
    major: int = 101
    company: int = 327

    def __post_init__(self) -> None:
        if self.major > len(MAJORS):
            raise ValueError(f"major={self.major} but only {len(MAJORS)} majors exist; use major <= {len(MAJORS)}")
        for name in ("first", "middle", "last", "city", "university", "company"):
            if getattr(self, name) < 1:
                raise ValueError(f"VocabSizes.{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class Vocabulary:
    """One list of words per category; words are unique across all categories."""

    words: dict[str, list[str]] = field(default_factory=dict)

    def __getitem__(self, category: str) -> list[str]:
        return self.words[category]


def _invent(rng: random.Random, suffixes: list[str], syllables: tuple[int, int]) -> str:
    n = rng.randint(*syllables)
    stem = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(n))
    return (stem + rng.choice(suffixes)).capitalize()


def make_vocabulary(sizes: VocabSizes = VocabSizes(), seed: int = 0, reserved: set[str] = frozenset()) -> Vocabulary:
    """Invent ``sizes`` words per category, deterministic in ``seed``, avoiding ``reserved`` words."""
    rng = random.Random(seed)
    taken = {w.lower() for w in reserved} | {m.lower() for m in MAJORS} | {m.lower() for m in MONTHS}
    words: dict[str, list[str]] = {}
    for category, syllables in [("first", (1, 2)), ("middle", (1, 2)), ("last", (1, 2)), ("city", (1, 2)),
                                ("university", (1, 2)), ("company", (1, 2))]:
        chosen: list[str] = []
        while len(chosen) < getattr(sizes, category):
            w = _invent(rng, SUFFIXES[category], syllables)
            if 3 <= len(w) <= 9 and w.lower() not in taken:
                taken.add(w.lower())
                chosen.append(w)
        words[category] = chosen
    words["major"] = MAJORS[: sizes.major]
    words["month"] = list(MONTHS)
    return Vocabulary(words)
