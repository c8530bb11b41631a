"""Greater-than prompts (Hanna et al. 2023): "The war lasted from the year 17YY to the year 17".

Years are written as four digits and tokenised as a century token plus a two-digit token, as GPT-2 does,
so the next token after the prompt is one of the 100 two-digit tokens "00".."99". Training sentences end
with a year after YY; evaluation prompts use nouns held out from training.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

NOUNS = [
    "abduction", "accord", "affair", "agreement", "appraisal", "assessment", "attack", "campaign",
    "captivity", "case", "challenge", "chaos", "clash", "collaboration", "competition", "confrontation",
    "conspiracy", "construction", "consultation", "contract", "convention", "cooperation", "custody",
    "deal", "decline", "development", "dispute", "domination", "dynasty", "effort", "employment",
    "engagement", "epidemic", "evaluation", "exchange", "expansion", "expedition", "experiment",
    "friendship", "growth", "hardship", "hostility", "illness", "imprisonment", "insurgency",
    "invasion", "investigation", "journey", "kingdom", "marriage", "negotiation", "occupation",
    "operation", "outbreak", "pilgrimage", "plague", "program", "project", "pursuit", "quest",
    "rebellion", "reform", "reign", "relationship", "riot", "rivalry", "romance", "rule", "siege",
    "slump", "stint", "strike", "study", "tour", "tradition", "treaty", "trial", "trip", "voyage", "war",
]
TEMPLATE = "The {noun} lasted from the year {century}{yy:02d} to the year {century}"
TRAIN_CENTURIES = list(range(11, 20))
EVAL_CENTURY = 17


@dataclass(frozen=True)
class GreaterThanPrompt:
    """A prompt ending in the century token; ``yy`` is the start year's two digits."""

    prompt: str
    noun: str
    century: int
    yy: int
    end_yy: int | None = None  # the year that completes a training sentence

    @property
    def text(self) -> str:
        if self.end_yy is None:
            raise ValueError("an evaluation prompt has no completion; use .prompt")
        return f"{self.prompt}{self.end_yy:02d}."


def split_nouns(heldout_fraction: float = 0.25, seed: int = 0) -> tuple[list[str], list[str]]:
    """(training nouns, held-out nouns)."""
    nouns = list(NOUNS)
    random.Random(seed).shuffle(nouns)
    k = max(1, round(len(nouns) * heldout_fraction))
    return sorted(nouns[k:]), sorted(nouns[:k])


def make_training_sentences(nouns: list[str], n: int, seed: int = 0) -> list[GreaterThanPrompt]:
    """``n`` completed sentences; the end year is uniform over the years after the start year."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        yy = rng.randint(1, 98)
        century = rng.choice(TRAIN_CENTURIES)
        noun = rng.choice(nouns)
        out.append(GreaterThanPrompt(TEMPLATE.format(noun=noun, century=century, yy=yy), noun, century, yy,
                                     end_yy=rng.randint(yy + 1, 99)))
    return out


def make_eval_prompts(nouns: list[str], years: range = range(1, 99), seed: int = 0) -> list[GreaterThanPrompt]:
    """One prompt per start year YY in ``years`` (01..98 by default, as the paper averages), century 17."""
    rng = random.Random(seed)
    return [GreaterThanPrompt(TEMPLATE.format(noun=(noun := rng.choice(nouns)), century=EVAL_CENTURY, yy=yy),
                              noun, EVAL_CENTURY, yy) for yy in years]


def gt_to_dict(p: GreaterThanPrompt) -> dict:
    return asdict(p)
