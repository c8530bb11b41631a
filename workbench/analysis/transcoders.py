"""Transcoders for every MLP layer (Dunefsky et al. 2024): training through the one loop, saving and loading, their
faithfulness (alone and all at once: the replacement model), what a feature reads and promotes, and the causal check
of a circuit (keep only its features, or ablate them) on greater-than prompts, with a hand-explorer widget."""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from workbench import hooks, interventions
from workbench.analysis import circuits
from workbench.analysis.features import logit_effects
from workbench.dictionaries import load_dictionary, make_training_sae, metrics
from workbench.dictionaries.training import DictionaryTrainConfig, TensorSource, TrainResult, train_dictionary
from workbench.prompts import PromptBatch, greater_than_prob_diff

# --- training, saving, loading ---


def transcoder_dir(root: str | Path, layer: int) -> Path:
    """Where the transcoder of MLP ``layer`` is saved: ``<root>/transcoder_<layer>``."""
    return Path(root) / f"transcoder_{layer}"


def saved_transcoders(root: str | Path, n_layers: int) -> bool:
    """Whether a transcoder is saved for every one of ``n_layers`` layers under ``root``."""
    return all((transcoder_dir(root, layer) / "cfg.json").exists() for layer in range(n_layers))


def load_transcoders(root: str | Path, model: torch.nn.Module) -> list:
    """The saved transcoder of every MLP layer, in layer order, checked against ``model`` (hooks and widths)."""
    n = model.cfg.n_layers
    missing = [layer for layer in range(n) if not (transcoder_dir(root, layer) / "cfg.json").exists()]
    if missing:
        raise FileNotFoundError(f"no saved transcoder for layers {missing} under {root}: run notebook "
                                "06_transcoder_circuits with train=True (it saves them there)")
    return [load_dictionary(transcoder_dir(root, layer), model=model) for layer in range(n)]


def mlp_activations(model: torch.nn.Module, tokens: Int[Tensor, "n pos"], layers: Sequence[int],
                    batch_size: int = 64) -> hooks.CachedActivations:
    """Every listed layer's MLP input (after LayerNorm) and output at every non-BOS position, in one pass."""
    names = [name for layer in layers for name in (hooks.mlp_in(layer), hooks.mlp_out(layer))]
    return hooks.cache_activations(model, tokens, names, batch_size=batch_size, progress=False,
                                   max_memory_mb=8192)


def norm_ratio(mlp_in: Float[Tensor, "n d_in"], mlp_out: Float[Tensor, "n d_out"]) -> float:
    """``E||mlp_out|| / E||mlp_in||``: how large a layer's MLP output is next to its input."""
    return (mlp_out.float().norm(dim=-1).mean() / mlp_in.float().norm(dim=-1).mean()).item()


def train_transcoder(mlp_in: Float[Tensor, "n d_in"], mlp_out: Float[Tensor, "n d_out"], d_sae: int,
                     l1_coefficient: float, cfg: DictionaryTrainConfig, progress: bool = False,
                     per_unit_output: bool = True) -> tuple[torch.nn.Module, TrainResult]:
    """A transcoder trained through the one loop to predict ``mlp_out`` from ``mlp_in``.

    The loop rescales inputs and targets by one factor (the inputs' norm), so the squared error grows with the size
    of the target: in a GPT-2-style model the MLP output is 0.3x to 3.4x its input's norm from layer to layer, and one
    L1 coefficient would give very different sparsities. With ``per_unit_output`` the coefficient is multiplied by
    :func:`norm_ratio`, so ``l1_coefficient`` means the same trade-off at every layer."""
    torch.manual_seed(cfg.seed)
    l1 = l1_coefficient * (norm_ratio(mlp_in, mlp_out) if per_unit_output else 1.0)
    sae = make_training_sae("transcoder", d_in=mlp_in.shape[1], d_sae=d_sae, d_out=mlp_out.shape[1],
                            l1_coefficient=l1)
    return sae, train_dictionary(sae, TensorSource(mlp_in, targets=mlp_out, seed=cfg.seed), cfg, progress=progress)


