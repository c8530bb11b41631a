"""Is a concept one feature? Concept binding, fragmentation and concept swaps for any dictionary (Yang et al. 2025).

Everything here is computed the same way for an AlignSAE (whose concept slots are named in its metadata) and for
a standard SAE at the same hook (whose "slot" for a concept is the feature most selective for it on training
prompts, :func:`selective_features`). Definitions, fixed before any run:

- **confusion matrix** ``C[c, j]``: among held-out prompts asking concept ``c``, the share whose largest slot code
  is slot ``j`` (rows: the true concept; each row sums to 1). The official code's matrix is its transpose.
- **diagonal accuracy** = ``mean_c C[c, c]``: the mean over concepts of the share of that concept's prompts whose
  argmax slot is its own (the paper's "diag"; chance is 1/K). On prompts with the training templates (of people
  the dictionary never saw) it is the **diagonal accuracy**; on the unseen templates the **unseen-template slot
  accuracy**.
- **fragmentation** (the paper's, not in its code): ``A[c, k]`` = mean code of feature ``k`` over prompts asking
  ``c``; ``B[c, k] = max(A[c, k], 0) / sum_k max(A[c, k], 0)``; ``Top1Conc(c) = max_k B[c, k]``;
  ``EffFeat(c) = exp(-sum_k B[c, k] log B[c, k])``, the perplexity of the mass (1: one feature carries the concept;
  n: n features share it evenly); both averaged over concepts. Over the concept slots for an AlignSAE, over all
  features for a standard SAE (``features=None``).
- **concept swap** on a prompt asking relation ``r`` about person ``p``, for each ``r' != r``, at the last prompt
  position, reading and writing at the same hook through the splice (error term kept):
  *latent decode*: ``z[r] = 0, z[r'] = alpha * m[r']``, where ``m[r']`` is the mean code of slot ``r'`` on training
  prompts asking ``r'`` (with the official code's MSE binding the slots are trained to 1, where this is the paper's
  ``z[r'] = alpha``; with cross-entropy binding a slot's scale is free, so alpha is counted in its typical value);
  *decoder column*: add ``alpha * ||h|| / ||d_r'|| * d_r'`` to the activation ``h`` (a code edit of
  ``alpha * ||h|| / ||d_r'||`` on slot ``r'``, through the linear decoder). The answer is greedy-decoded to the
  end-of-text token. **Strict success**: the whole answer equals ``p``'s value for ``r'``. **Lenient success** (the
  official code's): ``gold in answer or answer in gold``, lower-cased, non-empty. **Answer-type rate on failure**:
  among swaps that are not strict successes, the share whose answer is a value of ``r'`` for some person.
"""

from __future__ import annotations

import dataclasses
import html
import math
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from workbench import hooks, interventions
from workbench.datasets import RELATIONS, TOPICS, World
from workbench.datasets.biographies import QA_TEMPLATES, QAExample, qa_prompt
from workbench.datasets.topics import make_passages
from workbench.dictionaries import load_dictionary, make_training_sae, metrics, save_dictionary
from workbench.dictionaries.alignsae import MixedSource, alignsae_stages, check_labels, concept_ids
from workbench.dictionaries.training import DictionaryTrainConfig, TensorSource, TrainResult, train_dictionary
from workbench.generation import generate_tokens
from workbench.prompts import PromptBatch
from workbench.tokenizer import encode_strict

SWAP_MODES = ("latent_decode", "decoder_column")
PAPER_ALPHAS = (0.5, 1.0, 2.0, 5.0, 10.0)


def residual_hooks(n_layers: int) -> list[str]:
    """Every residual position of a model: ``blocks.{l}.hook_resid_pre`` for each layer, then the last block's
    ``hook_resid_post``. Position ``l`` is the official code's ``hidden_states[l]`` (the input of block ``l``)."""
    return [hooks.resid_pre(layer) for layer in range(n_layers)] + [hooks.resid_post(n_layers - 1)]


# --- labelled activations ---


@dataclass
class LabelledActivations:
    """Activations at one or more hooks, one row per prompt (or token), with a concept id per row."""

    acts: dict[str, Float[Tensor, "n d"]]
    """Hook name -> activations."""
    concept: Int[Tensor, " n"]
    """Concept id per row (an index into ``concepts``)."""
    concepts: tuple[str, ...]
    """Concept names, in slot order."""
    value: Int[Tensor, " n"] | None = None
    """Value class per row (the answer's first token), or None."""
    examples: list[QAExample] = field(default_factory=list)
    """The QA example of each row, when the rows are QA prompts."""
    prompts: PromptBatch | None = None
    """The prompts' tokens, when the rows are QA prompts (for swaps)."""

    def __len__(self) -> int:
        return len(self.concept)

    def labels(self) -> dict[str, Tensor]:
        """The labels an AlignSAE trains on (``concept`` and, when known, ``value``)."""
        return {"concept": self.concept} | ({} if self.value is None else {"value": self.value})


def split_people(world: World, eval_fraction: float = 0.2, seed: int = 0) -> tuple[set[int], set[int]]:
    """Person ids for training dictionaries and for evaluating them (disjoint; a seeded shuffle)."""
    ids = [p.person_id for p in world.people]
    random.Random(seed).shuffle(ids)
    n_eval = max(1, round(len(ids) * eval_fraction))
    return set(ids[n_eval:]), set(ids[:n_eval])


def qa_examples(world: World, split: str, people: set[int] | None = None, limit: int | None = None,
                seed: int = 0) -> list[QAExample]:
    """QA examples of ``split`` for ``people`` (default all), in a seeded order that interleaves the relations, so
    that cutting it at ``limit`` keeps them balanced."""
    chosen = [q for q in world.qa_split(split) if people is None or q.person_id in people]
    random.Random(seed).shuffle(chosen)
    rank: dict[str, int] = defaultdict(int)
    keyed = []
    for q in chosen:
        keyed.append((rank[q.relation], RELATIONS.index(q.relation), q))
        rank[q.relation] += 1
    return [q for *_, q in sorted(keyed, key=lambda t: t[:2])][:limit]


