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


BASELINE_STYLES = {"PCA": {"linestyle": "--", "marker": "", "linewidth": 2.5, "color": "0.6", "zorder": 2},
                   "ICA": {"linestyle": "none", "marker": "x", "markersize": 9, "markeredgewidth": 2, "color": "k",
                           "zorder": 4}}
"""How each baseline is drawn on a frontier. PCA and ICA of k components span the same subspace, so they reconstruct
exactly as well and their points coincide: PCA is a thick grey dashed line, ICA black crosses on it."""
BASELINE_LABELS = {"ICA": "ICA (ICA = PCA span: same points)"}
"""Legend labels of baselines whose name alone would not say why they sit where they do."""
FRONTIER_PANELS = (("explained_variance", "Sparsity vs reconstruction", "explained variance"),
                   ("ce_loss_recovered_mean", "Sparsity vs faithfulness when spliced in",
                    "CE loss recovered (vs mean ablation)"))
"""The frontier figure's panels: the measure on the y axis, the title, the y label."""


def _mean_over_seeds(points: list, key: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean L0 and mean ``key`` over the seeds of each setting, sorted by L0 (a point without ``key`` is left out)."""
    groups: dict[str, list] = {}
    for p in points:
        if key in p.metrics:
            groups.setdefault(repr(sorted(p.setting.items())), []).append(p)
    means = sorted((np.mean([p.metrics["l0"] for p in ps]), np.mean([p.metrics[key] for p in ps]))
                   for ps in groups.values())
    return np.array([m[0] for m in means]), np.array([m[1] for m in means])


def plot_frontiers(points: list, baselines: list = (), highlight: list = (), highlight_label: str = "highlighted"):
    """L0 (log scale) against explained variance and against CE loss recovered, one panel each.

    Each architecture is a line through the mean over seeds of each setting (mean L0, mean measure), with every
    seed's own point drawn faintly around it when there are several seeds. Baselines are drawn apart (see
    ``BASELINE_STYLES``): PCA as a line and ICA, which spans the same subspace and so lands on the same points, as
    crosses on it, with a note in the legend. ``highlight`` points (e.g. the saved dictionaries) are stars on top, in
    their architecture's colour, labelled ``highlight_label``."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    groups: dict[str, list] = {}
    for p in points:
        groups.setdefault(p.architecture, []).append(p)
    baseline_groups: dict[str, list] = {}
    for p in baselines:
        baseline_groups.setdefault(p.architecture, []).append(p)
    several_seeds = any(len({p.seed for p in ps}) > 1 for ps in groups.values())
    colors: dict[str, str] = {}
    for ax, (key, title, ylabel) in zip(axes, FRONTIER_PANELS, strict=True):
        for arch, ps in groups.items():
            l0, value = _mean_over_seeds(ps, key)
            if not len(l0):
                continue
            n_seeds = len({p.seed for p in ps})
            label = arch if n_seeds == 1 else f"{arch} (mean of {n_seeds} seeds)"
            (line,) = ax.plot(l0, value, linestyle="-", marker="o", markersize=4, label=label, color=colors.get(arch),
                              zorder=3)
            colors[arch] = line.get_color()
            if n_seeds > 1:
                seeded = [p for p in ps if key in p.metrics]
                ax.plot([p.metrics["l0"] for p in seeded], [p.metrics[key] for p in seeded], linestyle="none",
                        marker="o", markersize=3, alpha=0.3, color=colors[arch], zorder=2)
        for arch, ps in sorted(baseline_groups.items(), key=lambda kv: kv[0] != "PCA"):  # PCA first, ICA over it
            ps = sorted((p for p in ps if key in p.metrics), key=lambda p: p.metrics["l0"])
            if ps:
                style = BASELINE_STYLES.get(arch, {"linestyle": ":", "marker": "d", "color": "0.3"})
                ax.plot([p.metrics["l0"] for p in ps], [p.metrics[key] for p in ps],
                        label=BASELINE_LABELS.get(arch, arch), **style)
        starred = [p for p in highlight if key in p.metrics]
        for i, p in enumerate(starred):
            ax.plot(p.metrics["l0"], p.metrics[key], marker="*", markersize=15, linestyle="none",
                    color=colors.get(p.architecture, "k"), markeredgecolor="k", zorder=5,
                    label=highlight_label if i == 0 else None)
        if several_seeds:
            ax.plot([], [], linestyle="none", marker="o", markersize=3, alpha=0.3, color="0.3",
                    label="faint: each seed's run")
        ax.set(title=title, xlabel="L0 (active codes per token, log scale)", ylabel=ylabel, xscale="log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# --- transcoder circuits (notebook 06) ---


def plot_attribution_graph(graph, pruned, title: str = "Attribution graph", max_edges: int = 50) -> plt.Figure:
    """A pruned attribution graph (``workbench.analysis.circuits``): the ``max_edges`` kept edges that carry the most
    influence on the target (an edge's share of its node's input times that node's influence, circuit-tracer's edge
    score; at most five into and four out of any one node) and the nodes they join. Layers as rows (embeddings at the bottom, the target on top, each layer's
    transcoder errors as squares just above its features), positions as columns (nodes of one layer and position side
    by side, feature indices written when a cell holds few); edge width by that score, blue for a positive
    attribution, red for a negative one."""
    from workbench.analysis.circuits import NodeKind

    edges = [(t, s) for t, s in pruned.edge_mask.nonzero().tolist() if graph.kind(s) != NodeKind.BIAS]
    share = graph.adjacency.abs() / graph.adjacency.abs().sum(1, keepdim=True).clamp_min(1e-12)
    reach = pruned.influence + (torch.arange(graph.n_nodes) >= graph.target_node(0)).float()
    scores = np.array([float(share[t, s] * reach[t]) for t, s in edges])
    order, fan_in, fan_out = [], {}, {}
    for i in np.argsort(-scores) if len(scores) else []:  # the best edges, at most 5 into and 4 out of any one node
        t, s = edges[i]
        if len(order) < max_edges and fan_in.get(t, 0) < 5 and fan_out.get(s, 0) < 4:
            order.append(i)
            fan_in[t], fan_out[s] = fan_in.get(t, 0) + 1, fan_out.get(s, 0) + 1
    order = np.array(order, dtype=int)
    edges = [edges[i] for i in order]
    values, scores = np.array([float(graph.adjacency[t, s]) for t, s in edges]), scores[order]
    nodes = sorted({n for e in edges for n in e} | {graph.target_node(k) for k in range(len(graph.targets))})
    cells: dict[tuple[float, int], list[int]] = {}
    for n in nodes:
        layer, pos = graph.layer_pos(n)
        cells.setdefault((layer + (0.3 if graph.kind(n) == NodeKind.ERROR else 0.0), pos), []).append(n)
    xy = {}
    for (y, pos), members in cells.items():
        step = min(0.8 / max(len(members) - 1, 1), 0.2)
        for i, n in enumerate(members):
            xy[n] = (pos + (i - (len(members) - 1) / 2) * step, y)
    fig, ax = plt.subplots(figsize=(min(3 + 0.9 * graph.n_pos, 16), 0.9 * (graph.n_layers + 2) + 1.5))
    top = scores.max() if len(scores) else 1.0
    for (t, s), v, score in zip(edges, values, scores, strict=True):
        ax.plot([xy[s][0], xy[t][0]], [xy[s][1], xy[t][1]], color="tab:blue" if v > 0 else "tab:red",
                lw=0.5 + 4 * score / top, alpha=0.6, zorder=1)
    style = {NodeKind.FEATURE: ("o", "tab:orange"), NodeKind.ERROR: ("s", "0.6"), NodeKind.EMBEDDING: ("D", "tab:green"),
             NodeKind.TARGET: ("*", "tab:purple")}
    for kind, (marker, color) in style.items():
        pts = [xy[n] for n in nodes if graph.kind(n) == kind]
        if pts:
            ax.scatter(*zip(*pts, strict=True), marker=marker, s=200 if kind == NodeKind.TARGET else 50, color=color,
                       edgecolor="k", linewidth=0.5, zorder=2, label=kind.name.lower())
    for members in cells.values():
        for n in members if len(members) <= 5 else []:
            if graph.kind(n) == NodeKind.FEATURE:
                ax.annotate(f"#{int(graph.features[n, 2])}", xy[n], fontsize=6, ha="center", va="bottom",
                            xytext=(0, 5), textcoords="offset points")
    ticks = [f"{p}\n{graph.token_strings[p]!r}" if graph.token_strings else str(p) for p in range(graph.n_pos)]
    ax.set_xticks(range(graph.n_pos), ticks, fontsize=7)
    ax.set_yticks(range(-1, graph.n_layers + 1), ["emb", *[f"L{layer}" for layer in range(graph.n_layers)], "target"])
    ax.set(title=title, xlabel="position (token)", ylabel="layer", xlim=(-0.6, graph.n_pos - 0.4))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(alpha=0.2)
    fig.tight_layout()
    return fig


def plot_prob_diff_curves(yy: Sequence[int], curves: dict, title: str = "Greater-than prob diff over the start year"
                          ) -> plt.Figure:
    """Hanna et al.'s probability difference per start year YY, one line per run (model, replacement model, ...)."""
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for name, values in curves.items():
        values = np.asarray(torch.as_tensor(values).detach().cpu(), dtype=float)
        ax.plot(list(yy), values, label=f"{name} (mean {values.mean():.2f})", lw=1.5)
    ax.axhline(0, color="k", lw=0.8)
    ax.set(title=title, xlabel="start year YY", ylabel="prob diff (later - earlier years)", ylim=(-1.05, 1.05))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_transcoder_vs_sae(points: Sequence[dict], layer: int) -> plt.Figure:
    """Transcoders against SAEs on the MLP output at one layer: L0 against explained variance of the MLP output, and
    against CE loss recovered when spliced in (``points``: dicts with ``kind``, ``l0``, ``explained_variance``,
    ``ce_loss_recovered_zero``)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for kind, marker in (("transcoder", "o"), ("sae", "s")):
        ps = sorted((p for p in points if p["kind"] == kind and p["l0"] > 0), key=lambda p: p["l0"])
        if not ps:
            continue
        label = "transcoder (reads the MLP input)" if kind == "transcoder" else "SAE on the MLP output"
        for ax, key in zip(axes, ("explained_variance", "ce_loss_recovered_zero"), strict=True):
            ax.plot([p["l0"] for p in ps], [p[key] for p in ps], marker=marker, label=label)
    axes[0].set(title=f"Layer {layer}: sparsity vs reconstruction of the MLP output", xlabel="L0 (log)",
                ylabel="explained variance", xscale="log")
    axes[1].set(title=f"Layer {layer}: faithfulness when spliced in", xlabel="L0 (log)",
                ylabel="CE loss recovered (vs zero-ablating the MLP)", xscale="log")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# --- IOI feature patching (notebook 05) ---


def heatmap_row(matrices: dict, xlabel: str, ylabel: str, cbar_label: str = "", symmetric: bool = True,
                xticklabels: Sequence[str] | None = None, width: float = 4.6, **imshow_kwargs) -> plt.Figure:
    """Heat maps side by side, one per ``{title: [rows, cols]}`` entry, on one colour scale (centred on 0 when
    ``symmetric``), e.g. head patching at every position, at the final position and at S2."""
    arrays = {t: np.asarray(torch.as_tensor(m).detach().float().cpu()) for t, m in matrices.items()}
    limit = max(float(np.abs(a).max()) for a in arrays.values()) or 1.0
    kwargs = {"cmap": "RdBu_r", "vmin": -limit, "vmax": limit} if symmetric else {}
    fig, axes = plt.subplots(1, len(arrays), figsize=(width * len(arrays), 3.8), squeeze=False)
    for ax, (title, a) in zip(axes[0], arrays.items(), strict=True):
        heatmap(a, title=title, xlabel=xlabel, ylabel=ylabel, cbar_label=cbar_label, ax=ax,
                xticklabels=xticklabels, **(kwargs | imshow_kwargs))
    fig.tight_layout()
    return fig


def plot_patching_frontiers(results: Sequence, kl_target: float | None = None, title: str = "") -> plt.Figure:
    """Cunningham et al.'s two views of a greedy feature-patching search, one line per method: KL to the
    counterfactual run against the number of features patched, and against the edit magnitude. Each result has a
    ``name``, ``points() -> (n_features, kl, edit_magnitude)`` and ``kl_clean`` (KL with nothing patched); SAEs are
    solid lines, baselines dashed. The dotted line marks ``kl_target``. KL is drawn clipped at 0 (an exact basis
    patched whole gives -1e-8 from rounding)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.3))
    for r in results:
        n, kl, edit = r.points()
        kl = np.clip(kl, 0, None)
        style = {"linestyle": "-", "marker": "o"} if r.name.startswith("SAE") else {"linestyle": "--", "marker": "s"}
        (line,) = axes[0].plot(n, kl, label=r.name, markersize=3, **style)
        axes[1].plot(edit, kl, label=r.name, markersize=3, color=line.get_color(), **style)
    clean = max((r.kl_clean for r in results), default=None)
    for ax in axes:
        if kl_target is not None:
            ax.axhline(kl_target, color="grey", linestyle=":", linewidth=1, label="half the clean run's KL")
        if clean is not None:
            ax.axhline(clean, color="black", linestyle="-", linewidth=0.6, label="nothing patched")
        ax.set_yscale("symlog", linthresh=1e-2)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].set_xscale("symlog", linthresh=1)
    for ax in axes:
        ax.set_xlim(left=0)
    axes[0].set(title=f"{title}KL vs features patched", xlabel="features patched (symlog)",
                ylabel="KL(counterfactual || patched), final position")
    axes[1].set(title=f"{title}KL vs edit magnitude", xlabel="edit magnitude: mean ||x_clean - x_patched||",
                ylabel="KL(counterfactual || patched), final position")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return fig