def train_sae(acts: Float[Tensor, "n d_in"], d_sae: int, l1_coefficient: float, cfg: DictionaryTrainConfig,
              progress: bool = False) -> tuple[torch.nn.Module, TrainResult]:
    """A standard SAE trained through the same loop (the paper's comparison: an SAE on the MLP output)."""
    torch.manual_seed(cfg.seed)
    sae = make_training_sae("standard", d_in=acts.shape[1], d_sae=d_sae, l1_coefficient=l1_coefficient)
    return sae, train_dictionary(sae, TensorSource(acts, seed=cfg.seed), cfg, progress=progress)


# --- faithfulness ---


def layer_faithfulness(model: torch.nn.Module, dictionary: torch.nn.Module, layer: int,
                       eval_in: Float[Tensor, "n d_model"], eval_out: Float[Tensor, "n d_model"],
                       tokens: Int[Tensor, "batch pos"], kind: str = "transcoder") -> dict[str, float]:
    """L0, explained variance of the MLP output, and CE loss recovered when the dictionary replaces the MLP output
    (no error term; non-BOS positions) against zero- and mean-ablating it. ``kind``: ``"transcoder"`` (reads the
    MLP input, predicts its output) or ``"sae"`` (an SAE on the MLP output)."""
    if kind not in ("transcoder", "sae"):
        raise ValueError(f"kind must be 'transcoder' or 'sae', got {kind!r}")
    if kind == "transcoder":
        m = metrics.dictionary_metrics(dictionary, eval_in, targets=eval_out)
        ce = metrics.ce_loss_recovered(model, dictionary, hooks.mlp_in(layer), tokens, hook_out=hooks.mlp_out(layer))
    else:
        m = metrics.dictionary_metrics(dictionary, eval_out)
        ce = metrics.ce_loss_recovered(model, dictionary, hooks.mlp_out(layer), tokens)
    return {"layer": layer, "kind": kind, "l0": m.l0, "explained_variance": m.explained_variance,
            "dead_fraction": m.dead_fraction, **ce}


def replacement_splices(transcoders: Sequence, use_error_term: bool = True, positions=None,
                        edits: Sequence | None = None) -> list[interventions.Splice]:
    """One splice per MLP layer (``blocks.{l}.mlp.hook_in -> blocks.{l}.hook_mlp_out``): with the error terms, the
    model unchanged; without, the *replacement model*. ``edits[l]`` edits layer ``l``'s codes."""
    edits = edits or [None] * len(transcoders)
    return [interventions.Splice(tc, hooks.mlp_in(layer), hooks.mlp_out(layer), edit=edits[layer],
                                 use_error_term=use_error_term, positions=positions)
            for layer, tc in enumerate(transcoders)]


@torch.no_grad()
def _next_token_loss(model: torch.nn.Module, tokens: Tensor) -> float:
    logp = model(tokens)[:, :-1].float().log_softmax(-1)
    return -logp.gather(-1, tokens[:, 1:, None]).mean().item()


@torch.no_grad()
def replacement_ce_loss(model: torch.nn.Module, transcoders: Sequence, tokens: Int[Tensor, "batch pos"]
                        ) -> dict[str, float]:
    """Next-token loss of the clean model, of the replacement model (every MLP replaced by its transcoder at once, no
    error terms, non-BOS positions) and with every MLP output zero-ablated there; ``ce_loss_recovered = (zero -
    replaced) / (zero - clean)`` (GPT-2 small in the paper's walkthrough: 3.59, 4.23, 10.94, i.e. 0.91)."""
    tokens = tokens.to(next(model.parameters()).device)
    not_bos = (tokens != model.tokenizer.bos_token_id)[..., None]
    clean = _next_token_loss(model, tokens)
    with interventions.spliced(model, *replacement_splices(transcoders, use_error_term=False, positions=not_bos[..., 0])):
        replaced = _next_token_loss(model, tokens)
    zero = [(hooks.mlp_out(layer), lambda act, hook: torch.where(not_bos, 0.0, act)) for layer in range(len(transcoders))]
    with interventions.hooked(model, zero):
        ablated = _next_token_loss(model, tokens)
    return {"ce_loss_clean": clean, "ce_loss_replaced": replaced, "ce_loss_zero_ablated": ablated,
            "ce_loss_recovered": (ablated - replaced) / (ablated - clean) if ablated != clean else float("nan")}


