"""The evaluation harness: every (method, topic, layer) at every factor of the grid generated on neutral prompts and
judged by :class:`workbench.analysis.judge.Judge`; each steered method's best factor chosen per topic and layer on
validation prompts (AxBench picks per concept) and scored on test prompts."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from workbench.analysis.judge import Judge, split_sentence
from workbench.analysis.steering.engine import ENGINES, Steering, generate_steered
from workbench.analysis.steering.layers import SteeringLayer
from workbench.analysis.steering.methods import METHODS, SAE_METHODS
from workbench.datasets import topics as topics_mod

FACTORS = (0.2, 0.4, 0.8, 1.2, 1.6, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 20.0)
"""The paper's steering-factor grid."""


def neutral_prompts(n: int, seed: int, exclude: Sequence[str] = ()) -> list[str]:
    """``n`` distinct prompts that stop mid-sentence, cut from neutral filler sentences, each holding at least one
    neutral word (an opening alone, "In my opinion,", begins topic sentences too), none of them in ``exclude``."""
    if n < 1:
        raise ValueError(f"need at least one prompt, got n={n}")
    rng, seen, out = random.Random(f"prompts-{seed}"), set(exclude), []
    neutral_words = set(topics_mod.NEUTRAL_NOUNS + topics_mod.NEUTRAL_VERBS + topics_mod.NEUTRAL_ADJS)
    for _ in range(200 * n):
        prompt, _ = split_sentence(topics_mod.make_sentence("neutral", rng), rng)
        if prompt not in seen and neutral_words & {w.strip(".,").lower() for w in prompt.split()}:
            seen.add(prompt)
            out.append(prompt)
            if len(out) == n:
                return out
    raise ValueError(f"could not find {n} distinct neutral prompts (found {len(out)}); ask for fewer")


@dataclass(frozen=True)
class SteeringConfig:
    """How steered generations are made and chosen."""

    factors: tuple[float, ...] = FACTORS
    """The factor grid searched on the validation prompts."""
    max_new_tokens: int = 20
    """New tokens per continuation (the paper's 20)."""
    temperature: float = 0.7
    """Sampling temperature (the paper's 0.7)."""
    seed: int = 0
    """Seeds every sampled batch."""
    stop_at: str | None = "."
    """Continuations end after this token (the official code stops at a period)."""
    batch_size: int = 256
    """Rows per generation batch."""
    engine: str = "cached"
    """How tokens are generated (:data:`ENGINES`): the KV cache, or one full forward pass per token."""

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; choose from {ENGINES}")
        if len(self.factors) == 0:
            raise ValueError("the factor grid is empty: give at least one factor, e.g. factors=FACTORS")
        if any(not np.isfinite(f) or f < 0 for f in self.factors):
            raise ValueError(f"factors must be finite and >= 0, got {self.factors}")
        if self.max_new_tokens < 1 or self.temperature < 0 or self.batch_size < 1:
            raise ValueError(f"need max_new_tokens >= 1, temperature >= 0 and batch_size >= 1, got "
                             f"{self.max_new_tokens}, {self.temperature}, {self.batch_size}")


@dataclass(frozen=True)
class Arm:
    """One method's way to steer toward one topic at one layer (``layer`` None: prompting and the unsteered run)."""

    method: str
    topic: str
    layer: int | None = None


def arms_for(layers: Sequence[SteeringLayer], topics: Sequence[str], methods: Sequence[str] = METHODS) -> list[Arm]:
    """Every (method, topic, layer) to evaluate; prompting has no layer."""
    arms = []
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown method {m!r}; choose from {METHODS}")
        if m == "prompting":
            arms += [Arm(m, t) for t in topics]
        else:
            arms += [Arm(m, t, lay.layer) for lay in layers for t in topics]
    return arms