@torch.no_grad()
def qa_activations(model: torch.nn.Module, examples: Sequence[QAExample], hook_names: Sequence[str],
                   concepts: Sequence[str] = RELATIONS, batch_size: int = 256) -> LabelledActivations:
    """Activations at each hook at the last prompt token of ``"Q: ...\\nA:"`` (BOS first), labelled with the
    relation (concept) and the answer's first token (value)."""
    if not examples:
        raise ValueError("no QA examples given")
    tok = model.tokenizer
    batch = PromptBatch.from_texts(tok, [q.prompt for q in examples])
    concept = concept_ids([q.relation for q in examples], concepts)
    value = torch.tensor([encode_strict(tok, q.answer)[0] for q in examples])
    acts = _last_token_acts(model, batch, hook_names, batch_size)
    return LabelledActivations(acts, concept, tuple(concepts), value, list(examples), batch)


def _last_token_acts(model: torch.nn.Module, batch: PromptBatch, hook_names: Sequence[str],
                     batch_size: int) -> dict[str, Tensor]:
    names = [hooks.check_hook_name(model, n) for n in hook_names]
    device = next(model.parameters()).device
    out: dict[str, list[Tensor]] = {n: [] for n in hook_names}
    for start in range(0, len(batch), batch_size):
        chunk = batch.select(range(start, min(start + batch_size, len(batch))))
        width = int(chunk.lengths.max())
        _, cache = model.run_with_cache(chunk.tokens[:, :width].to(device), names_filter=names)
        rows, last = torch.arange(len(chunk)), chunk.final_positions
        for given, name in zip(hook_names, names, strict=True):
            out[given].append(cache[name][rows, last.to(cache[name].device)].float().cpu())
    return {n: torch.cat(v) for n, v in out.items()}


@torch.no_grad()
def text_activations(model: torch.nn.Module, texts: Sequence[str], hook_names: Sequence[str],
                     labels: Sequence[str] | None = None, concepts: Sequence[str] = (), skip_first_sentence: bool = False,
                     max_tokens: int | None = None, batch_size: int = 64) -> LabelledActivations:
    """Activations at every token of each text (BOS first, BOS itself left out), optionally labelled with the text's
    concept (``labels[i]`` names text ``i``'s; unlabelled rows get -1). ``skip_first_sentence`` drops the tokens up
    to the first ``.`` (a topic passage's neutral opening). Stops after ``max_tokens`` rows."""
    tok = model.tokenizer
    names = [hooks.check_hook_name(model, n) for n in hook_names]
    device = next(model.parameters()).device
    ids = concept_ids(labels, concepts) if labels is not None else torch.full((len(texts),), -1)
    seqs = [[tok.bos_token_id] + encode_strict(tok, t)[: model.cfg.n_ctx - 1] for t in texts]
    period = tok.convert_tokens_to_ids(".") if skip_first_sentence else None  # "." straight after a word
    if period is not None and period == tok.unk_token_id:
        raise ValueError("the tokenizer has no '.' token to find the first sentence's end by")
    out: dict[str, list[Tensor]] = {n: [] for n in hook_names}
    concept: list[Tensor] = []
    n_rows = 0
    for start in range(0, len(seqs), batch_size):
        chunk = PromptBatch.from_token_lists(seqs[start:start + batch_size], pad_id=tok.pad_token_id)
        keep = torch.arange(chunk.tokens.shape[1])[None, :] < chunk.lengths[:, None]
        keep[:, 0] = False
        if period is not None:
            first_end = [(row == period).nonzero()[0, 0].item() if (row == period).any() else 0 for row in chunk.tokens]
            keep &= torch.arange(chunk.tokens.shape[1])[None, :] > torch.tensor(first_end)[:, None]
        _, cache = model.run_with_cache(chunk.tokens.to(device), names_filter=names)
        for given, name in zip(hook_names, names, strict=True):
            out[given].append(cache[name].float().cpu()[keep])
        concept.append(ids[start:start + batch_size, None].expand_as(keep)[keep])
        n_rows += int(keep.sum())
        if max_tokens is not None and n_rows >= max_tokens:
            break
    return LabelledActivations({n: torch.cat(v)[:max_tokens] for n, v in out.items()}, torch.cat(concept)[:max_tokens],
                               tuple(concepts))


def topic_activations(model: torch.nn.Module, hook_names: Sequence[str], n_per_topic: int, seed: int,
                      max_tokens: int | None = None) -> LabelledActivations:
    """Tokens of topic passages (after each passage's neutral opening sentence), labelled with their topic: a
    second ontology, one concept per topic of the world."""
    topics = tuple(TOPICS)
    passages = [p for t in topics for p in make_passages(t, n_per_topic, seed=seed)]
    random.Random(seed).shuffle(passages)  # so that max_tokens keeps every topic
    return text_activations(model, [p.text for p in passages], hook_names, labels=[p.topic for p in passages],
                            concepts=topics, skip_first_sentence=True, max_tokens=max_tokens)


def rows(data: LabelledActivations, hook: str) -> LabelledActivations:
    """``data`` at one hook only (cheaper to pass around)."""
    return LabelledActivations({hook: data.acts[hook]}, data.concept, data.concepts, data.value, data.examples,
                               data.prompts)


# --- binding and fragmentation ---


def concept_slots(dictionary) -> list[int] | None:
    """The concept slots an AlignSAE's metadata names (``cfg.metadata.concept_slots``), or None."""
    meta = getattr(getattr(dictionary, "cfg", None), "metadata", None)
    slots = meta.get("concept_slots") if meta is not None else None
    return None if slots is None else [int(s) for s in slots]


def mean_codes(codes: Float[Tensor, "n d_sae"], concept: Int[Tensor, " n"], k: int) -> Float[Tensor, "k d_sae"]:
    """``A[c, :]``: the mean code of every feature over the rows of concept ``c``."""
    onehot = torch.nn.functional.one_hot(concept.long(), k).to(codes.dtype)
    return (onehot.T @ codes) / onehot.sum(0).clamp_min(1)[:, None]


def selective_features(codes: Float[Tensor, "n d_sae"], concept: Int[Tensor, " n"], k: int) -> list[int]:
    """For a dictionary without concept slots, the "slot" of each concept: the feature whose mean code on that
    concept's rows most exceeds its largest mean code on any other concept's (``A[c, f] - max_{c' != c} A[c', f]``),
    chosen on training rows."""
    a = mean_codes(codes, concept, k)
    slots = []
    for c in range(k):
        others = torch.cat([a[:c], a[c + 1:]]).max(0).values if k > 1 else torch.zeros_like(a[c])
        slots.append(int((a[c] - others).argmax()))
    return slots