# --- concept alignment (notebook 04): workbench.analysis.alignment ---


def plot_confusion_pair(confusions: dict, labels: Sequence[str], xlabel: str = "argmax slot",
                        ylabel: str = "concept asked") -> plt.Figure:
    """Confusion matrices side by side (``C[true, argmax slot]``, rows sum to 1), each titled with its diagonal
    accuracy."""
    fig, axes = plt.subplots(1, len(confusions), figsize=(5.4 * len(confusions), 4.6), squeeze=False)
    for ax, (name, matrix) in zip(axes[0], confusions.items(), strict=True):
        m = np.asarray(matrix, dtype=float)
        heatmap(m, title=f"{name}: diagonal accuracy {np.mean(np.diag(m)):.2f}", xlabel=xlabel, ylabel=ylabel,
                xticklabels=labels, yticklabels=labels, cbar_label="share of the concept's prompts", ax=ax,
                vmin=0, vmax=1, cmap="Blues")
        for (i, j), v in np.ndenumerate(m):
            if v >= 0.05:
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w" if v > 0.6 else "k")
    fig.tight_layout()
    return fig


def plot_fragmentation(per_dictionary: dict, concepts: Sequence[str]) -> plt.Figure:
    """EffFeat (log scale) and Top1Conc per concept, one bar group per dictionary; ``per_dictionary`` maps a name to
    a report summary with ``efffeat_per_concept`` and ``top1conc_per_concept``."""
    fig, (ax_eff, ax_top) = plt.subplots(1, 2, figsize=(12, 4))
    x = np.arange(len(concepts))
    width = 0.8 / max(1, len(per_dictionary))
    for i, (name, s) in enumerate(per_dictionary.items()):
        offset = (i - (len(per_dictionary) - 1) / 2) * width
        ax_eff.bar(x + offset, s["efffeat_per_concept"], width=width, color=f"C{i}",
                   label=f"{name}: mean EffFeat {s['efffeat']:.1f}, mean Top1Conc {s['top1conc']:.2f}")
        ax_top.bar(x + offset, s["top1conc_per_concept"], width=width, color=f"C{i}")
    ax_eff.set(title="EffFeat: features sharing a concept's mass (1 = one)", xlabel="concept",
               ylabel="EffFeat (perplexity of the mass, log)", yscale="log")
    ax_top.set(title="Top1Conc: the largest feature's share of the mass", xlabel="concept", ylabel="Top1Conc",
               ylim=(0, 1.05))
    for ax in (ax_eff, ax_top):
        ax.set_xticks(x, concepts, rotation=20)
        ax.grid(alpha=0.3, axis="y")
    fig.legend(*ax_eff.get_legend_handles_labels(), loc="lower center", ncol=len(per_dictionary), fontsize=8)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