def run_arms(model: torch.nn.Module, judge: Judge, arms: Sequence[tuple[Arm, float]], prompts: Sequence[str],
             layers: Sequence[SteeringLayer], cfg: SteeringConfig, prefixes: dict[str, list[str]] | None = None,
             progress: bool = True) -> pd.DataFrame:
    """Generate and judge every (arm, factor) on every prompt; one row per sample (method, topic, layer, factor,
    prompt index, prompt, continuation, the three scores and their harmonic mean).

    Generations are shared where steering is the same (two methods choosing one feature at one factor), and each
    layer's feature rows, and its direction rows, go through :func:`generate_steered` together. Prompting puts
    ``prefixes[topic][i]`` before prompt ``i`` and is judged on the prompt alone.
    """
    if len(prompts) == 0:
        raise ValueError("no prompts to steer: the prompt list is empty")
    if len(arms) == 0:
        raise ValueError("nothing to evaluate: the list of (arm, factor) pairs is empty")
    by_layer = {lay.layer: lay for lay in layers}
    topics = topics_of(layers)
    n = len(prompts)
    texts: dict[tuple, list[str]] = {}
    gen = dict(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, seed=cfg.seed, stop_at=cfg.stop_at,
               batch_size=cfg.batch_size, engine=cfg.engine)
    units: dict[tuple, dict] = {}
    for arm, factor in arms:
        units.setdefault(_unit_group(arm), {})[_unit_key(arm, factor, by_layer)] = (arm, factor)
    for group, members in tqdm(units.items(), desc="steered generation", disable=not progress):
        keys = list(members)
        if group[0] == "prompting":
            if prefixes is None:
                raise ValueError("prompting needs prefixes={topic: [one sentence per prompt]}")
            rows = [f"{prefixes[members[k][0].topic][i]} {p}" for k in keys for i, p in enumerate(prompts)]
            result = generate_steered(model, rows, None, **gen)
        elif group[0] == "unsteered":
            result = generate_steered(model, list(prompts) * len(keys), None, **gen)
        else:
            lay = by_layer[group[1]]
            factors = torch.tensor([members[k][1] for k in keys]).repeat_interleave(n)
            if group[0] == "feature":
                features = torch.tensor([k[2] for k in keys]).repeat_interleave(n)
                steering = Steering(lay.hook, factors, features=features, dictionary=lay.dictionary)
            else:
                dirs = torch.stack([lay.directions[members[k][0].method][topics.index(members[k][0].topic)] for k in keys])
                steering = Steering(lay.hook, factors, directions=dirs.repeat_interleave(n, 0), scale=lay.scale)
            result = generate_steered(model, list(prompts) * len(keys), steering, **gen)
        for j, k in enumerate(keys):
            texts[k] = result[j * n:(j + 1) * n]
    records = []
    for arm, factor in arms:
        cont = texts[_unit_key(arm, factor, by_layer)]
        records += [{"method": arm.method, "topic": arm.topic, "layer": -1 if arm.layer is None else arm.layer,
                     "factor": float(factor), "prompt_index": i, "prompt": p, "continuation": c}
                    for i, (p, c) in enumerate(zip(prompts, cont, strict=True))]
    frame = pd.DataFrame.from_records(records)
    scores = judge.score(list(frame.prompt), list(frame.continuation), list(frame.topic))
    for c in ("concept", "instruction", "fluency", "harmonic"):
        frame[c] = getattr(scores, c)
    return frame


def topics_of(layers: Sequence[SteeringLayer]) -> list[str]:
    for lay in layers:
        for choices in lay.features.values():
            return list(choices)
    return list(topics_mod.TOPICS)


def _unit_group(arm: Arm) -> tuple:
    if arm.method in ("prompting", "unsteered"):
        return (arm.method,)
    return ("feature" if arm.method in SAE_METHODS else "direction", arm.layer)


def _unit_key(arm: Arm, factor: float, by_layer: dict[int, SteeringLayer]) -> tuple:
    """What makes two generations the same: a feature at a layer and factor, or a method's direction for a topic."""
    if arm.method == "prompting":
        return ("prompting", arm.topic)
    if arm.method == "unsteered":
        return ("unsteered",)
    if arm.method in SAE_METHODS:
        return ("feature", arm.layer, by_layer[arm.layer].features[arm.method][arm.topic], float(factor))
    return ("direction", arm.layer, arm.method, arm.topic, float(factor))


def best_factors(validation: pd.DataFrame) -> dict[tuple[str, int, str], float]:
    """The factor of highest mean harmonic score per (method, layer, topic) (ties: the smallest factor)."""
    means = validation.groupby(["method", "layer", "topic", "factor"]).harmonic.mean().reset_index()
    means = means.sort_values(["method", "layer", "topic", "harmonic", "factor"], ascending=[True, True, True, False, True])
    best = means.groupby(["method", "layer", "topic"]).head(1)
    return {(r.method, int(r.layer), r.topic): float(r.factor) for r in best.itertuples()}


def method_table(test: pd.DataFrame, chosen: dict[tuple[str, int, str], float] | None = None) -> pd.DataFrame:
    """The AxBench-style table: mean concept, instruction, fluency and harmonic mean per method and layer (over
    topics and test prompts), with the median chosen factor."""
    table = test.groupby(["method", "layer"])[["concept", "instruction", "fluency", "harmonic"]].mean()
    if chosen:
        table["median factor"] = pd.Series(chosen).groupby(level=[0, 1]).median().reindex(table.index)
    order = {m: i for i, m in enumerate([*METHODS, "unsteered"])}
    return table.sort_index(key=lambda idx: idx.map(order) if idx.name == "method" else idx)


def factor_curves(validation: pd.DataFrame) -> dict[str, dict[int, dict[float, float]]]:
    """Mean harmonic score per factor (over topics and validation prompts): ``{method: {layer: {factor: hm}}}``."""
    means = validation.groupby(["method", "layer", "factor"]).harmonic.mean()
    out: dict = {}
    for (m, lay, f), v in means.items():
        out.setdefault(m, {}).setdefault(int(lay), {})[float(f)] = float(v)
    return out


def time_one_evaluation(model: torch.nn.Module, judge: Judge, layer: SteeringLayer, topics: Sequence[str],
                        prompts: Sequence[str], cfg: SteeringConfig, method: str = "sae_output",
                        factor: float = 4.0) -> float:
    """Seconds to generate and judge one (method, factor) at one layer: every topic on every prompt."""
    start = time.perf_counter()
    run_arms(model, judge, [(Arm(method, t, layer.layer), factor) for t in topics], prompts, [layer], cfg,
             progress=False)
    return time.perf_counter() - start