def confusion_matrix(slot_codes: Float[Tensor, "n k"], concept: Int[Tensor, " n"]) -> Float[Tensor, "k k"]:
    """``C[c, j]``: the share of concept ``c``'s rows whose largest slot code is slot ``j`` (rows sum to 1; a concept
    without rows gives a row of zeros)."""
    k = slot_codes.shape[1]
    pred = slot_codes.argmax(-1)
    counts = torch.zeros(k, k)
    counts.index_put_((concept.long(), pred), torch.ones(len(pred)), accumulate=True)
    return counts / counts.sum(1, keepdim=True).clamp_min(1)


def diagonal_accuracy(confusion: Float[Tensor, "k k"]) -> float:
    """Mean over concepts of the share of its rows whose argmax slot is its own (``mean_c C[c, c]``)."""
    return float(confusion.diagonal().mean())


@dataclass
class Fragmentation:
    """How concentrated each concept's mass is over features (see the module docstring)."""

    efffeat: list[float]
    """EffFeat per concept: ``exp(entropy of B[c, :])``, 1 (one feature) to the number of features."""
    top1conc: list[float]
    """Top1Conc per concept: the largest share of the mass ``max_k B[c, k]``."""

    @property
    def mean_efffeat(self) -> float:
        return float(np.mean(self.efffeat))

    @property
    def mean_top1conc(self) -> float:
        return float(np.mean(self.top1conc))


def fragmentation(codes: Float[Tensor, "n d_sae"], concept: Int[Tensor, " n"], k: int,
                  features: Sequence[int] | None = None) -> Fragmentation:
    """EffFeat and Top1Conc per concept over ``features`` (default every feature). A concept on whose rows none of
    them fires has no mass to concentrate: EffFeat = the number of features, Top1Conc = 0."""
    a = mean_codes(codes, concept, k)
    if features is not None:
        a = a[:, list(features)]
    mass = a.clamp_min(0).double()
    total = mass.sum(1, keepdim=True)
    b = mass / total.clamp_min(1e-30)
    entropy = -(b * b.clamp_min(1e-300).log()).sum(1)
    empty = total.squeeze(1) <= 0
    eff = torch.where(empty, torch.tensor(float(a.shape[1]), dtype=torch.double), entropy.exp())
    top1 = torch.where(empty, torch.tensor(0.0, dtype=torch.double), b.max(1).values)
    return Fragmentation(eff.tolist(), top1.tolist())


@torch.no_grad()
def encode(dictionary, acts: Float[Tensor, "n d_in"]) -> Float[Tensor, "n d_sae"]:
    return torch.cat([c.cpu() for _, c in metrics.encode_in_batches(dictionary, acts)])


@dataclass
class ConceptReport:
    """A dictionary's concept binding at one hook (see the module docstring for each definition)."""

    hook: str
    slots: list[int]
    """The feature standing for each concept (an AlignSAE's slots, or a standard SAE's most selective features)."""
    on_values: list[float]
    """Mean code of each slot on training rows of its concept (the unit of the latent-decode swap's alpha)."""
    confusion: list[list[float]]
    """Held-out rows (training templates), ``C[true concept, argmax slot]``."""
    diag_accuracy: float
    unseen_confusion: list[list[float]] | None
    unseen_template_slot_accuracy: float | None
    fragmentation: Fragmentation
    """Over the slots for an AlignSAE, over all features for a standard SAE (the paper's convention)."""
    fragmentation_all_features: Fragmentation
    """Over every feature, for both kinds."""
    explained_variance: float
    """Of the held-out rows."""
    l0: float

    def summary(self) -> dict:
        """JSON-ready numbers."""
        return {"hook": self.hook, "slots": self.slots, "on_values": self.on_values,
                "diag_accuracy": self.diag_accuracy, "unseen_template_slot_accuracy": self.unseen_template_slot_accuracy,
                "efffeat": self.fragmentation.mean_efffeat, "top1conc": self.fragmentation.mean_top1conc,
                "efffeat_per_concept": self.fragmentation.efffeat, "top1conc_per_concept": self.fragmentation.top1conc,
                "efffeat_all_features": self.fragmentation_all_features.mean_efffeat,
                "top1conc_all_features": self.fragmentation_all_features.mean_top1conc,
                "explained_variance": self.explained_variance, "l0": self.l0, "confusion": self.confusion,
                "unseen_confusion": self.unseen_confusion}


def concept_report(dictionary, hook: str, train: LabelledActivations, held_out: LabelledActivations,
                   unseen: LabelledActivations | None = None) -> ConceptReport:
    """Bind, measure and summarise ``dictionary`` at ``hook``: slots from its metadata (AlignSAE) or chosen on
    ``train`` (:func:`selective_features`), the confusion matrix on ``held_out`` (and ``unseen``), fragmentation and
    explained variance on ``held_out``."""
    k = len(train.concepts)
    check_labels(held_out.concept, len(held_out), train.concepts)
    train_codes = encode(dictionary, train.acts[hook])
    aligned = concept_slots(dictionary)
    if aligned is not None and len(aligned) != k:
        raise ValueError(f"the dictionary has {len(aligned)} concept slots but the data has K={k} concepts "
                         f"{list(train.concepts)}: it was trained on another concept set")
    slots = aligned if aligned is not None else selective_features(train_codes, train.concept, k)
    on_values = mean_codes(train_codes[:, slots], train.concept, k).diagonal().tolist()
    codes = encode(dictionary, held_out.acts[hook])
    confusion = confusion_matrix(codes[:, slots], held_out.concept)
    unseen_conf = None
    if unseen is not None:
        unseen_conf = confusion_matrix(encode(dictionary, unseen.acts[hook])[:, slots], unseen.concept)
    m = metrics.dictionary_metrics(dictionary, held_out.acts[hook])
    return ConceptReport(
        hook=hook, slots=slots, on_values=on_values, confusion=confusion.tolist(),
        diag_accuracy=diagonal_accuracy(confusion), unseen_confusion=None if unseen_conf is None else unseen_conf.tolist(),
        unseen_template_slot_accuracy=None if unseen_conf is None else diagonal_accuracy(unseen_conf),
        fragmentation=fragmentation(codes, held_out.concept, k, slots if aligned is not None else None),
        fragmentation_all_features=fragmentation(codes, held_out.concept, k),
        explained_variance=m.explained_variance, l0=m.l0)


# --- concept swaps ---


def answer_values(world: World) -> dict[str, set[str]]:
    """Every value each relation takes over the world's people (an answer "of r's type" is one of these)."""
    return {r: {p.value(r) for p in world.people} for r in RELATIONS}