SWAP_COLORS = {"latent_decode": "tab:blue", "decoder_column": "tab:orange"}


def plot_swap_success(summary: dict, paper: dict | None = None) -> plt.Figure:
    """Concept-swap success against alpha for each intervention, strict (solid) and lenient (dashed), and the
    answer-type rate among failures; ``summary`` is ``SwapResults.summary()``, ``paper`` optional points
    ``{"success": {alpha: value}, "answer_type_on_failure": {alpha: value}}`` drawn as black stars."""
    fig, (ax_s, ax_t) = plt.subplots(1, 2, figsize=(12, 4))
    for mode, by_alpha in summary["strict"].items():
        alphas = [float(a) for a in by_alpha]
        color = SWAP_COLORS.get(mode)
        ax_s.plot(alphas, [by_alpha[a] for a in by_alpha], "o-", color=color, label=f"{mode}, strict")
        ax_s.plot(alphas, [summary["lenient"][mode][a] for a in by_alpha], "s--", color=color,
                  label=f"{mode}, lenient")
        types = [summary["answer_type_on_failure"][mode][a] for a in by_alpha]
        ax_t.plot(alphas, [np.nan if t is None else t for t in types], "o-", color=color, label=mode)
    for ax, key in ((ax_s, "success"), (ax_t, "answer_type_on_failure")):
        points = (paper or {}).get(key, {})
        if points:
            ax.plot([float(a) for a in points], list(points.values()), "k*", markersize=12, label="paper")
    ax_s.set(title="Concept swaps: the answer becomes the target relation's", xlabel="alpha (log)",
             ylabel="success rate", xscale="log", ylim=(-0.02, 1.02))
    ax_t.set(title="Failed swaps: answer of the target relation's type", xlabel="alpha (log)",
             ylabel="share of failures", xscale="log", ylim=(-0.02, 1.02))
    alphas = sorted({float(a) for by_alpha in summary["strict"].values() for a in by_alpha})
    for ax in (ax_s, ax_t):
        ax.set_xticks(alphas, [f"{a:g}" for a in alphas])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_concept_horizon(per_layer: dict, chance: float, paper: dict | None = None) -> plt.Figure:
    """Per residual position: diagonal accuracy, unseen-template slot accuracy, strict swap success at alpha 2 per
    intervention, and explained variance; ``paper`` optional ``{name: (position, value)}`` points as stars."""
    fig, ax = plt.subplots(figsize=(11, 4.2))
    x = np.arange(len(per_layer["diag_accuracy"]))
    series = [("diag_accuracy", "diagonal accuracy", "o-"),
              ("unseen_template_slot_accuracy", "unseen-template slot accuracy", "s-"),
              ("swap_strict_alpha2_latent_decode", "swap success, alpha 2, latent decode (strict)", "^-"),
              ("swap_strict_alpha2_decoder_column", "swap success, alpha 2, decoder column (strict)", "v-"),
              ("explained_variance", "explained variance (held-out prompts)", "k--")]
    for key, label, style in series:
        if key in per_layer:
            ax.plot(x, [np.nan if v is None else v for v in per_layer[key]], style, label=label)
    ax.axhline(chance, color="grey", lw=0.8, ls=":", label=f"chance (1/{round(1 / chance)})")
    markers = iter("*PXD")
    for name, (pos, value) in (paper or {}).items():
        ax.plot(pos, value, next(markers, "*"), color="k", markersize=10, linestyle="none", label=f"paper: {name}")
    ax.set_xticks(x, [str(i) for i in x])
    ax.set(title="The concept horizon: where relations bind and swap", xlabel="residual position (input of block l; "
           "last = final output)", ylabel="rate", ylim=(-0.02, 1.05))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


