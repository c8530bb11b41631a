"""Learning curves per behaviour on a short training run, to compare corpus designs cheaply.

Trains the embedded model's shape on a world built with ``--world`` overrides (JSON of WorldConfig fields) and
a data mix ``--epochs`` (JSON of epochs per document kind; the cosine schedule spans the whole short run),
and every ``--eval-every`` steps prints: unseen-template QA (overall and per relation), training-template QA
(held-out training template), and a relation probe per layer (logistic regression on the last prompt token's
residual after each block, trained on held-out training-template prompts, scored on unseen-template prompts).
At the end it adds IOI and greater-than. Writes ``<out>/curve.jsonl``.

    PYTHONPATH=. WORKBENCH_ROOT=. python scripts/corpus_curves.py --out runs/baseline \\
        --world '{"question_docs_per_person": 0, "language_docs": 0}' \\
        --epochs '{"biography": 6, "qa": 6, "ioi": 0.2, "greater_than": 0.2, "topic": 0.3}'
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from workbench import behaviours
from workbench.datasets import RELATIONS, WorldConfig, synthesize
from workbench.lm_training import LMTrainConfig, make_optimizer, new_model, token_stream
from workbench.tokenizer import build_tokenizer, encode_strict


@torch.no_grad()
def last_token_states(model, tokenizer, prompts: list[str], batch_size: int = 256) -> np.ndarray:
    """``[n_prompts, n_layer, d_model]``: the residual after each block at each prompt's last token."""
    seqs = [[tokenizer.bos_token_id, *encode_strict(tokenizer, p)] for p in prompts]
    out = []
    for k in range(0, len(seqs), batch_size):
        chunk = seqs[k:k + batch_size]
        width = max(map(len, chunk))
        tokens = torch.tensor([s + [tokenizer.bos_token_id] * (width - len(s)) for s in chunk])
        hs = model(tokens, output_hidden_states=True).hidden_states[1:]  # after each block (last one after ln_f)
        last = torch.tensor([len(s) - 1 for s in chunk])
        out.append(torch.stack([h[torch.arange(len(chunk)), last] for h in hs], 1).float().numpy())
    return np.concatenate(out)


def relation_probe(model, tokenizer, world, n_train: int = 1800, n_test: int = 1200) -> list[float]:
    train = world.qa_split("heldout_train_template")[:n_train]
    test = world.qa_split("unseen_template")[:n_test]
    xtr = last_token_states(model, tokenizer, [q.prompt for q in train])
    xte = last_token_states(model, tokenizer, [q.prompt for q in test])
    ytr = [q.relation for q in train]
    yte = [q.relation for q in test]
    scores = []
    for layer in range(xtr.shape[1]):
        scaler = StandardScaler().fit(xtr[:, layer])
        clf = LogisticRegression(max_iter=2000, C=0.1).fit(scaler.transform(xtr[:, layer]), ytr)
        scores.append(float(clf.score(scaler.transform(xte[:, layer]), yte)))
    return scores


def unseen_given_known(fn, tokenizer, world, n_people: int = 100) -> float:
    """Unseen-template accuracy on the (person, relation) pairs whose held-out training-template prompt is
    answered right: how well the question is read once the fact is known, apart from memorisation."""
    def correct(split):
        qs = [q for q in world.qa_split(split) if q.person_id < n_people]
        ok = behaviours.answer_correct(fn, [[tokenizer.bos_token_id, *encode_strict(tokenizer, q.prompt)] for q in qs],
                                       [encode_strict(tokenizer, q.answer) for q in qs], torch.device("cpu"))
        return qs, ok
    tq, tok = correct("heldout_train_template")
    known = {(q.person_id, q.relation) for q, k in zip(tq, tok, strict=True) if k}
    uq, uok = correct("unseen_template")
    mask = np.array([(q.person_id, q.relation) in known for q in uq])
    return float(uok[mask].mean()) if mask.any() else float("nan")