def lenient_match(gold: str, answer: str) -> bool:
    """The official code's comparison: lower-cased, ``gold in answer or answer in gold``, and never an empty
    answer (its date normalisation is moot here: the world writes every date one way)."""
    gold, answer = gold.strip().lower(), answer.strip().lower()
    return bool(answer) and (gold in answer or answer in gold)


def swap_edit(position: int, source: Int[Tensor, " batch"], target: Int[Tensor, " batch"],
              keep_source: Float[Tensor, " batch"], target_mult: Float[Tensor, " batch"],
              target_add: Float[Tensor, " batch"]) -> interventions.CodesEdit:
    """A per-row code edit at ``position``: ``z[source] *= keep_source``, then
    ``z[target] = z[target] * target_mult + target_add``. Latent decode is ``(0, 0, alpha * m[r'])``; the decoder
    column ``(1, 1, alpha * ||h|| / ||d_r'||)``."""
    def edit(codes: Tensor) -> Tensor:
        if codes.shape[0] != len(source):
            raise ValueError(f"the swap edit was built for {len(source)} rows, the batch has {codes.shape[0]}")
        r = torch.arange(codes.shape[0], device=codes.device)
        dev = lambda t: t.to(codes.device)  # noqa: E731
        codes[r, position, dev(source)] = codes[r, position, dev(source)] * dev(keep_source).to(codes.dtype)
        codes[r, position, dev(target)] = (codes[r, position, dev(target)] * dev(target_mult).to(codes.dtype)
                                           + dev(target_add).to(codes.dtype))
        return codes
    return edit


def swap_parameters(modes: Sequence[str], alphas: Float[Tensor, " batch"], on_values: Float[Tensor, " batch"],
                    h_norms: Float[Tensor, " batch"], d_norms: Float[Tensor, " batch"]) -> tuple[Tensor, Tensor, Tensor]:
    """Per row, ``(keep_source, target_mult, target_add)`` of :func:`swap_edit` for its intervention and alpha:
    latent decode ``(0, 0, alpha * m[r'])``, decoder column ``(1, 1, alpha * ||h|| / ||d_r'||)``, where ``on_values``
    holds ``m[r']``, ``h_norms`` ``||h||`` and ``d_norms`` ``||d_r'||`` of each row's target."""
    unknown = sorted(set(modes) - set(SWAP_MODES))
    if unknown:
        raise ValueError(f"unknown swap mode(s) {unknown}; choose from {SWAP_MODES}")
    latent = torch.tensor([m == "latent_decode" for m in modes])
    keep = (~latent).float()
    add = torch.where(latent, alphas * on_values.float(), alphas * h_norms.float() / d_norms.float().clamp_min(1e-8))
    return keep, keep.clone(), add


def answers_after(model: torch.nn.Module, tokens: Int[Tensor, "batch pos"], max_new_tokens: int,
                  splice: interventions.Splice | None = None) -> list[str]:
    """Greedy answers after each row (rows of equal length), cut at the end-of-text token, under ``splice``."""
    tok = model.tokenizer
    if splice is None:
        new = generate_tokens(model, tokens, max_new_tokens, stop_token_id=tok.eos_token_id)
    else:
        with interventions.spliced(model, splice):
            new = generate_tokens(model, tokens, max_new_tokens, stop_token_id=tok.eos_token_id)
    out = []
    for row in new.tolist():
        row = row[:row.index(tok.eos_token_id)] if tok.eos_token_id in row else row
        out.append(tok.decode(row).strip())
    return out


@dataclass
class SwapResults:
    """Every swap tried: one record per (prompt, target relation, intervention, alpha)."""

    records: list[dict]
    baseline_accuracy: float
    """Share of the prompts answered right without any intervention."""

    def rate(self, key: str, mode: str, alpha: float) -> float | None:
        """Share of the records of ``mode`` and ``alpha`` with ``key`` true (None: no such records)."""
        vals = [r[key] for r in self.records if r["mode"] == mode and r["alpha"] == alpha]
        return float(np.mean(vals)) if vals else None

    def type_rate_on_failure(self, mode: str, alpha: float) -> float | None:
        """Among swaps that are not strict successes, the share whose answer is of the target relation's type."""
        vals = [r["answer_type"] for r in self.records if r["mode"] == mode and r["alpha"] == alpha and not r["strict"]]
        return float(np.mean(vals)) if vals else None

    def summary(self) -> dict:
        """``{"strict"|"lenient"|"answer_type_on_failure": {mode: {alpha: rate}}}`` with alphas as text keys."""
        modes = list(dict.fromkeys(r["mode"] for r in self.records))
        alphas = sorted({r["alpha"] for r in self.records})
        return {
            "strict": {m: {f"{a:g}": self.rate("strict", m, a) for a in alphas} for m in modes},
            "lenient": {m: {f"{a:g}": self.rate("lenient", m, a) for a in alphas} for m in modes},
            "answer_type_on_failure": {m: {f"{a:g}": self.type_rate_on_failure(m, a) for a in alphas} for m in modes},
            "n_swaps_per_setting": len(self.records) // max(1, len(modes) * len(alphas)),
            "baseline_accuracy": self.baseline_accuracy,
        }


def max_answer_tokens(world: World, tokenizer) -> int:
    """The longest answer of the world in tokens (a date: day, month, century, year)."""
    return max(len(encode_strict(tokenizer, p.value(r))) for p in world.people[:50] for r in RELATIONS)


