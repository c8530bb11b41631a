"""Reading the steering results: tables of choices and continuations, score distributions, the headline ratios,
and notebook 07's results file."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from workbench.analysis.judge import Judge
from workbench.analysis.steering.evaluation import SteeringConfig, factor_curves
from workbench.analysis.steering.layers import LayerDictionary, SteeringLayer
from workbench.analysis.steering.methods import METHOD_NAMES
from workbench.analysis.steering.scores import (
    AMPLIFICATION,
    HIGH_INPUT_SCORE,
    HIGH_OUTPUT_SCORE,
    LOGIT_LENS_K,
    NEUTRAL_PROMPT,
    PAPER_PROMPT,
    FeatureScores,
)

OUTPUT_BINS = (0.0, 1e-4, 1e-3, 1e-2, 0.1, 1.0)
INPUT_BINS = (0.0, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0)


def score_distribution(scores: FeatureScores, bins: Sequence[float]) -> dict:
    """Counts of the scored features in ``bins`` (edges), with quantiles and the number scored."""
    s = scores.finite()
    counts, edges = np.histogram(s, bins=np.asarray(bins, dtype=float))
    q = np.quantile(s, [0.1, 0.5, 0.9]).tolist() if len(s) else [None] * 3
    return {"n_scored": int(len(s)), "bins": edges.tolist(), "counts": counts.tolist(),
            "quantiles_10_50_90": q, "mean": float(s.mean()) if len(s) else None}


def ratio(numerator: float, denominator: float) -> float | str:
    """``numerator / denominator``, or text when the denominator is 0 (a results file holds finite numbers)."""
    return float(numerator / denominator) if denominator > 0 else f"undefined: the baseline scored {denominator:.3g}"


def summarise(test: pd.DataFrame) -> dict:
    """Per method and layer (``"all"``: pooled over layers): mean concept, instruction, fluency and harmonic mean."""
    cols = ["concept", "instruction", "fluency", "harmonic"]
    out: dict = {}
    for (m, lay), g in test.groupby(["method", "layer"]):
        out.setdefault(m, {})[str(lay) if lay >= 0 else "none"] = {c: float(g[c].mean()) for c in cols}
    for m, g in test.groupby("method"):
        out[m]["all"] = {c: float(g[c].mean()) for c in cols}
    return out


def headline(test: pd.DataFrame) -> dict:
    """The ratios the paper's claim is about (harmonic means pooled over layers, topics and test prompts):
    output-score selection and the paper's filter over activation selection, per layer and pooled, and where the
    baselines stand relative to output-score selection."""
    s = summarise(test)
    hm = {m: s[m]["all"]["harmonic"] for m in s}
    out = {"output_selected_over_activation_selected": ratio(hm.get("sae_output", 0.0), hm.get("sae_activation", 0.0)),
           "output_filtered_over_activation_selected": ratio(hm.get("sae_output_filtered", 0.0),
                                                             hm.get("sae_activation", 0.0)),
           "per_layer": {}, "relative_to_output_selected": {}}
    for lay in sorted(k for k in s.get("sae_output", {}) if k not in ("all", "none")):
        out["per_layer"][lay] = {
            "output_selected_over_activation_selected": ratio(s["sae_output"][lay]["harmonic"],
                                                              s["sae_activation"][lay]["harmonic"]),
            "output_filtered_over_activation_selected": ratio(s["sae_output_filtered"][lay]["harmonic"],
                                                              s["sae_activation"][lay]["harmonic"])}
    for m in ("diffmean", "prompting", "supervised", "sae_input", "sae_activation", "unsteered"):
        if m in hm:
            out["relative_to_output_selected"][m] = ratio(hm[m], hm.get("sae_output", 0.0))
    return out


def score_summary(layer: SteeringLayer) -> dict:
    """Per layer: how many features each score covers, the shares of high output, high input and both (among the
    features with both scores), the two distributions, and the seconds per 1,000 features of each pass."""
    inp, out = layer.input.scores.numpy(), layer.output.scores.numpy()
    ok = np.isfinite(inp) & np.isfinite(out)
    return {"n_features": int(len(out)), "n_input_scored": layer.input.n_scored,
            "median_output_score": float(np.median(out[np.isfinite(out)])),
            "high_output_share": float(np.mean(out[np.isfinite(out)] >= HIGH_OUTPUT_SCORE)),
            "high_input_share": float(np.mean(inp[np.isfinite(inp)] >= HIGH_INPUT_SCORE)) if np.isfinite(inp).any() else None,
            "both_high_share": float(np.mean((inp[ok] >= HIGH_INPUT_SCORE) & (out[ok] >= HIGH_OUTPUT_SCORE))) if ok.any() else None,
            "output_distribution": score_distribution(layer.output, OUTPUT_BINS),
            "input_distribution": score_distribution(layer.input, INPUT_BINS),
            "input_s_per_1000_features": layer.input.seconds_per_1000_features,
            "output_s_per_1000_features": layer.output.seconds_per_1000_features}


def feature_choices(layers: Sequence[SteeringLayer], model: torch.nn.Module) -> pd.DataFrame:
    """Each SAE method's feature per layer and topic, with its input and output scores and its top logit-lens words."""
    rows = []
    for lay in layers:
        for m, by_topic in lay.features.items():
            for t, f in by_topic.items():
                words = [model.tokenizer.decode([i]).strip() for i in lay.top_tokens[f, :5].tolist()]
                rows.append({"layer": lay.layer, "topic": t, "method": m, "feature": f,
                             "input score": float(lay.input.scores[f]), "output score": float(lay.output.scores[f]),
                             "topic input score": float(lay.input.by_topic[t][f]),
                             "topic output score": float(lay.output.by_topic[t][f]),
                             "logit lens top 5": " ".join(words)})
    return pd.DataFrame(rows)


