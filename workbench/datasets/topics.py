"""Topic passages for steering experiments (Arad et al. 2025), plus neutral filler text.

Each topic has its own nouns, verbs and adjectives, so a passage's topic is recoverable from its words
(the ground truth a local AxBench-style judge uses). Passages share neutral openings such as
"From my experience," — the neutral prompt of the output-score method.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

TOPICS: dict[str, dict[str, list[str]]] = {
    "ocean": {
        "nouns": ["wave", "tide", "reef", "whale", "shark", "coral", "shore", "harbor", "sailor", "boat", "anchor", "dolphin", "current", "lighthouse", "seaweed"],
        "verbs": ["drifts", "swims", "crashes", "floats", "dives", "sails"],
        "adjs": ["salty", "deep", "blue", "stormy", "tidal", "foamy"],
    },
    "cooking": {
        "nouns": ["soup", "oven", "recipe", "garlic", "onion", "butter", "flour", "kitchen", "chef", "spoon", "pan", "pepper", "sauce", "dough", "salad"],
        "verbs": ["simmers", "bakes", "stirs", "roasts", "chops", "seasons"],
        "adjs": ["tasty", "spicy", "crispy", "savory", "fresh", "tender"],
    },
    "space": {
        "nouns": ["planet", "rocket", "orbit", "galaxy", "comet", "astronaut", "moon", "telescope", "asteroid", "nebula", "satellite", "star", "crater", "spacecraft", "meteor"],
        "verbs": ["orbits", "launches", "glows", "spins", "drifts", "explodes"],
        "adjs": ["cosmic", "lunar", "solar", "distant", "bright", "stellar"],
    },
    "music": {
        "nouns": ["guitar", "melody", "drum", "piano", "violin", "song", "chord", "rhythm", "concert", "singer", "band", "lyric", "harmony", "trumpet", "choir"],
        "verbs": ["plays", "sings", "hums", "strums", "echoes", "rings"],
        "adjs": ["loud", "melodic", "catchy", "soft", "acoustic", "upbeat"],
    },
    "sports": {
        "nouns": ["ball", "goal", "team", "coach", "stadium", "referee", "match", "player", "score", "racket", "league", "trophy", "sprint", "helmet", "jersey"],
        "verbs": ["kicks", "scores", "runs", "throws", "wins", "defends"],
        "adjs": ["athletic", "fast", "competitive", "winning", "strong", "agile"],
    },
    "weather": {
        "nouns": ["rain", "cloud", "storm", "thunder", "snow", "wind", "fog", "lightning", "drizzle", "hail", "rainbow", "forecast", "breeze", "frost", "sunshine"],
        "verbs": ["pours", "blows", "falls", "rumbles", "clears", "freezes"],
        "adjs": ["cloudy", "rainy", "windy", "humid", "chilly", "sunny"],
    },
    "garden": {
        "nouns": ["flower", "tulip", "rose", "seed", "soil", "shovel", "hedge", "vine", "tomato", "weed", "lawn", "petal", "compost", "sprout", "orchard"],
        "verbs": ["blooms", "grows", "sprouts", "wilts", "ripens", "climbs"],
        "adjs": ["green", "leafy", "fragrant", "blooming", "lush", "muddy"],
    },
    "medicine": {
        "nouns": ["doctor", "nurse", "patient", "clinic", "vaccine", "fever", "pill", "surgeon", "wound", "bandage", "virus", "symptom", "dose", "therapy", "stethoscope"],
        "verbs": ["heals", "treats", "diagnoses", "recovers", "prescribes", "examines"],
        "adjs": ["sterile", "medical", "healthy", "chronic", "sick", "clinical"],
    },
}

OPENINGS = ["From my experience,", "In the morning,", "Every day,", "As everyone knows,", "Later that week,",
            "In my opinion,", "Most of the time,", "Once again,"]

SENTENCE_TEMPLATES = [
    "{opening} the {adj} {noun} {verb} near the {noun2}.",
    "The {noun} {verb} and the {noun2} {verb2}.",
    "{opening} the {noun} is {adj} and the {noun2} is {adj2}.",
    "A {adj} {noun} {verb} beside a {adj2} {noun2}.",
    "The {noun2} {verb} while the {adj} {noun} waits.",
    "Nobody forgets the {adj} {noun} and the {noun2}.",
]

NEUTRAL_NOUNS = ["day", "friend", "family", "city", "idea", "plan", "house", "road", "book", "week", "letter", "table"]
NEUTRAL_VERBS = ["changes", "stays", "returns", "matters", "waits", "begins"]
NEUTRAL_ADJS = ["good", "long", "small", "quiet", "new", "old"]


@dataclass(frozen=True)
class TopicPassage:
    topic: str  # one of TOPICS, or "neutral" for filler text
    text: str

    @property
    def opening(self) -> str:
        """The first sentence: the prompt of a topic-continuation evaluation."""
        return self.text.split(". ")[0] + "."


def _words(topic: str) -> dict[str, list[str]]:
    if topic == "neutral":
        return {"nouns": NEUTRAL_NOUNS, "verbs": NEUTRAL_VERBS, "adjs": NEUTRAL_ADJS}
    if topic not in TOPICS:
        raise ValueError(f"unknown topic {topic!r}; choose from {sorted(TOPICS)} or 'neutral'")
    return TOPICS[topic]


def make_sentence(topic: str, rng: random.Random) -> str:
    w = _words(topic)
    noun, noun2 = rng.sample(w["nouns"], 2)
    verb, verb2 = rng.sample(w["verbs"], 2)
    adj, adj2 = rng.sample(w["adjs"], 2)
    sentence = rng.choice(SENTENCE_TEMPLATES).format(opening=rng.choice(OPENINGS), noun=noun, noun2=noun2,
                                                     verb=verb, verb2=verb2, adj=adj, adj2=adj2)
    return sentence[0].upper() + sentence[1:]


def make_passages(topic: str, n: int, seed: int = 0, sentences: tuple[int, int] = (3, 6)) -> list[TopicPassage]:
    """``n`` passages of ``sentences`` sentences each on ``topic``."""
    rng = random.Random(f"{seed}-{topic}")
    return [TopicPassage(topic, " ".join(make_sentence(topic, rng) for _ in range(rng.randint(*sentences))))
            for _ in range(n)]


def topic_vocabulary() -> set[str]:
    """Every English word the topic and neutral generators use (reserved from invented names)."""
    words = set(NEUTRAL_NOUNS + NEUTRAL_VERBS + NEUTRAL_ADJS)
    for w in TOPICS.values():
        for ws in w.values():
            words.update(ws)
    return words


def passage_to_dict(p: TopicPassage) -> dict:
    return asdict(p)