def at_l0(points: Sequence[dict], l0: float, key: str) -> float | None:
    """``key`` interpolated along ``points`` (dicts with ``l0``) on a log-L0 axis at ``l0``: e.g. the SAEs' CE loss
    recovered at a transcoder's L0. None when ``l0`` lies outside the points' range."""
    ps = sorted((p for p in points if p["l0"] > 0), key=lambda p: p["l0"])
    if not ps or not ps[0]["l0"] <= l0 <= ps[-1]["l0"]:
        return None
    return float(np.interp(math.log(l0), [math.log(p["l0"]) for p in ps], [p[key] for p in ps]))


# --- what a feature reads and what it promotes ---


def de_embedding(weights: circuits.ReplacementWeights, layer: int, index: int,
                 head: tuple[int, int] | None = None) -> Float[Tensor, " d_vocab"]:
    """How much each vocabulary token's embedding, read directly (or moved by ``head = (layer, head)``'s OV circuit),
    drives the feature: ``W_E @ W_enc[:, f]`` with the LayerNorm weights on the way (the paper's de-embedding)."""
    u = weights.read_vector(layer, index)
    if head is not None:
        h_layer, h = head
        if not 0 <= h_layer <= layer:
            raise ValueError(f"a head of layer {h_layer} cannot feed a feature of layer {layer}; use a layer <= {layer}")
        u = weights.ln1_w[h_layer] * (weights.W_V[h_layer, h] @ (weights.W_O[h_layer, h] @ u))
        u = u - u.mean()
    return (weights.W_E - weights.W_E.mean(-1, keepdim=True)) @ u


def describe_feature(model: torch.nn.Module, weights: circuits.ReplacementWeights, layer: int, index: int,
                     k: int = 5) -> dict[str, list[str]]:
    """The tokens whose embeddings drive the feature most (de-embedding) and those its decoder row promotes most
    (logit lens, through the final LayerNorm's weight)."""
    reads = de_embedding(weights, layer, index).topk(k).indices.tolist()
    promoted, _ = logit_effects(model, weights.W_dec[layer][index], k=k)
    return {"reads": [model.tokenizer.decode([t]) for t in reads], "promotes": [t for t, _ in promoted]}


# --- the causal check of a circuit ---


@dataclass
class CircuitMeans:
    """Per position, the mean over a set of prompts (of one shape) of every feature's code and every error term."""

    codes: Float[Tensor, "layer pos d_sae"]
    errors: Float[Tensor, "layer pos d_model"]

    @classmethod
    def of(cls, runs: Sequence[circuits.FrozenRun]) -> CircuitMeans:
        lengths = {len(r.tokens) for r in runs}
        if len(lengths) != 1:
            raise ValueError(f"mean ablation per position needs prompts of one length, got lengths {sorted(lengths)}")
        return cls(torch.stack([r.codes for r in runs]).mean(0), torch.stack([r.errors for r in runs]).mean(0))


class FixedErrorDictionary:
    """A transcoder whose decoding adds a fixed error term ``[pos d_model]`` (e.g. its mean over prompts) in place
    of the run's own; spliced with ``use_error_term=False``."""

    def __init__(self, dictionary, error: Float[Tensor, "pos d_model"]) -> None:
        self.dictionary, self.error = dictionary, error

    @property
    def W_enc(self) -> Tensor:
        return self.dictionary.W_enc

    @property
    def W_dec(self) -> Tensor:
        return self.dictionary.W_dec

    def encode(self, x: Tensor) -> Tensor:
        return self.dictionary.encode(x)

    def decode(self, codes: Tensor) -> Tensor:
        out = self.dictionary.decode(codes)
        return out + self.error.to(out.device, out.dtype)[: out.shape[-2]]


def circuit_mask(graphs: Sequence[circuits.Graph], prunes: Sequence[circuits.PruneResult], d_sae: int
                 ) -> Bool[Tensor, "layer pos d_sae"]:
    """The union over prompts of the features each pruned graph kept, as ``[layer, pos, feature]``."""
    graph = graphs[0]
    mask = torch.zeros(graph.n_layers, graph.n_pos, d_sae, dtype=torch.bool)
    for g, p in zip(graphs, prunes, strict=True):
        kept = g.features[p.node_mask[:g.n_features]]
        mask[kept[:, 0], kept[:, 1], kept[:, 2]] = True
    return mask


