"""Figures of the embedded model's training and behaviours (notebook 02)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import PowerNorm

from workbench.datasets import RELATIONS
from workbench.viz import heatmap


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
