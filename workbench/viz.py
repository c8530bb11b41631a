"""Figures: offline circuitsvis rendering and matplotlib helpers with titles and labelled axes.

circuitsvis's own ``_repr_html_`` probes the internet on every display and then loads its JavaScript from
a CDN when it can; :class:`OfflineHTML` always embeds the bundled JavaScript instead, so executed
notebooks are self-contained and never touch the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from jaxtyping import Float

from workbench.paths import figures_dir


class OfflineHTML:
    """A circuitsvis visualisation rendered with its bundled JavaScript (no CDN, no network probe)."""

    def __init__(self, rendered) -> None:
        if not hasattr(rendered, "local_src"):
            raise TypeError(f"expected a circuitsvis RenderedHTML, got {type(rendered).__name__}")
        self.html = rendered.local_src

    def _repr_html_(self) -> str:
        return self.html

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"<html><body>{self.html}</body></html>")
        return path


def attention_patterns(tokens: Sequence[str], pattern: Float[torch.Tensor, "head query key"],
                       head_names: Sequence[str] | None = None) -> OfflineHTML:
    """Interactive attention patterns of one sequence (circuitsvis), rendered offline."""
    import circuitsvis as cv

    pattern = torch.as_tensor(pattern).detach().float().cpu()
    if pattern.dim() != 3 or pattern.shape[-1] != len(tokens) or pattern.shape[-2] != len(tokens):
        raise ValueError(f"pattern must be [head, {len(tokens)}, {len(tokens)}] for {len(tokens)} tokens, "
                         f"got {tuple(pattern.shape)}")
    names = list(head_names) if head_names is not None else [f"head {h}" for h in range(pattern.shape[0])]
    return OfflineHTML(cv.attention.attention_heads(attention=pattern, tokens=list(tokens), attention_head_names=names))


def colored_tokens(tokens: Sequence[str], values: Sequence[float] | torch.Tensor) -> OfflineHTML:
    """Tokens coloured by a value each (e.g. a feature's activation), rendered offline."""
    import circuitsvis as cv

    values = [float(v) for v in values]
    if len(values) != len(tokens):
        raise ValueError(f"got {len(tokens)} tokens but {len(values)} values")
    return OfflineHTML(cv.tokens.colored_tokens(tokens=list(tokens), values=values))


def save_figure(fig: plt.Figure, name: str, directory: str | Path | None = None) -> Path:
    """Save ``fig`` as ``results/figures/<name>.png`` (or under ``directory``); every axis must be labelled."""
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            continue
        if not (ax.get_xlabel() and ax.get_ylabel() and (ax.get_title() or fig._suptitle)):
            raise ValueError(f"figure {name!r} has an axis without a title or axis labels; label it before saving")
    out = Path(directory) if directory is not None else figures_dir()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def heatmap(matrix: np.ndarray | torch.Tensor, title: str, xlabel: str, ylabel: str,
            xticklabels: Sequence[str] | None = None, yticklabels: Sequence[str] | None = None,
            cbar_label: str = "", ax: plt.Axes | None = None, **imshow_kwargs) -> plt.Figure:
    """A labelled heat map with a colour bar."""
    matrix = np.asarray(torch.as_tensor(matrix).detach().cpu())
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 5))
    im = ax.imshow(matrix, aspect="auto", **imshow_kwargs)
    ax.figure.colorbar(im, ax=ax, label=cbar_label)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if xticklabels is not None:
        ax.set_xticks(range(len(xticklabels)), xticklabels, rotation=45, ha="right")
    if yticklabels is not None:
        ax.set_yticks(range(len(yticklabels)), yticklabels)
    return ax.figure