def random_mask_like(mask: Bool[Tensor, "layer pos d_sae"], active: Bool[Tensor, "layer pos d_sae"], seed: int = 0
                     ) -> Bool[Tensor, "layer pos d_sae"]:
    """A control circuit: at each layer and position, as many features as ``mask`` keeps there, drawn at random among
    those ``active`` there (on some prompt) and not in ``mask`` (fewer when there are not enough)."""
    gen = torch.Generator().manual_seed(seed)
    out = torch.zeros_like(mask)
    for layer, pos in mask.any(-1).nonzero().tolist():
        pool = (active[layer, pos] & ~mask[layer, pos]).nonzero()[:, 0]
        k = min(int(mask[layer, pos].sum()), len(pool))
        out[layer, pos, pool[torch.randperm(len(pool), generator=gen)[:k]]] = True
    return out


def _keep_edit(keep: Tensor, mean: Tensor) -> Callable[[Tensor], Tensor]:
    return lambda codes: torch.where(keep.to(codes.device), codes, mean.to(codes.device, codes.dtype))


def circuit_splices(transcoders: Sequence, mask: Bool[Tensor, "layer pos d_sae"], means: CircuitMeans,
                    mode: str) -> list[interventions.Splice]:
    """``mode="only"``: keep the circuit's features (``mask``), set every other feature to its mean and every error
    term to its mean; ``mode="ablated"``: set the circuit's features to their means, keep the rest and the error
    terms as they are."""
    if mode not in ("only", "ablated"):
        raise ValueError(f"mode must be 'only' or 'ablated', got {mode!r}")
    splices = []
    for layer, tc in enumerate(transcoders):
        if mode == "only":
            splices.append(interventions.Splice(FixedErrorDictionary(tc, means.errors[layer]), hooks.mlp_in(layer),
                                                hooks.mlp_out(layer), edit=_keep_edit(mask[layer], means.codes[layer]),
                                                use_error_term=False))
        else:
            splices.append(interventions.Splice(tc, hooks.mlp_in(layer), hooks.mlp_out(layer),
                                                edit=_keep_edit(~mask[layer], means.codes[layer])))
    return splices


@torch.no_grad()
def prob_diffs(model: torch.nn.Module, batch: PromptBatch, year_ids: Sequence[int],
               splices: Sequence[interventions.Splice] = ()) -> Float[Tensor, " batch"]:
    """Hanna et al.'s probability difference of each greater-than prompt (labels ``yy``), under ``splices``."""
    device = next(model.parameters()).device
    if splices:
        with interventions.spliced(model, *splices):
            logits = batch.final_logits(model, device)
    else:
        logits = batch.final_logits(model, device)
    return greater_than_prob_diff(logits, year_ids, batch.labels["yy"])


def feature_ablation_splice(transcoders: Sequence, means: CircuitMeans, layer: int, pos: int,
                            index: int) -> interventions.Splice:
    """Mean-ablate one feature at one position (the rest of the model as it is)."""
    keep = torch.ones_like(means.codes[layer], dtype=torch.bool)
    keep[pos, index] = False
    return interventions.Splice(transcoders[layer], hooks.mlp_in(layer), hooks.mlp_out(layer),
                                edit=_keep_edit(keep, means.codes[layer]))


# --- explore by hand ---


