"""Explore steering by hand: a seeded steered continuation beside the unsteered one, with the judge's scores, as HTML
and as an ipywidgets control."""

from __future__ import annotations

import html
from collections.abc import Sequence

import torch

from workbench.analysis.judge import Judge
from workbench.analysis.steering.evaluation import FACTORS, Arm, SteeringConfig, run_arms, topics_of
from workbench.analysis.steering.layers import SteeringLayer
from workbench.analysis.steering.methods import DIRECTION_METHODS, METHOD_NAMES, SAE_METHODS


def explore_html(model: torch.nn.Module, judge: Judge, layers: Sequence[SteeringLayer], topic: str, method: str,
                 layer: int | None, factor: float, prompt: str, prefix: str = "", cfg: SteeringConfig = SteeringConfig()
                 ) -> str:
    """A seeded steered continuation of ``prompt`` beside the unsteered one, with the judge's three scores (HTML)."""
    arm = Arm(method, topic, None if method == "prompting" else layer)
    prefixes = {topic: [prefix]} if method == "prompting" else None
    frame = run_arms(model, judge, [(arm, factor), (Arm("unsteered", topic), 0.0)], [prompt], layers, cfg,
                     prefixes=prefixes, progress=False)
    rows = []
    for r in frame.itertuples():
        label = "unsteered" if r.method == "unsteered" else f"{METHOD_NAMES[r.method]} (factor {r.factor:g})"
        rows.append(f"<tr><td>{html.escape(label)}</td><td><i>{html.escape(prompt)}</i>{html.escape(r.continuation)}"
                    f"</td><td>{r.concept}</td><td>{r.instruction}</td><td>{r.fluency}</td><td>{r.harmonic:.2f}</td></tr>")
    head = "<tr><th></th><th>continuation</th><th>concept</th><th>instruction</th><th>fluency</th><th>harmonic</th></tr>"
    return f"<p>topic <b>{html.escape(topic)}</b></p><table>{head}{''.join(rows)}</table>"


def steering_explorer(model: torch.nn.Module, judge: Judge, layers: Sequence[SteeringLayer], prompt: str,
                      prefixes: dict[str, str] | None = None, cfg: SteeringConfig = SteeringConfig(),
                      factors: Sequence[float] = FACTORS):
    """An ipywidgets control: pick a topic, a method (at a layer) and a factor, and see a seeded steered continuation
    beside the unsteered one with the judge's scores (the output is an HTML widget whose value the controls set, so
    it updates without a front end, and in tests)."""
    import ipywidgets as widgets

    topics = topics_of(layers)
    options = [(f"{METHOD_NAMES[m]}, layer {lay.layer}", (m, lay.layer)) for m in (*SAE_METHODS, *DIRECTION_METHODS)
               for lay in layers] + [(METHOD_NAMES["prompting"], ("prompting", None))]
    topic = widgets.Dropdown(options=topics, value=topics[0], description="topic")
    method = widgets.Dropdown(options=options, value=options[0][1], description="method")
    factor = widgets.SelectionSlider(options=list(factors), value=list(factors)[len(factors) // 2], description="factor")
    card = widgets.HTML()

    def show(_change=None) -> None:
        m, lay = method.value
        prefix = (prefixes or {}).get(topic.value, "")
        card.value = explore_html(model, judge, layers, topic.value, m, lay, factor.value, prompt, prefix, cfg)

    for w in (topic, method, factor):
        w.observe(show, names="value")
    show()
    return widgets.VBox([widgets.HBox([topic, method, factor]), card])
