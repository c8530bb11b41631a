"""What steering at one layer needs: the standard SAE there (loaded from notebook 03's and earlier runs' files, or
trained), its features' scores, and the direction scale ``s``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor

from workbench import hooks
from workbench.analysis.steering.scores import (
    FeatureScores,
    input_scores,
    logit_lens_top_tokens,
    output_scores,
    topic_word_ids,
)


@dataclass
class SteeringLayer:
    """What steering at one layer needs: the dictionary, its feature scores, and each method's choice per topic."""

    layer: int
    hook: str
    dictionary: object
    top_tokens: Int[Tensor, "d_sae k"]
    input: FeatureScores
    output: FeatureScores
    scale: float
    """``s`` of the direction methods (:func:`steering_scale`)."""
    features: dict[str, dict[str, int]] = field(default_factory=dict)
    """``{method: {topic: feature}}`` for the SAE methods."""
    directions: dict[str, Float[Tensor, "n_topics d_model"]] = field(default_factory=dict)
    """``{method: [n_topics, d_model]}`` for the direction methods."""
    pools: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    """The activation-selected candidates the paper's filter chose among: ``{"activation": {topic: features}}``."""


@torch.no_grad()
def steering_scale(dictionary, acts: Float[Tensor, "n d_model"], batch_size: int = 8192) -> float:
    """``s``: the mean over ``acts`` of ``max_j a_j |W_dec[j]|``, the size of the largest feature's contribution."""
    param = dictionary.W_dec
    norms = param.float().norm(dim=-1)
    total = 0.0
    for i in range(0, len(acts), batch_size):
        codes = dictionary.encode(acts[i:i + batch_size].to(param.device, param.dtype)).float()
        total += float((codes * norms).max(-1).values.sum())
    return total / max(len(acts), 1)


@dataclass
class LayerDictionary:
    """The SAE steering reads at one layer, and where it came from."""

    layer: int
    hook: str
    dictionary: object
    how: str
    """``"loaded"`` (a saved file) or ``"trained"`` (by this run)."""
    path: str
    metrics: dict = field(default_factory=dict)
    """L0 and explained variance, measured by this run on held-out activations of the model it steers."""
    setting: dict = field(default_factory=dict)
    """The architecture's config fields it was trained with (e.g. ``{"l1_coefficient": 5.4}``; empty: not recorded)."""


STEERING_SAE = {"architecture": "standard", "setting": {"l1_coefficient": 2}}
"""What notebook 07 trains at the layers notebook 03 did not: the setting of notebook 03's kept standard SAE, read from
its ``metadata.json``; this one (an earlier run's pick) when that file is absent."""


def saved_setting(folder) -> dict | None:
    """The ``setting`` recorded in a saved dictionary's ``metadata.json`` (None when there is none)."""
    import json
    from pathlib import Path

    path = Path(folder) / "metadata.json"
    return json.loads(path.read_text()).get("setting") if path.exists() else None


def steering_dictionaries(model: torch.nn.Module, world, layers: Sequence[int], root, train: bool, full: bool,
                          reference_layer: int, progress: bool = True) -> list[LayerDictionary]:
    """The standard SAE at ``resid_pre`` of each layer: loaded from ``root/resid_pre_{layer}_standard`` when present,
    else trained here (cheap training, with the setting of the SAE saved at ``reference_layer``, else
    :data:`STEERING_SAE`'s) and saved there at full scale (to a temporary folder at smoke scale). With ``train``, every
    layer but ``reference_layer`` (notebook 03's, which that notebook owns) is trained again."""
    import tempfile
    from pathlib import Path

    from workbench import load_dictionary
    from workbench.analysis import frontier, sweep_report
    from workbench.datasets.corpus import token_sequences
    from workbench.dictionaries import metrics, save_dictionary
    from workbench.dictionaries.training import DictionaryTrainConfig

    root = Path(root)
    architecture = STEERING_SAE["architecture"]
    setting = saved_setting(sweep_report.saved_dictionary_dir(root, reference_layer, architecture)) \
        or STEERING_SAE["setting"]
    out: dict[int, LayerDictionary] = {}
    to_train = []
    for layer in layers:
        folder = sweep_report.saved_dictionary_dir(root, layer, architecture)
        if (folder / "cfg.json").exists() and not (train and layer != reference_layer):
            out[layer] = LayerDictionary(layer, hooks.resid_pre(layer), load_dictionary(folder, model=model), "loaded",
                                         str(folder), setting=saved_setting(folder) or {})
        else:
            to_train.append(layer)
    n_train, n_eval = (1000, 100) if full else (30, 8)
    eval_cache = hooks.cache_activations(model, token_sequences(world, model.tokenizer, n_eval, seed=22),
                                         [hooks.resid_pre(layer) for layer in layers], batch_size=64, progress=False)
    if to_train:
        names = [hooks.resid_pre(layer) for layer in to_train]
        train_cache = hooks.cache_activations(model, token_sequences(world, model.tokenizer, n_train, seed=21), names,
                                              batch_size=64, progress=False)
        cfg = DictionaryTrainConfig(n_steps=300 if full else 40, batch_size=2048 if full else 256, lr=1e-3, bf16=True,
                                    lr_warmup_steps=30 if full else 5, coefficient_warmup_steps=100 if full else 10,
                                    resample_every=100 if full else 0, dead_window=100 if full else 20)
        save_root = root if full else Path(tempfile.mkdtemp(prefix="steering-saes-"))
        for layer, name in zip(to_train, names, strict=True):
            point = frontier.train_and_measure(architecture, setting, train_cache[name], eval_cache[name],
                                               8 * model.cfg.d_model, cfg, progress=progress)
            folder = sweep_report.saved_dictionary_dir(save_root, layer, architecture)
            save_dictionary(point.dictionary, folder, hook_name=name, model=model,
                            metadata={"setting": setting, "metrics": point.metrics,
                                      "scale": "full" if full else "smoke",
                                      "produced_by": "notebooks/07_steering_output_scores.ipynb",
                                      "train_config": {"n_steps": cfg.n_steps, "batch_size": cfg.batch_size}})
            out[layer] = LayerDictionary(layer, name, load_dictionary(folder, model=model), "trained", str(folder),
                                         setting=dict(setting))
    for entry in out.values():  # measured now on this model's activations: a file saved for another model shows here
        measured = metrics.dictionary_metrics(entry.dictionary, eval_cache[entry.hook])
        entry.metrics = {"l0": measured.l0, "explained_variance": measured.explained_variance}
    return [out[layer] for layer in layers]


def score_layer(model: torch.nn.Module, entry: LayerDictionary, score_tokens: Int[Tensor, "n_seq pos"],
                neutral_acts: Float[Tensor, "n d_model"], topics: Sequence[str], n_examples: int = 100,
                min_examples: int = 10, progress: bool = True) -> SteeringLayer:
    """The logit lens, input and output scores (the paper's and each topic's) of every feature of one layer's SAE,
    and the direction scale ``s``."""
    top = logit_lens_top_tokens(model, entry.dictionary.W_dec)
    words = topic_word_ids(model.tokenizer, topics)
    inp = input_scores(model, entry.dictionary, entry.hook, score_tokens, top, n_examples, min_examples,
                       progress=progress, topic_tokens=words)
    out = output_scores(model, entry.dictionary, entry.hook, top, progress=progress, topic_tokens=words)
    return SteeringLayer(entry.layer, entry.hook, entry.dictionary, top, inp, out,
                         steering_scale(entry.dictionary, neutral_acts))