def evaluate(model, tokenizer, world, final: bool) -> dict:
    model.eval()
    fn = behaviours.logits_fn_of(model)
    dev = torch.device("cpu")
    unseen = behaviours.qa_accuracy(fn, tokenizer, world, "unseen_template", dev, limit=1200)
    train = behaviours.qa_accuracy(fn, tokenizer, world, "heldout_train_template", dev, limit=600)
    probe = relation_probe(model, tokenizer, world)
    point = {"unseen_qa": unseen, "train_qa": train["all"], "unseen_given_known": unseen_given_known(fn, tokenizer, world),
             "probe": probe,
             "probe_best": [int(np.argmax(probe)), max(probe)]}
    if final:
        ioi = behaviours.ioi_metrics(fn, tokenizer, world, dev)
        gt = behaviours.greater_than_metrics(fn, tokenizer, world, dev)
        point |= {"ioi_accuracy": ioi["ioi_accuracy"], "ioi_logit_diff": ioi["ioi_logit_diff"],
                  "greater_than_prob_diff": gt["greater_than_prob_diff"]}
    model.train()
    return point


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--world", default="{}", help="JSON of WorldConfig field overrides")
    ap.add_argument("--epochs", required=True, help="JSON of epochs per document kind")
    ap.add_argument("--train", default="{}", help="JSON of LMTrainConfig field overrides")
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--max-steps", type=int)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--save", action="store_true", help="save the final model and tokenizer to <out>/model")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    world = synthesize(dataclasses.replace(WorldConfig(), **json.loads(args.world)))
    cfg = dataclasses.replace(LMTrainConfig(), epochs_per_kind=json.loads(args.epochs), **json.loads(args.train))
    tokenizer = build_tokenizer(world.all_texts())
    data = torch.from_numpy(token_stream(world, tokenizer, cfg))
    total = len(data) // cfg.batch_size
    stop = min(total, args.max_steps or total)
    print(f"{out.name}: {total} steps of {cfg.batch_size}x{cfg.seq_len} = {total * cfg.batch_size * cfg.seq_len / 1e6:.2f}M tokens; "
          f"vocab {len(tokenizer)}", flush=True)
    model = new_model(cfg, tokenizer)
    opt = make_optimizer(model, cfg)
    step_fn = torch.compile(model) if args.compile else model
    start = time.perf_counter()
    log = (out / "curve.jsonl").open("w")
    model.train()
    for step in range(stop):
        batch = data[step * cfg.batch_size:(step + 1) * cfg.batch_size].long()
        for group in opt.param_groups:
            group["lr"] = cfg.lr_at(step, total)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            loss = step_fn(batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        done = step + 1
        if done % 25 == 0:
            print(f"  step {done}/{stop} loss {loss.item():.3f} {time.perf_counter() - start:.0f}s", flush=True)
        if done % args.eval_every == 0 or done == stop:
            train_s = time.perf_counter() - start
            point = {"step": done, "tokens": done * cfg.batch_size * cfg.seq_len, "train_s": round(train_s),
                     "loss": round(loss.item(), 3)} | evaluate(model, tokenizer, world, final=done == stop)
            log.write(json.dumps(point) + "\n")
            log.flush()
            u = point["unseen_qa"]
            print(f"step {done} ({point['tokens'] / 1e6:.2f}M tok, {train_s:.0f}s) loss {point['loss']} | unseen QA "
                  f"{u['all']:.3f} [" + " ".join(f"{r[:6]}={u[r]:.2f}" for r in RELATIONS) + f"] | train QA "
                  f"{point['train_qa']:.3f} | unseen|known {point['unseen_given_known']:.3f} | probe " + " ".join(f"{p:.2f}" for p in point["probe"])
                  + "".join(f" | {k} {point[k]:.3f}" for k in ("ioi_accuracy", "ioi_logit_diff", "greater_than_prob_diff") if k in point),
                  flush=True)
            start += time.perf_counter() - start - train_s  # evaluation time is not training time
    if args.save:
        model.save_pretrained(str(out / "model"), safe_serialization=True)
        tokenizer.save_pretrained(str(out / "model"))


if __name__ == "__main__":
    main()
