import json
import math
from collections import Counter

import pytest
import torch
from transformers import AutoModelForCausalLM

from workbench import load_model
from workbench.lm_training import LMTrainConfig, token_stream, train_lm


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, smoke_world):
    root = tmp_path_factory.mktemp("lm")
    model, tokenizer, state = train_lm(smoke_world, LMTrainConfig.for_scale("smoke"), root / "model", root / "ckpt",
                                       progress=False)
    return root, model, state


def test_training_lowers_the_loss_well_below_chance_and_records_its_run(smoke_run):
    root, model, state = smoke_run
    meta = json.loads((root / "model" / "metadata.json").read_text())
    assert meta["steps"] == state.step == meta["total_steps"] and meta["tokens_seen"] > 0
    history = meta["history"]
    assert len(history) >= 3, f"the smoke run should record several evaluations (eval_every), got {len(history)}"
    chance = math.log(model.config.vocab_size)  # a uniform guess: ln(930) = 6.8 nats for the smoke vocabulary
    first, last = history[0], history[-1]
    assert last["train_loss"] < first["train_loss"] - 0.3
    for kind, loss in last["heldout_loss"].items():  # every kind of held-out text is learned, not just the mix
        assert loss < chance - 1.5 and loss < first["heldout_loss"][kind] - 0.3, (kind, first["heldout_loss"][kind], loss)
    assert (root / "model" / "model.safetensors").exists() and (root / "model" / "tokenizer.json").exists()


def test_saved_model_reloads_with_equal_logits_through_transformers_and_load_model(smoke_run):
    root, model, _ = smoke_run
    hf = AutoModelForCausalLM.from_pretrained(str(root / "model")).eval()
    bridge = load_model(root / "model", device="cpu")
    tokens = bridge.to_tokens("Q: Where was it born?\nA:")
    with torch.no_grad():
        expected = model(tokens).logits
        assert torch.allclose(hf(tokens).logits, expected, atol=1e-5)
        assert torch.allclose(bridge(tokens), expected, atol=1e-4)


def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(smoke_run, smoke_world, tmp_path):
    _, uninterrupted, _ = smoke_run
    cfg = LMTrainConfig.for_scale("smoke")
    _, _, stopped = train_lm(smoke_world, cfg, tmp_path / "model", tmp_path / "ckpt", max_steps=25, progress=False)
    assert stopped.step == 25 and not (tmp_path / "model").exists()
    resumed, _, state = train_lm(smoke_world, cfg, tmp_path / "model", tmp_path / "ckpt", progress=False)
    for (name, a), b in zip(resumed.state_dict().items(), uninterrupted.state_dict().values(), strict=True):
        assert torch.equal(a, b), f"{name} differs after resume"


def test_token_stream_packs_every_document_once_per_epoch_after_a_bos(smoke_world, smoke_tokenizer):
    cfg = LMTrainConfig.for_scale("smoke")
    stream = token_stream(smoke_world, smoke_tokenizer, cfg)
    assert stream.shape[1] == cfg.seq_len and stream[0, 0] == smoke_tokenizer.bos_token_id
    packed, doc = Counter(), []
    for t in stream.reshape(-1).tolist():
        if t == smoke_tokenizer.bos_token_id:
            packed[tuple(doc)] += 1
            doc = []
        else:
            doc.append(t)
    packed[()] -= 1  # what precedes the first BOS; the document cut by the end of the last row is never counted
    assert packed.pop(()) == 0, "an empty document (two BOS in a row) was packed"
    expected = Counter()
    for kind, text in smoke_world.training_documents():  # biographies and QA twice at smoke scale
        expected[tuple(smoke_tokenizer(text, add_special_tokens=False).input_ids)] += int(cfg.epochs_per_kind[kind])
    assert packed <= expected, "a document was packed more often than its epochs, or altered"
    # all that is missing is the cut document and the few that fitted in the dropped tail (under a row)
    missing_tokens = sum((len(d) + 1) * n for d, n in (expected - packed).items())
    assert 0 < missing_tokens < cfg.seq_len + max(map(len, expected)) + 1


def test_learning_rate_warms_up_then_decays_to_its_floor():
    cfg = LMTrainConfig(warmup_steps=10)
    lrs = [cfg.lr_at(s, 100) for s in range(101)]
    assert lrs[0] < lrs[9] == pytest.approx(cfg.lr) and lrs[-1] < lrs[50] < lrs[10]
    assert lrs[100] == pytest.approx(cfg.min_lr_ratio * cfg.lr)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="divisible"):
        LMTrainConfig(d_model=100, n_head=3)


def test_a_checkpoint_of_another_run_is_not_resumed(smoke_world, tmp_path):
    cfg = LMTrainConfig.for_scale("smoke")
    train_lm(smoke_world, cfg, tmp_path / "model", tmp_path / "ckpt", max_steps=5, progress=False)
    other = LMTrainConfig(**{**cfg.__dict__, "lr": cfg.lr / 2})
    with pytest.raises(ValueError, match="delete that folder"):
        train_lm(smoke_world, other, tmp_path / "model", tmp_path / "ckpt", progress=False)