@torch.no_grad()
def run_swaps(model: torch.nn.Module, dictionary, hook: str, data: LabelledActivations, world: World,
              slots: Sequence[int], on_values: Sequence[float], alphas: Sequence[float] = PAPER_ALPHAS,
              modes: Sequence[str] = SWAP_MODES, batch_size: int = 512) -> SwapResults:
    """Every concept swap of every prompt of ``data`` (QA rows, read at ``hook``) to every other relation, for each
    intervention and alpha; greedy answers scored strictly, leniently and by type (module docstring)."""
    if data.prompts is None or not data.examples:
        raise ValueError("run_swaps needs QA rows (qa_activations), with their prompts and examples")
    swap_parameters(modes, torch.ones(len(modes)), *(torch.ones(len(modes)),) * 3)  # unknown modes raise here
    people = {p.person_id: p for p in world.people}
    values = answer_values(world)
    k = len(data.concepts)
    max_new = max_answer_tokens(world, model.tokenizer) + 1
    slots_t, on_t = torch.tensor(list(slots)), torch.tensor(list(on_values), dtype=torch.float)
    d_norms = dictionary.W_dec.detach().norm(dim=1).cpu()[slots_t]
    h_norms = data.acts[hook].norm(dim=1)
    lengths = data.prompts.lengths
    cases = [(i, t, mode, float(a)) for i in range(len(data)) for t in range(k) if t != int(data.concept[i])
             for mode in modes for a in alphas]
    by_length: dict[int, list] = defaultdict(list)
    for case in cases:
        by_length[int(lengths[case[0]])].append(case)
    baseline = _baseline_answers(model, data, max_new, batch_size)
    records = []
    for length, group in by_length.items():
        group.sort(key=lambda c: c[1])  # batches of one target relation stop together (short answers, early)
        for start in range(0, len(group), batch_size):
            chunk = group[start:start + batch_size]
            idx = torch.tensor([c[0] for c in chunk])
            target = torch.tensor([c[1] for c in chunk])
            source = data.concept[idx]
            keep, mult, add = swap_parameters([c[2] for c in chunk], torch.tensor([c[3] for c in chunk]), on_t[target],
                                              h_norms[idx], d_norms[target])
            splice = interventions.Splice(dictionary, hook, positions=[length - 1],
                                          edit=swap_edit(length - 1, slots_t[source], slots_t[target], keep, mult, add))
            answers = answers_after(model, data.prompts.tokens[idx, :length], max_new, splice)
            for (i, t, mode, alpha), answer in zip(chunk, answers, strict=True):
                q, rel = data.examples[i], data.concepts[t]
                gold = people[q.person_id].value(rel)
                records.append({"prompt": i, "question": q.prompt, "person_id": q.person_id, "relation": q.relation,
                                "target": rel, "mode": mode, "alpha": alpha, "answer_before": baseline[i],
                                "answer": answer, "gold": gold, "strict": answer == gold,
                                "lenient": lenient_match(gold, answer), "answer_type": answer in values[rel]})
    return SwapResults(records, float(np.mean([a == q.answer for a, q in zip(baseline, data.examples, strict=True)])))


def _baseline_answers(model, data: LabelledActivations, max_new: int, batch_size: int) -> list[str]:
    answers = [""] * len(data)
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, n in enumerate(data.prompts.lengths.tolist()):
        by_length[n].append(i)
    for length, idx in by_length.items():
        for start in range(0, len(idx), batch_size):
            chunk = idx[start:start + batch_size]
            for i, a in zip(chunk, answers_after(model, data.prompts.tokens[chunk, :length], max_new), strict=True):
                answers[i] = a
    return answers


