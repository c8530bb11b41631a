"""A feature browser for notebooks: one card per feature (density, category purity, top contexts, logit
effects) and an ipywidgets slider over features."""

from __future__ import annotations

import html
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from workbench.analysis.features import logit_effects


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
    return (f"<h4>feature {feature}</h4><p>density {density:.4f} · top-{k} purity {purity:.2f} ({category})</p>"
            f"<ol>{items}</ol><p>promotes: {fmt(promoted)}<br>suppresses: {fmt(suppressed)}</p>")


def feature_browser(model, data: FeatureData, start: int = 0):
    """A slider over features showing :func:`feature_card` (needs ipywidgets in a live notebook)."""
    import ipywidgets as widgets
    from IPython.display import HTML, display

    slider = widgets.IntSlider(value=start, min=0, max=data.codes.shape[1] - 1, description="feature")
    out = widgets.Output()

    def show(change=None) -> None:
        out.clear_output(wait=True)
        with out:
            display(HTML(feature_card(model, data, slider.value)))

    slider.observe(show, names="value")
    show()
    return widgets.VBox([slider, out])


@torch.no_grad()
def encode_all(dictionary, acts: Float[Tensor, "n d"], batch_size: int = 8192) -> Float[Tensor, "n d_sae"]:
    """Codes of every cached activation, in batches."""
    return torch.cat([dictionary.encode(acts[i:i + batch_size].float()).detach() for i in range(0, len(acts), batch_size)])
