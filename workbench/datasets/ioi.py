"""Indirect-object-identification prompts (Wang et al. 2022), with counterfactuals.

``[A]`` is the indirect object (IO), ``[B]`` the subject (S). BABA templates name the subject first;
ABBA swaps the first two names. The counterfactual of a prompt replaces the IO by a third name and keeps
the subject (Cunningham et al.'s IOI patching set-up). Names are split so that the names used in
evaluation prompts never occur in IOI training text.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

BABA_TEMPLATES = [
    "Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] had a lot of fun at the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] were working at the [PLACE]. [B] decided to give a [OBJECT] to",
    "Then, [B] and [A] were thinking about going to the [PLACE]. [B] wanted to give a [OBJECT] to",
    "Then, [B] and [A] had a long argument, and afterwards [B] said to",
    "After [B] and [A] went to the [PLACE], [B] gave a [OBJECT] to",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give it to",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give the [OBJECT] to",
    "While [B] and [A] were working at the [PLACE], [B] gave a [OBJECT] to",
    "While [B] and [A] were commuting to the [PLACE], [B] gave a [OBJECT] to",
    "After the lunch, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Afterwards, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] had a long argument. Afterwards [B] said to",
    "The [PLACE] [B] and [A] went to had a [OBJECT]. [B] gave it to",
    "Friends [B] and [A] found a [OBJECT] at the [PLACE]. [B] gave it to",
]
# Templates held out of IOI training text entirely: new sentences built only from words the training templates
# use, so evaluation on them measures the mechanism rather than a memorised sentence frame.
HELDOUT_TEMPLATES = [
    "While [B] and [A] had a lot of fun at the [PLACE], [B] gave a [OBJECT] to",
    "Afterwards, [B] and [A] were working at the [PLACE]. [B] decided to give a [OBJECT] to",
    "Then, [B] and [A] found a [OBJECT] at the [PLACE]. [B] gave it to",
    "When [B] and [A] went to the [PLACE], [B] wanted to give the [OBJECT] to",
]
EVAL_TEMPLATES = BABA_TEMPLATES + HELDOUT_TEMPLATES
"""Evaluation draws from every template; ``template_id >= len(BABA_TEMPLATES)`` marks a held-out one."""
PLACES = ["store", "garden", "restaurant", "school", "hospital", "office", "house", "station", "park", "market"]
OBJECTS = ["ring", "kiss", "bone", "basketball", "computer", "necklace", "drink", "snack", "book", "letter"]


@dataclass(frozen=True)
class IOIPrompt:
    """One IOI prompt (ending just before the answer), its counterfactual, and its labels."""

    prompt: str
    counterfactual_prompt: str
    io: str
    s: str
    counterfactual_io: str
    template_id: int
    order: str  # "ABBA" or "BABA"

    @property
    def heldout_template(self) -> bool:
        """Whether the template never occurs in IOI training text (ids index :data:`EVAL_TEMPLATES`)."""
        return self.template_id >= len(BABA_TEMPLATES)

    @property
    def text(self) -> str:
        """The prompt completed by the IO, as it appears in training text."""
        return f"{self.prompt} {self.io}."


def split_names(names: list[str], heldout_fraction: float = 0.2, seed: int = 0) -> tuple[list[str], list[str]]:
    """Split ``names`` into (IOI-training names, held-out names)."""
    if not 0 < heldout_fraction < 1:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    shuffled = list(names)
    random.Random(seed).shuffle(shuffled)
    n_heldout = max(3, round(len(names) * heldout_fraction))
    if len(names) - n_heldout < 3:
        raise ValueError(f"need at least 6 names to split off {n_heldout} held-out names, got {len(names)}")
    return sorted(shuffled[n_heldout:]), sorted(shuffled[:n_heldout])


def _fill(template: str, a: str, b: str, order: str, place: str, obj: str) -> str:
    if order == "ABBA":  # swap the first occurrences: "[A] and [B] ... [B] ..."
        template = template.replace("[B] and [A]", "[A] and [B]", 1)
    return template.replace("[A]", a).replace("[B]", b).replace("[PLACE]", place).replace("[OBJECT]", obj)


def make_ioi_prompts(names: list[str], n: int, seed: int = 0, templates: list[str] = BABA_TEMPLATES) -> list[IOIPrompt]:
    """``n`` prompts, alternating ABBA and BABA, drawing all three names from ``names`` and the template from
    ``templates`` (training text uses :data:`BABA_TEMPLATES`, evaluation :data:`EVAL_TEMPLATES`)."""
    if len(names) < 3:
        raise ValueError(f"IOI needs at least 3 distinct names, got {len(names)}")
    rng = random.Random(seed)
    prompts = []
    for i in range(n):
        io, s, cf = rng.sample(names, 3)
        template_id = rng.randrange(len(templates))
        template = templates[template_id]
        order = "ABBA" if i % 2 == 0 else "BABA"
        place, obj = rng.choice(PLACES), rng.choice(OBJECTS)
        prompts.append(IOIPrompt(
            prompt=_fill(template, io, s, order, place, obj),
            counterfactual_prompt=_fill(template, cf, s, order, place, obj),
            io=io, s=s, counterfactual_io=cf, template_id=template_id, order=order,
        ))
    return prompts


def ioi_to_dict(p: IOIPrompt) -> dict:
    return asdict(p)