def swap_examples(results: SwapResults, mode: str, alpha: float, n: int = 2, seed: int = 0) -> list[dict]:
    """``n`` swaps of ``mode`` and ``alpha`` to show as text, a seeded pick alternating a success and a failure
    while there are both."""
    pool = [r for r in results.records if r["mode"] == mode and r["alpha"] == alpha]
    random.Random(seed).shuffle(pool)
    wins, losses = [r for r in pool if r["strict"]], [r for r in pool if not r["strict"]]
    mixed = [r for pair in zip(wins, losses, strict=False) for r in pair]
    return (mixed + wins[len(mixed) // 2:] + losses[len(mixed) // 2:])[:n]


# --- training one concept dictionary per hook ---


@dataclass(frozen=True)
class ConceptTraining:
    """How one concept dictionary (an AlignSAE, or its standard-SAE control on the same data) is trained."""

    d_sae: int = 2048
    """Codes: K concept slots plus the free bank (the paper's per-layer sweep: 10,000 free)."""
    l1_coefficient: float = 1.0
    """On activations rescaled to ``E||x|| = sqrt(d_in)``."""
    binding: str = "ce"
    """``"ce"`` (the paper's text) or ``"mse"`` (the official code)."""
    l1_scope: str = "all"
    """``"all"`` (the paper's text) or ``"free"`` (the official code)."""
    binding_coefficient: float = 10.0
    """Above the L1 coefficient: a slot's L1 cost per unit must be less than what binding gains."""
    decorrelation_coefficient: float = 0.1
    value_coefficient: float = 0.5
    reconstruction_steps: int = 200
    """Stage 1: reconstruction and sparsity."""
    alignment_steps: int = 400
    """Stage 2: every term."""
    batch_size: int = 256
    labelled_fraction: float = 0.5
    """Share of each batch from the labelled rows (the rest: unlabelled biography tokens)."""
    lr: float = 1e-3
    decoder_unit_norm: bool = True
    """Keep decoder rows at unit norm (the loop's default); the official code's decoder is unconstrained."""
    seed: int = 0

    def train_config(self, aligned: bool) -> DictionaryTrainConfig:
        """The loop's config: the two stages for an AlignSAE, the same number of plain steps for the control."""
        stages = alignsae_stages(self.reconstruction_steps, self.alignment_steps) if aligned else ()
        return DictionaryTrainConfig(n_steps=self.reconstruction_steps + self.alignment_steps,
                                     batch_size=self.batch_size, lr=self.lr, stages=stages,
                                     lr_warmup_steps=min(50, self.reconstruction_steps // 5),
                                     decoder_unit_norm=self.decoder_unit_norm, log_every=50, seed=self.seed)


def train_concept_dictionary(labelled: LabelledActivations, hook: str, settings: ConceptTraining,
                             unlabelled: Tensor | None = None, aligned: bool = True, n_values: int = 0,
                             progress: bool = False) -> tuple[torch.nn.Module, TrainResult]:
    """An AlignSAE (``aligned``) or a standard SAE on ``labelled`` rows at ``hook`` (plus ``unlabelled`` rows for
    reconstruction), trained by the one loop; the standard SAE takes the same data, width, L1 and steps."""
    check_labels(labelled.concept, len(labelled), labelled.concepts)
    torch.manual_seed(settings.seed)
    cfg = {"l1_coefficient": settings.l1_coefficient, "apply_b_dec_to_input": False}
    if aligned:
        value = n_values if labelled.value is not None else 0
        cfg |= {"concepts": labelled.concepts, "n_values": value, "binding": settings.binding,
                "l1_scope": settings.l1_scope, "binding_coefficient": settings.binding_coefficient,
                "decorrelation_coefficient": settings.decorrelation_coefficient,
                "value_coefficient": settings.value_coefficient}
    acts = labelled.acts[hook]
    sae = make_training_sae("alignsae" if aligned else "standard", d_in=acts.shape[1], d_sae=settings.d_sae, **cfg)
    source = MixedSource(TensorSource(acts, labels=labelled.labels(), seed=settings.seed),
                         None if unlabelled is None else TensorSource(unlabelled, seed=settings.seed + 1),
                         settings.labelled_fraction)
    result = train_dictionary(sae, source, settings.train_config(aligned), progress=progress)
    return sae, result


DICTIONARY_KINDS = ("alignsae", "standard", "official", "topics")
"""What a concept dictionary can be: the AlignSAE of the paper's text, its standard-SAE control, the AlignSAE with
the official code's choices, the AlignSAE on the topic ontology."""


def dictionary_dir(root: Path, position: int, kind: str = "alignsae") -> Path:
    """Where a concept dictionary of residual position ``position`` is saved: ``alignsae_resid_{position}`` and
    ``alignsae_resid_{position}_{standard|official}``, ``alignsae_topics_resid_{position}``."""
    if kind not in DICTIONARY_KINDS:
        raise ValueError(f"unknown dictionary kind {kind!r}; choose from {DICTIONARY_KINDS}")
    name = {"alignsae": f"alignsae_resid_{position}", "topics": f"alignsae_topics_resid_{position}"}.get(
        kind, f"alignsae_resid_{position}_{kind}")
    return Path(root) / name


@dataclass
class QASplits:
    """Everything the relation dictionaries train and are measured on, at every hook."""

    train: LabelledActivations
    """Training-template prompts (those in the model's corpus) of the training people."""
    held_out: LabelledActivations
    """The other training template's prompts, of people the dictionaries never saw."""
    unseen: LabelledActivations
    """Unseen-template prompts of those held-out people."""
    unlabelled: dict[str, Tensor]
    """Biography tokens of the training people (reconstruction only)."""

    def counts(self) -> dict[str, int]:
        return {"train_prompts": len(self.train), "held_out_prompts": len(self.held_out),
                "unseen_prompts": len(self.unseen), "biography_tokens": len(next(iter(self.unlabelled.values())))}


def qa_splits(model: torch.nn.Module, world: World, hook_names: Sequence[str], n_train: int | None = None,
              n_held_out: int | None = None, n_unseen: int | None = None, n_bio_tokens: int = 16_000,
              eval_fraction: float = 0.2, seed: int = 0) -> QASplits:
    """QA prompts split by person (:func:`split_people`) and biography tokens, read at every hook; each split cut
    to its size, balanced over relations."""
    train_people, eval_people = split_people(world, eval_fraction, seed)
    train = qa_activations(model, qa_examples(world, "corpus", train_people, n_train, seed), hook_names)
    held_out = qa_activations(model, qa_examples(world, "heldout_train_template", eval_people, n_held_out, seed),
                              hook_names)
    unseen = qa_activations(model, qa_examples(world, "unseen_template", eval_people, n_unseen, seed), hook_names)
    bios = [b["text"] for b in world.bios if b["person_id"] in train_people]
    random.Random(seed).shuffle(bios)
    unlabelled = text_activations(model, bios, hook_names, max_tokens=n_bio_tokens).acts
    return QASplits(train, held_out, unseen, unlabelled)


def subset(data: LabelledActivations, n: int) -> LabelledActivations:
    """The first ``n`` rows (balanced over relations when ``data`` came from :func:`qa_examples`)."""
    idx = torch.arange(min(n, len(data)))
    return LabelledActivations({h: a[idx] for h, a in data.acts.items()}, data.concept[idx], data.concepts,
                               None if data.value is None else data.value[idx], data.examples[:len(idx)],
                               None if data.prompts is None else data.prompts.select(idx))


@dataclass
class PositionResult:
    """One concept dictionary at one residual position: how it was obtained, its report, its swaps."""

    position: int
    hook: str
    kind: str
    dictionary: torch.nn.Module
    report: ConceptReport
    swaps: SwapResults | None
    how: str
    """``"loaded"`` (from ``data/dictionaries``) or ``"trained"`` (in this run)."""
    train_wall_time_s: float = 0.0


def align_position(model: torch.nn.Module, world: World, splits: QASplits, position: int, hook: str,
                   settings: ConceptTraining, *, train: bool, kind: str = "alignsae", n_values: int = 0,
                   n_swap: int = 0, alphas: Sequence[float] = (2.0,), modes: Sequence[str] = SWAP_MODES,
                   load_root: Path | None = None, save_root: Path | None = None, scale: str = "full") -> PositionResult:
    """Load (when ``train`` is False and it is saved under ``load_root``) or train a relation dictionary of ``kind``
    at ``hook``, report its binding, try ``n_swap`` held-out prompts' swaps, and save it under ``save_root`` when it
    was trained."""
    path = None if load_root is None else dictionary_dir(load_root, position, kind)
    wall = 0.0
    if not train and path is not None and (path / "cfg.json").exists():
        sae, how = load_dictionary(path, model=model), "loaded"
    else:
        sae, result = train_concept_dictionary(rows(splits.train, hook), hook, settings, splits.unlabelled[hook],
                                               aligned=kind != "standard", n_values=n_values)
        how, wall = "trained", result.wall_time_s
    report = concept_report(sae, hook, rows(splits.train, hook), rows(splits.held_out, hook),
                            rows(splits.unseen, hook))
    swaps = None
    if n_swap:
        swaps = run_swaps(model, sae, hook, subset(rows(splits.held_out, hook), n_swap), world, report.slots,
                          report.on_values, alphas, modes)
    if save_root is not None and how == "trained":
        save_concept_dictionary(sae, dictionary_dir(save_root, position, kind), hook, model, settings, report, scale)
    return PositionResult(position, hook, kind, sae, report, swaps, how, wall)


def align_topics(model: torch.nn.Module, world: World, position: int, hook: str, settings: ConceptTraining, *,
                 train: bool, n_per_topic: int, max_tokens: int | None = None, load_root: Path | None = None,
                 save_root: Path | None = None, scale: str = "full") -> PositionResult:
    """The same API on a second ontology: one slot per topic of the world, labels from topic text (every token after
    a passage's neutral opening), trained on passages of the model's corpus and measured on the held-out ones."""
    train_data = topic_activations(model, [hook], n_per_topic, seed=world.config.seed + 3, max_tokens=max_tokens)
    held_out = text_activations(model, [p.text for p in world.topic_eval], [hook],
                                labels=[p.topic for p in world.topic_eval], concepts=tuple(TOPICS),
                                skip_first_sentence=True)
    path = None if load_root is None else dictionary_dir(load_root, position, "topics")
    wall = 0.0
    if not train and path is not None and (path / "cfg.json").exists():
        sae, how = load_dictionary(path, model=model), "loaded"
    else:
        sae, result = train_concept_dictionary(train_data, hook, settings, None, aligned=True)
        how, wall = "trained", result.wall_time_s
    report = concept_report(sae, hook, train_data, held_out)
    if save_root is not None and how == "trained":
        save_concept_dictionary(sae, dictionary_dir(save_root, position, "topics"), hook, model, settings, report, scale)
    return PositionResult(position, hook, "topics", sae, report, None, how, wall)


def save_concept_dictionary(sae, path: Path, hook: str, model, settings: ConceptTraining, report: ConceptReport,
                            scale: str, produced_by: str = "notebooks/04_alignsae.ipynb") -> Path:
    """Save with its training settings and headline numbers in ``metadata.json``."""
    return save_dictionary(sae, path, hook_name=hook, model=model,
                           metadata={"settings": dataclasses.asdict(settings), "scale": scale,
                                     "produced_by": produced_by,
                                     "report": {k: v for k, v in report.summary().items() if "confusion" not in k}})


def horizon_arrays(results: Sequence[PositionResult], alpha: float = 2.0) -> dict[str, list]:
    """Per-position arrays of the layer sweep: binding, reconstruction, and strict/lenient swap success at ``alpha``
    per intervention (``swap_strict_alpha2`` is their mean)."""
    out: dict[str, list] = defaultdict(list)
    for r in results:
        s = r.report
        out["hooks"].append(r.hook)
        out["diag_accuracy"].append(s.diag_accuracy)
        out["unseen_template_slot_accuracy"].append(s.unseen_template_slot_accuracy)
        out["explained_variance"].append(s.explained_variance)
        out["l0"].append(s.l0)
        out["efffeat"].append(s.fragmentation.mean_efffeat)
        out["top1conc"].append(s.fragmentation.mean_top1conc)
        modes = list(dict.fromkeys(rec["mode"] for rec in r.swaps.records)) if r.swaps else []
        for mode in modes:
            out[f"swap_strict_alpha{alpha:g}_{mode}"].append(r.swaps.rate("strict", mode, alpha))
            out[f"swap_lenient_alpha{alpha:g}_{mode}"].append(r.swaps.rate("lenient", mode, alpha))
        rates = [r.swaps.rate("strict", m, alpha) for m in modes]
        out[f"swap_strict_alpha{alpha:g}"].append(float(np.mean(rates)) if rates else 0.0)
    return dict(out)


def best_position(per_layer: dict[str, list]) -> int:
    """The residual position with the highest strict swap success at alpha 2 (mean of both interventions), ties
    broken by the unseen-template slot accuracy, then the diagonal accuracy: where the concept is both bound and
    causal."""
    keys = list(zip(per_layer["swap_strict_alpha2"], [u or 0.0 for u in per_layer["unseen_template_slot_accuracy"]],
                    per_layer["diag_accuracy"], strict=True))
    return max(range(len(keys)), key=lambda i: keys[i])


def comparison_rows(named: dict[str, PositionResult], alpha: float = 2.0) -> dict[str, dict]:
    """One row per dictionary: binding, fragmentation, reconstruction and strict swap success at ``alpha``."""
    out = {}
    for name, r in named.items():
        s = r.report
        row = {"diag accuracy": s.diag_accuracy, "unseen-template slot accuracy": s.unseen_template_slot_accuracy,
               "EffFeat": s.fragmentation.mean_efffeat, "Top1Conc": s.fragmentation.mean_top1conc,
               "explained variance": s.explained_variance, "L0": s.l0}
        for mode in SWAP_MODES if r.swaps else ():
            row[f"swap {alpha:g} {mode} (strict)"] = r.swaps.rate("strict", mode, alpha)
        out[name] = row | {"how": r.how}
    return out


PAPER = {"diag_accuracy": 1.00, "unseen_template_slot_accuracy": 0.912, "swap_alpha2": 0.85, "swap_alpha10": 0.23,
         "answer_type_alpha2": 0.747, "answer_type_alpha10": 0.830, "layer0_diag": 0.238, "layer0_swap": 0.08}
"""Yang et al. (2025) on GPT-2 (layer 6 of 12 unless named; swaps with the lenient comparison of the official code)."""


def record_results(results, *, best: PositionResult, standard: PositionResult, official: PositionResult,
                   swaps: SwapResults, per_layer: dict[str, list], topics: PositionResult, settings: ConceptTraining,
                   counts: dict[str, int], path: str, official_settings: ConceptTraining | None = None,
                   headline_mode: str = "latent_decode") -> None:
    """Every number notebook 04 reports into ``results.metrics``, and its claims beside the paper's."""
    summary = swaps.summary()
    a, std, off = best.report, standard.report, official.report
    both = {"alignsae": a, "standard": std}
    results.metrics |= {
        "path": path, "hook": best.hook, "best_layer": best.position, "settings": dataclasses.asdict(settings),
        "counts": counts, "headline_swap_mode": headline_mode,
        "diag_accuracy": a.diag_accuracy, "unseen_template_slot_accuracy": a.unseen_template_slot_accuracy,
        "swap_success": {"strict": summary["strict"], "lenient": summary["lenient"]},
        "swap_answer_type_rate_on_failure": summary["answer_type_on_failure"],
        "swap_baseline_accuracy": summary["baseline_accuracy"], "n_swaps_per_setting": summary["n_swaps_per_setting"],
        "efffeat": {k: r.fragmentation.mean_efffeat for k, r in both.items()},
        "top1conc": {k: r.fragmentation.mean_top1conc for k, r in both.items()},
        "efffeat_all_features": {k: r.fragmentation_all_features.mean_efffeat for k, r in both.items()},
        "top1conc_all_features": {k: r.fragmentation_all_features.mean_top1conc for k, r in both.items()},
        "explained_variance": {k: r.explained_variance for k, r in both.items()},
        "standard": {"diag_accuracy": std.diag_accuracy,
                     "unseen_template_slot_accuracy": std.unseen_template_slot_accuracy, "slots": std.slots},
        "official_variant": {"binding": "mse", "l1_scope": "free", "diag_accuracy": off.diag_accuracy,
                             "unseen_template_slot_accuracy": off.unseen_template_slot_accuracy,
                             "explained_variance": off.explained_variance,
                             "settings": None if official_settings is None else dataclasses.asdict(official_settings),
                             **({f"swap_strict_alpha{a:g}_{m}": official.swaps.rate("strict", m, a)
                                 for m in SWAP_MODES for a in sorted({r["alpha"] for r in official.swaps.records})}
                                if official.swaps else {})},
        "per_layer": per_layer,
        "topic_diag_accuracy": topics.report.diag_accuracy, "topics": list(TOPICS),
        "topic_explained_variance": topics.report.explained_variance,
        "confusion": {"alignsae": a.confusion, "standard": std.confusion, "topics": topics.report.confusion},
        "how": {"alignsae": best.how, "standard": standard.how, "official": official.how, "topics": topics.how},
    }
    strict, lenient, types = summary["strict"][headline_mode], summary["lenient"][headline_mode], \
        summary["answer_type_on_failure"][headline_mode]
    claim = results.claim
    claim(f"AlignSAE diagonal accuracy at residual position {best.position} (held-out people)", a.diag_accuracy,
          PAPER["diag_accuracy"], ">= 0.9")
    claim("AlignSAE unseen-template slot accuracy", a.unseen_template_slot_accuracy,
          PAPER["unseen_template_slot_accuracy"], ">= 0.8")
    for alpha, key in ((2.0, "swap_alpha2"), (10.0, "swap_alpha10")):
        tag = f"{alpha:g}"
        bar = ">= 0.5" if alpha == 2.0 else ""
        if tag in strict:
            claim(f"swap success at alpha {tag}, {headline_mode}, strict (whole answer)", strict[tag], PAPER[key], bar)
            claim(f"swap success at alpha {tag}, {headline_mode}, lenient (official substring match)", lenient[tag],
                  PAPER[key], bar)
        if types.get(tag) is not None:
            claim(f"failed swaps answering with the target relation's type, alpha {tag}", types[tag],
                  PAPER[key.replace("swap", "answer_type")])
    claim("EffFeat, standard SAE (all features)", std.fragmentation.mean_efffeat, "hundreds to thousands")
    claim("Top1Conc, standard SAE", std.fragmentation.mean_top1conc, "near 0", "< 0.5")
    claim("EffFeat, AlignSAE (concept slots)", a.fragmentation.mean_efffeat, "about 1", "<= 1.5")
    claim("Top1Conc, AlignSAE (concept slots)", a.fragmentation.mean_top1conc, "near 1", ">= 0.7")
    claim("diagonal accuracy at residual position 0 (embeddings)", per_layer["diag_accuracy"][0], PAPER["layer0_diag"])
    claim("strict swap success at residual position 0, alpha 2", per_layer["swap_strict_alpha2"][0],
          PAPER["layer0_swap"])
    claim(f"topic ontology ({len(TOPICS)} slots) diagonal accuracy, held-out passages' tokens",
          topics.report.diag_accuracy, "— (beyond the paper)", ">= 0.8")


# --- explore by hand ---


def swap_explorer(model: torch.nn.Module, dictionary, hook: str, world: World, slots: Sequence[int],
                  on_values: Sequence[float], concepts: Sequence[str] = RELATIONS, people: Sequence[int] | None = None):
    """ipywidgets controls (person, relation, target relation, intervention, alpha) and the answer before and after
    the swap, as HTML. The prompt is the relation's first training template; the result updates whenever a control
    changes (also without a front end: set ``.value`` on a control)."""
    import ipywidgets as widgets

    by_id = {p.person_id: p for p in world.people}
    ids = list(people) if people is not None else list(by_id)[:200]
    person = widgets.Dropdown(options=[(by_id[i].name, i) for i in ids], value=ids[0], description="person")
    relation = widgets.Dropdown(options=list(concepts), value=concepts[0], description="asks")
    target = widgets.Dropdown(options=list(concepts), value=concepts[1], description="swap to")
    mode = widgets.ToggleButtons(options=list(SWAP_MODES), value=SWAP_MODES[0], description="intervention")
    alpha = widgets.SelectionSlider(options=list(PAPER_ALPHAS), value=2.0, description="alpha")
    out = widgets.HTML()
    max_new = max_answer_tokens(world, model.tokenizer) + 1

    def show(_=None) -> None:
        out.value = swap_card(model, dictionary, hook, by_id[person.value], relation.value, target.value, mode.value,
                              alpha.value, slots, on_values, concepts, max_new)

    for w in (person, relation, target, mode, alpha):
        w.observe(show, names="value")
    show()
    return widgets.VBox([person, relation, target, mode, alpha, out])


@torch.no_grad()
def swap_card(model, dictionary, hook: str, person, relation: str, target: str, mode: str, alpha: float,
              slots: Sequence[int], on_values: Sequence[float], concepts: Sequence[str], max_new: int) -> str:
    """HTML: the question, the answer before, the answer after swapping ``relation`` to ``target``, and the value
    the swap aims for."""
    prompt = qa_prompt(QA_TEMPLATES[relation][0].format(name=person.name))
    batch = PromptBatch.from_texts(model.tokenizer, [prompt])
    n = int(batch.lengths[0])
    before = answers_after(model, batch.tokens, max_new)[0]
    if relation == target:
        after = before
    else:
        r, t = concepts.index(relation), concepts.index(target)
        h = _last_token_acts(model, batch, [hook], 1)[hook]
        d_norm = dictionary.W_dec.detach()[slots[t]].norm().cpu()
        keep, mult, add = swap_parameters([mode], torch.tensor([float(alpha)]), torch.tensor([on_values[t]]),
                                          h.norm(dim=1), d_norm[None])
        splice = interventions.Splice(dictionary, hook, positions=[n - 1], edit=swap_edit(
            n - 1, torch.tensor([slots[r]]), torch.tensor([slots[t]]), keep, mult, add))
        after = answers_after(model, batch.tokens, max_new, splice)[0]
    esc = html.escape
    return (f"<p><b>{esc(prompt.replace(chr(10), ' '))}</b></p><p>before: <code>{esc(before)}</code> "
            f"(true {esc(person.value(relation))})</p><p>after {esc(relation)} &rarr; {esc(target)} ({mode}, alpha "
            f"{alpha:g}): <code>{esc(after)}</code> (aimed at {esc(person.value(target))})</p>")


def finite_or_none(x: float | None) -> float | None:
    """``x`` when it is a finite number, else None (results files hold no NaN)."""
    return None if x is None or not math.isfinite(x) else float(x)