def _curve_png(yy: Sequence[int], curves: dict[str, Sequence[float]], title: str) -> str:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3))
    ax = fig.subplots()
    for name, values in curves.items():
        ax.plot(list(yy), list(values), label=name)
    ax.set(title=title, xlabel="start year YY", ylabel="prob diff")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def node_report(model: torch.nn.Module, transcoders: Sequence, graph: circuits.Graph, node: int, batch: PromptBatch,
                year_ids: Sequence[int], means: CircuitMeans, baseline: Sequence[float], k: int = 8) -> str:
    """HTML: the node's top incoming edges with both factors, and the prob-diff curve over YY with the node
    mean-ablated (for a feature) beside the model's."""
    rows = "".join(f"<tr><td>{html.escape(graph.label(s))}</td><td>{a:+.3f}</td><td>{act:.3f}</td><td>{w:+.3f}</td></tr>"
                   for s, a, act, w in graph.top_inputs(node, k)) if graph.computed[node] else ""
    table = (f"<table><tr><th>source</th><th>attribution</th><th>activation</th><th>weight</th></tr>{rows}</table>"
             if rows else "<p>no incoming edges computed for this node (a leaf of the graph)</p>")
    yy = batch.labels["yy"].tolist()
    curves = {"model": baseline}
    if graph.kind(node) == circuits.NodeKind.FEATURE:
        layer, pos, index = graph.features[node].tolist()
        curves["feature mean-ablated"] = prob_diffs(model, batch, year_ids,
                                                    [feature_ablation_splice(transcoders, means, layer, pos, index)])
        curves["feature mean-ablated"] = curves["feature mean-ablated"].tolist()
        note = f"mean prob diff {sum(baseline) / len(baseline):.3f} -> {sum(curves['feature mean-ablated']) / len(yy):.3f}"
    else:
        note = "only feature nodes are ablated here"
    img = _curve_png(yy, curves, f"prob diff over YY ({graph.label(node)})")
    return (f"<h4>{html.escape(graph.label(node))}: top incoming edges</h4>{table}<p>{html.escape(note)}</p>"
            f"<img src='data:image/png;base64,{img}'/>")