def feature_choices_records(layers: Sequence[SteeringLayer]) -> list[dict]:
    """Each SAE method's chosen feature per layer and topic with its two scores (JSON-ready)."""
    out = []
    for lay in layers:
        for m, by_topic in lay.features.items():
            for t, f in by_topic.items():
                i, o = float(lay.input.scores[f]), float(lay.output.scores[f])
                ti, to = float(lay.input.by_topic[t][f]), float(lay.output.by_topic[t][f])
                out.append({"layer": lay.layer, "method": m, "topic": t, "feature": f,
                            "input_score": i if np.isfinite(i) else None, "output_score": o,
                            "topic_input_score": ti if np.isfinite(ti) else None, "topic_output_score": to})
    return out


def side_by_side(frame: pd.DataFrame, topics: Sequence[str], prompt_index: int = 0) -> pd.DataFrame:
    """One prompt's continuation under each method (rows, with its layer) for each topic (columns), each followed by
    its harmonic score and, for a steered method, the factor chosen for that topic: ``" the reef. [2.0, x4]"``."""
    rows = frame[(frame.prompt_index == prompt_index) & frame.topic.isin(list(topics))].copy()
    rows["steering"] = [f"{METHOD_NAMES[m]}" + (f", layer {lay}" if lay >= 0 else "")
                        for m, lay in zip(rows.method, rows.layer, strict=True)]
    rows["text"] = [f"{c} [{h:.1f}" + (f", x{f:g}]" if f else "]")
                    for c, h, f in zip(rows.continuation, rows.harmonic, rows.factor, strict=True)]
    return rows.pivot_table(index="steering", columns="topic", values="text", aggfunc="first", sort=False)


def by_factor(frame: pd.DataFrame, method: str, layer: int, topic: str, prompt_index: int = 0) -> pd.DataFrame:
    """One prompt's continuation at each factor of the grid for one method, layer and topic, with its scores."""
    rows = frame[(frame.method == method) & (frame.layer == layer) & (frame.topic == topic)
                 & (frame.prompt_index == prompt_index)]
    return rows.set_index("factor")[["continuation", "concept", "instruction", "fluency", "harmonic"]].sort_index()


def record_results(results, *, saes: Sequence[LayerDictionary], layers: Sequence[SteeringLayer], topics: Sequence[str],
                   judge: Judge, judge_check: pd.DataFrame, cfg: SteeringConfig, n_val: int, n_test: int,
                   restriction: str, validation: pd.DataFrame, test: pd.DataFrame,
                   chosen: dict[tuple[str, int, str], float], cost: dict, train: bool) -> dict:
    """Write notebook 07's metrics and claims into ``results`` (a ``NotebookResults``); returns the headline."""
    head = headline(test)
    results.metrics.update({
        "path": "train" if train else "fast (saved dictionaries where present)",
        "layers": [lay.layer for lay in layers], "hooks": [lay.hook for lay in layers], "topics": list(topics),
        "dictionaries": {str(d.layer): {"how": d.how, "path": d.path, "setting": d.setting, **d.metrics}
                         for d in saes},
        "scores": {str(lay.layer): score_summary(lay) for lay in layers},
        "protocol": {"factors": list(cfg.factors), "n_validation_prompts": n_val, "n_test_prompts": n_test,
                     "temperature": cfg.temperature, "max_new_tokens": cfg.max_new_tokens, "stop_at": cfg.stop_at,
                     "seed": cfg.seed, "factor_chosen_per": "method, layer and topic (on the validation prompts)",
                     "grid_restriction": restriction, "neutral_prompt_for_output_score": NEUTRAL_PROMPT,
                     "paper_neutral_prompt": PAPER_PROMPT,
                     "amplification": AMPLIFICATION, "logit_lens_k": LOGIT_LENS_K,
                     "high_output_score": HIGH_OUTPUT_SCORE, "high_input_score": HIGH_INPUT_SCORE},
        "judge": {"concept_thresholds": vars(judge.concept_thresholds),
                  "instruction_thresholds": vars(judge.instruction_thresholds),
                  "fluency_thresholds": vars(judge.fluency_thresholds),
                  "reference_check": judge_check.to_dict(orient="index")},
        "test": summarise(test), "headline": head,
        "chosen_factors": {f"{m}|{lay}|{t}": f for (m, lay, t), f in chosen.items()},
        "factor_curves": {m: {str(lay): {str(f): v for f, v in c.items()} for lay, c in by.items()}
                          for m, by in factor_curves(validation).items()},
        "features": feature_choices_records(layers),
        "cost": cost,
    })
    medians = [score_summary(lay)["median_output_score"] for lay in layers]
    results.claim("SAE steering (harmonic mean, test prompts): features selected by output score over features "
                  "selected by activation", head["output_selected_over_activation_selected"], "2-3x", ">= 2")
    results.claim("SAE steering: output score among the activation-selected candidates (the paper's filter) over "
                  "activation selection", head["output_filtered_over_activation_selected"], "2-3x", ">= 2")
    results.claim("median output score of a layer's features, last layer minus first", medians[-1] - medians[0],
                  "output features concentrate in later layers", "> 0")
    for m in ("diffmean", "prompting", "supervised"):
        results.claim(f"{METHOD_NAMES[m]} harmonic mean relative to output-selected SAE features",
                      head["relative_to_output_selected"].get(m, "not run"),
                      "prompting and DiffMean stay strong baselines; output-selected SAEs near supervised methods")
    return head
