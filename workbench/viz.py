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
from matplotlib.colors import PowerNorm

from workbench.datasets import RELATIONS
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


# --- the embedded model (notebook 02) ---


def plot_learning_curves(history: list[dict]) -> plt.Figure:
    """Training loss and held-out loss per data kind against tokens seen, plus QA accuracy."""
    fig, (ax_loss, ax_qa) = plt.subplots(1, 2, figsize=(11, 3.8))
    tokens = [h["tokens_seen"] / 1e6 for h in history]
    ax_loss.plot(tokens, [h["train_loss"] for h in history], "k-", lw=2, label="train (last batch)")
    for kind in history[0]["heldout_loss"] if history else []:
        ax_loss.plot(tokens, [h["heldout_loss"][kind] for h in history], marker=".", label=f"held-out {kind}")
    ax_loss.set(title="Loss during training", xlabel="tokens seen (millions)", ylabel="cross-entropy (nats)")
    ax_loss.legend(fontsize=8)
    ax_qa.plot(tokens, [h["qa_heldout_train_template"] for h in history], marker="o")
    ax_qa.set(title="QA accuracy on held-out prompts (300)", xlabel="tokens seen (millions)", ylabel="accuracy",
              ylim=(0, 1.02))
    fig.tight_layout()
    return fig


def plot_accuracy_per_relation(metrics: dict) -> plt.Figure:
    """Whole-answer QA accuracy per relation, training templates beside unseen ones."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    x = np.arange(len(RELATIONS))
    for offset, key, label in [(-0.2, "qa_accuracy_train_templates_per_relation", "training templates (held-out prompts)"),
                               (0.2, "qa_accuracy_unseen_templates_per_relation", "unseen templates")]:
        ax.bar(x + offset, [metrics[key].get(r, np.nan) for r in RELATIONS], width=0.4, label=label)
    ax.set_xticks(x, RELATIONS, rotation=20)
    ax.set(title="QA accuracy per relation", xlabel="relation", ylabel="accuracy (whole answer, greedy)", ylim=(0, 1.05))
    ax.legend(fontsize=8)
    return fig


def plot_ioi_logit_diffs(metrics: dict) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.hist(metrics["ioi_logit_diffs"], bins=40)
    ax.axvline(0, color="k", lw=1)
    ax.set(title=f"IOI logit difference (held-out names), mean {metrics['ioi_logit_diff']:.2f}",
           xlabel="logit(IO) - logit(S)", ylabel="prompts")
    return fig


def plot_greater_than_heatmap(metrics: dict) -> plt.Figure:
    """Hanna et al.'s figure: probability of each predicted two-digit year given the start year YY."""
    probs = np.asarray(metrics["greater_than_probs"])
    fig = heatmap(probs, title=f"Greater-than: prob diff {metrics['greater_than_prob_diff']:.3f}",
                  xlabel="predicted year (two digits)", ylabel="start year YY", cbar_label="probability",
                  extent=(-0.5, 99.5, metrics["greater_than_yy"][-1] + 0.5, metrics["greater_than_yy"][0] - 0.5),
                  cmap="viridis", norm=PowerNorm(0.5))
    ax = fig.axes[0]
    ax.plot([0, 99], [0, 99], "w--", lw=0.8, label="predicted = start year")
    ax.set_ylim(metrics["greater_than_yy"][-1] + 0.5, metrics["greater_than_yy"][0] - 0.5)
    ax.legend(loc="lower left", fontsize=8)
    return fig


# --- dictionaries (notebook 03): frontiers of sweep points (workbench.analysis.frontier.SweepPoint) ---


def plot_feature_density(points: dict):
    """Histogram of log10 feature density (share of held-out tokens a feature fires on), one per dictionary;
    features that never fire are counted in the legend, since a log axis cannot show them."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, p in points.items():
        density = p.density
        alive = density[density > 0]
        ax.hist(np.log10(alive.numpy()), bins=50, histtype="step", linewidth=1.5,
                label=f"{name} (L0 {p.metrics['l0']:.0f}; {int((density == 0).sum())} never fire)")
    ax.set(title="Feature density", xlabel="log10 firing frequency on held-out tokens", ylabel="number of features")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


BASELINE_STYLES = {"PCA": {"linestyle": ":", "marker": "s", "markersize": 9, "markerfacecolor": "none", "zorder": 4},
                   "ICA": {"linestyle": "--", "marker": "x", "markersize": 6, "zorder": 3}}
"""How each baseline is drawn on a frontier: PCA and ICA of k components span the same subspace, so their
reconstructions (and lines) coincide; PCA's hollow squares on a dotted line are drawn over ICA's crosses."""


def plot_frontiers(points: list, baselines: list = (), highlight: list = (), highlight_label: str = "highlighted"):
    """L0 against explained variance and against CE loss recovered, one line per architecture; baselines dashed or
    dotted with their own markers (see ``BASELINE_STYLES``), and ``highlight`` points (e.g. the saved dictionaries)
    as stars on top, in their architecture's colour, labelled ``highlight_label``."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    groups: dict[str, list] = {}
    for p in points:
        groups.setdefault(p.architecture, []).append(p)
    baseline_groups: dict[str, list] = {}
    for p in baselines:
        baseline_groups.setdefault(p.architecture, []).append(p)
    colors: dict[str, str] = {}
    for arch, ps in [*groups.items(), *sorted(baseline_groups.items(), key=lambda kv: kv[0] == "PCA")]:
        ps = sorted(ps, key=lambda p: p.metrics["l0"])
        style = BASELINE_STYLES.get(arch, {"linestyle": "--", "marker": "d"}) if arch in baseline_groups and \
            arch not in groups else {"linestyle": "-", "marker": "o"}
        for ax, key in zip(axes, ["explained_variance", "ce_loss_recovered_mean"], strict=True):
            if all(key in p.metrics for p in ps):
                (line,) = ax.plot([p.metrics["l0"] for p in ps], [p.metrics[key] for p in ps], label=arch,
                                  color=colors.get(arch), **style)
                colors[arch] = line.get_color()
    for i, p in enumerate(highlight):
        for ax, key in zip(axes, ["explained_variance", "ce_loss_recovered_mean"], strict=True):
            if key in p.metrics:
                ax.plot(p.metrics["l0"], p.metrics[key], marker="*", markersize=15, linestyle="none",
                        color=colors.get(p.architecture, "k"), markeredgecolor="k", zorder=5,
                        label=highlight_label if i == 0 else None)
    axes[0].set(title="Sparsity vs reconstruction", xlabel="L0 (active codes per token, log)", ylabel="explained variance",
                xscale="log")
    axes[1].set(title="Sparsity vs faithfulness when spliced in", xlabel="L0 (active codes per token, log)",
                ylabel="CE loss recovered (vs mean ablation)", xscale="log")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