def circuit_explorer(model: torch.nn.Module, transcoders: Sequence, graphs: dict[int, circuits.Graph],
                     prunes: dict[int, circuits.PruneResult], batch: PromptBatch, year_ids: Sequence[int],
                     means: CircuitMeans, k: int = 8):
    """Pick a start year YY (one attribution graph per YY in ``graphs``) and a node of its pruned graph; see the node's
    top upstream edges with both factors and the prob-diff curve with the node ablated. Widgets update their HTML
    value on change, so the explorer works (and is tested) without a front end."""
    import ipywidgets as widgets

    baseline = prob_diffs(model, batch, year_ids).tolist()
    years = sorted(graphs)

    def options(yy: int) -> list[tuple[str, int]]:
        g, p = graphs[yy], prunes[yy]
        nodes = [n for n in p.node_mask.nonzero()[:, 0].tolist() if g.kind(n) in (circuits.NodeKind.FEATURE,
                                                                                   circuits.NodeKind.TARGET)]
        return [(g.label(n), n) for n in sorted(nodes, key=lambda n: -float(p.influence[n]))]

    yy_pick = widgets.SelectionSlider(options=years, value=years[len(years) // 2], description="YY")
    node_pick = widgets.Dropdown(options=options(yy_pick.value), description="node")
    node_pick.value = graphs[yy_pick.value].target_node()
    out = widgets.HTML()

    def show(_=None) -> None:
        if node_pick.value is not None:
            out.value = node_report(model, transcoders, graphs[yy_pick.value], node_pick.value, batch, year_ids, means,
                                    baseline, k)

    def new_year(change: dict) -> None:
        node_pick.unobserve(show, names="value")
        node_pick.options = options(change["new"])
        node_pick.value = graphs[change["new"]].target_node()
        node_pick.observe(show, names="value")
        show()

    yy_pick.observe(new_year, names="value")
    node_pick.observe(show, names="value")
    show()
    return widgets.VBox([yy_pick, node_pick, out])


# --- the results file ---

FLOOR = "no feature (YY-blind floor)"
"""The run with every feature and error term at its mean: a prediction blind to the start year."""


@dataclass
class CausalSummary:
    """Mean prob diff of each run of the causal check, and each as a share of the model's and of the model's margin
    over the YY-blind floor (what a prediction that ignores the start year scores)."""

    mean: dict[str, float]
    floor: float
    share: dict[str, float]
    """``mean / mean["model"]``."""
    above: dict[str, float]
    """``(mean - floor) / (mean["model"] - floor)``."""


def causal_summary(curves: dict[str, Tensor], model_key: str = "model", floor_key: str = FLOOR) -> CausalSummary:
    """Summarise prob-diff curves (one value per prompt, by run name); ``curves`` must hold the model's and the
    floor's runs."""
    missing = [k for k in (model_key, floor_key) if k not in curves]
    if missing:
        raise ValueError(f"curves lack the runs {missing}; they hold {sorted(curves)}")
    mean = {k: float(torch.as_tensor(v).float().mean()) for k, v in curves.items()}
    floor, top = mean[floor_key], mean[model_key]
    return CausalSummary(mean, floor, {k: v / top for k, v in mean.items()},
                         {k: (v - floor) / (top - floor) for k, v in mean.items()})


def record_results(results, *, training: bool, d_sae: int, l1: float, n_train: int, n_eval: int,
                   train_seconds: dict[int, float], layers: list[dict], replacement: dict[str, float],
                   sweep: list[dict], cmp_layer: int, sae_at_l0: dict, summary: CausalSummary,
                   curves: dict[str, Tensor], yys: Sequence[int], mask: Tensor, top_features: list[dict],
                   year_features: list[dict], top_heads: Sequence[tuple], year_position: int, row_gap: float,
                   example_graph: dict) -> None:
    """Fill ``results`` (a :class:`workbench.results.NotebookResults`) with notebook 06's metrics and paper claims:
    per layer L0 / explained variance / CE loss recovered, the replacement model's CE loss recovered, the SAE
    comparison, the prob diffs (model, replacement model, circuit only, circuit ablated, controls), the circuit's
    size and its top features with their de-embedding and logit-lens descriptions."""
    m = summary.mean
    results.metrics = {
        "path": "train" if training else "fast (saved transcoders)", "d_sae": d_sae, "l1_coefficient": l1,
        "n_train_positions": n_train, "n_eval_positions": n_eval,
        "train_seconds_per_layer": [train_seconds.get(layer) for layer in range(len(layers))],
        "layers": layers, "replacement": replacement, "replacement_ce_loss_recovered": replacement["ce_loss_recovered"],
        "sae_comparison": sweep, "sae_comparison_layer": cmp_layer, "sae_at_transcoder_l0": sae_at_l0,
        "prob_diff_model": m["model"], "prob_diff_replacement_model": m["replacement model"],
        "prob_diff_circuit_only": m["circuit only"], "prob_diff_circuit_ablated": m["circuit ablated"],
        "prob_diff_random_features_only": m["random features only"],
        "prob_diff_all_features_mean_errors": m["every feature, errors at means"], "prob_diff_yy_blind_floor": summary.floor,
        "circuit_only_share": summary.share["circuit only"], "circuit_ablated_share": summary.share["circuit ablated"],
        "circuit_only_share_above_floor": summary.above["circuit only"],
        "circuit_ablated_share_above_floor": summary.above["circuit ablated"],
        "n_circuit_features": int(mask.sum()), "n_circuit_cells": int(mask.any(-1).sum()),
        "prob_diff_curves": {"yy": list(yys)} | {k: torch.as_tensor(v).tolist() for k, v in curves.items()},
        "top_features": top_features, "year_position": year_position, "top_year_features": year_features,
        "top_year_heads": [{"head": h[1], "attribution": h[0]} for h in top_heads], "attribution_sum_gap": row_gap,
        "example_graph": example_graph,
    }
    results.claim("Replacement model (every MLP replaced) CE loss recovered vs zero-ablating every MLP",
                  replacement["ce_loss_recovered"], "0.91 (GPT-2 small: 3.59 clean, 4.23 replaced, 10.94 ablated)",
                  ">= 0.8")
    if sae_at_l0.get("ce_loss_recovered_zero") is not None:
        ours = next(p for p in layers if p["layer"] == cmp_layer)
        results.claim(f"Transcoder minus MLP-out SAE CE loss recovered at equal L0 (layer {cmp_layer})",
                      ours["ce_loss_recovered_zero"] - sae_at_l0["ce_loss_recovered_zero"],
                      "about 0 (as faithful as SAEs)", ">= -0.05")
    results.claim("Greater-than prob diff, model", m["model"], 0.8829)
    results.claim("Greater-than prob diff, replacement model", m["replacement model"], "0.7978 (only MLP10 replaced)")
    results.claim("Circuit only: prob diff as a share of the model's", summary.share["circuit only"], "—", ">= 0.8")
    results.claim("Circuit ablated: prob diff as a share of the model's", summary.share["circuit ablated"],
                  "0.8453 / 0.8829 with one feature ablated", "<= 0.2")
    results.claim("Circuit only: share of the model's margin over the YY-blind floor", summary.above["circuit only"],
                  "—", ">= 0.8")
    results.claim("Circuit ablated: share of the model's margin over the YY-blind floor",
                  summary.above["circuit ablated"], "—", "<= 0.2")
