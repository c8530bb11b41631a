"""A feature browser for notebooks: one card per feature (density, ground-truth label purity, top contexts,
logit effects) and an ipywidgets slider over features."""

from __future__ import annotations

import html
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from workbench.analysis.features import logit_effects
from workbench.dictionaries.metrics import encode_in_batches


@dataclass
class FeatureData:
    """What the browser shows, computed once: codes of the cached tokens and where each token came from."""

    codes: Float[Tensor, "n_tokens d_sae"]
    sequence_index: Int[Tensor, " n_tokens"]
    positions: Int[Tensor, " n_tokens"]
    sequences: Int[Tensor, "n_seq pos"]
    W_dec: Float[Tensor, "d_sae d_model"]
    purity: dict[int, tuple[float, str]]


def context(model, data: FeatureData, row: int, width: int = 8) -> str:
    """The tokens around cached token ``row``, the token itself in bold (HTML)."""
    seq, pos = int(data.sequence_index[row]), int(data.positions[row])
    toks = data.sequences[seq, max(0, pos - width):pos + 3].tolist()
    centre = pos - max(0, pos - width)
    parts = [html.escape(model.tokenizer.decode([t])) for t in toks]
    parts[centre] = f"<b style='background:#fd8'>{parts[centre]}</b>"
    return "".join(parts).replace("\n", "⏎")


def feature_card(model, data: FeatureData, feature: int, k: int = 6) -> str:
    """An HTML card describing one feature."""
    if not 0 <= feature < data.codes.shape[1]:
        raise ValueError(f"feature {feature} out of range 0..{data.codes.shape[1] - 1}")
    col = data.codes[:, feature].float()
    density = (col != 0).float().mean().item()
    purity, category = data.purity.get(feature, (float("nan"), "—"))
    vals, rows = col.topk(k)
    promoted, suppressed = logit_effects(model, data.W_dec[feature], k=6)
    items = "".join(f"<li>{v:.2f}: {context(model, data, r)}</li>" for v, r in zip(vals.tolist(), rows.tolist(), strict=True))
    fmt = lambda pairs: ", ".join(f"{html.escape(t)} ({v:+.1f})" for t, v in pairs)  # noqa: E731
    return (f"<h4>feature {feature}</h4><p>density {density:.4f} · label purity {purity:.2f} ({category})</p>"
            f"<ol>{items}</ol><p>promotes: {fmt(promoted)}<br>suppresses: {fmt(suppressed)}</p>")


def feature_browser(model, data: FeatureData, start: int = 0):
    """A slider over features showing :func:`feature_card` (a live notebook renders it; the card is an HTML
    widget whose value the slider sets, so it also updates without a front end, and in tests)."""
    import ipywidgets as widgets

    slider = widgets.IntSlider(value=start, min=0, max=data.codes.shape[1] - 1, description="feature")
    card = widgets.HTML(value=feature_card(model, data, start))

    def show(change: dict) -> None:
        card.value = feature_card(model, data, change["new"])

    slider.observe(show, names="value")
    return widgets.VBox([slider, card])


@torch.no_grad()
def encode_all(dictionary, acts: Float[Tensor, "n d_in"], batch_size: int = 8192) -> Float[Tensor, "n d_sae"]:
    """Codes of every cached activation, encoded in batches on the dictionary's device."""
    return torch.cat([codes for _, codes in encode_in_batches(dictionary, acts, batch_size)])