# --- steering (notebook 07): input vs output scores, harmonic mean vs factor ---


def plot_input_output_scores(scores: dict, high_output: float = 0.01, floor: float = 1e-6):
    """Input score against output score of every scored feature, one panel per layer (``scores``:
    ``{layer: (input_scores, output_scores)}``, arrays over features, nan where not scored). Output scores are
    drawn on a log axis (values below ``floor`` at the floor); the dotted line marks ``high_output``."""
    layers = sorted(scores)
    fig, axes = plt.subplots(1, len(layers), figsize=(4.2 * len(layers), 3.8), sharey=True, squeeze=False)
    for ax, layer in zip(axes[0], layers, strict=True):
        inp, out = (np.asarray(a, dtype=float) for a in scores[layer])
        ok = np.isfinite(inp) & np.isfinite(out)
        share = float(np.mean(out[np.isfinite(out)] >= high_output)) if np.isfinite(out).any() else float("nan")
        ax.scatter(inp[ok], np.maximum(out[ok], floor), s=6, alpha=0.4)
        ax.axhline(high_output, color="k", ls=":", lw=1)
        ax.set(title=f"layer {layer}: {share:.1%} of features with output score >= {high_output:g}",
               xlabel="input score", ylabel="output score (log)", yscale="log", xlim=(-0.03, 1.03))
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
    fig.suptitle("Input vs output scores of SAE features (features with fewer than 10 active examples left out)")
    fig.tight_layout()
    return fig


def plot_factor_curves(curves: dict, names: dict | None = None):
    """Mean harmonic score on the validation prompts against the steering factor, one line per method, one panel per
    layer (``curves``: ``{method: {layer: {factor: score}}}``; methods without layers are skipped)."""
    layers = sorted({layer for by_layer in curves.values() for layer in by_layer if layer >= 0})
    fig, axes = plt.subplots(1, max(len(layers), 1), figsize=(4.5 * max(len(layers), 1), 3.8), sharey=True,
                             squeeze=False)
    for ax, layer in zip(axes[0], layers, strict=False):
        for method, by_layer in curves.items():
            if layer in by_layer:
                xs = sorted(by_layer[layer])
                ax.plot(xs, [by_layer[layer][x] for x in xs], marker="o", ms=3,
                        label=(names or {}).get(method, method))
        ax.set(title=f"layer {layer}", xlabel="steering factor (log)", ylabel="mean harmonic score (0-2)",
               xscale="log")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Harmonic mean of concept, instruction and fluency vs steering factor (validation prompts)")
    fig.tight_layout()
    return fig
