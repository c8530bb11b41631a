import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from workbench import load_model
from workbench.lm_training import LMTrainConfig, lr_at, token_stream, train_lm


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, smoke_world):
    root = tmp_path_factory.mktemp("lm")
    model, tokenizer, state = train_lm(smoke_world, LMTrainConfig.for_scale("smoke"), root / "model", root / "ckpt",
                                       progress=False)
    return root, model, state


def test_training_lowers_the_loss_and_records_its_run(smoke_run):
    root, _, state = smoke_run
    meta = json.loads((root / "model" / "metadata.json").read_text())
    assert meta["steps"] == state.step == meta["total_steps"] and meta["tokens_seen"] > 0
    assert meta["history"][-1]["train_loss"] < meta["history"][0]["train_loss"] or len(meta["history"]) == 1
    first_loss = meta["history"][0]["heldout_loss"]["biography"]
    assert first_loss < torch.log(torch.tensor(float(meta["training"]["seq_len"] * 100))).item()
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


def test_token_stream_packs_every_kind_and_repeats_biographies(smoke_world, smoke_tokenizer):
    cfg = LMTrainConfig.for_scale("smoke")
    stream = token_stream(smoke_world, smoke_tokenizer, cfg)
    assert stream.shape[1] == cfg.seq_len
    bos = (stream == smoke_tokenizer.bos_token_id).sum()
    n_docs = sum(1 for _ in smoke_world.training_documents())
    assert bos > n_docs  # biographies and QA are repeated (2 epochs at smoke scale)


def test_learning_rate_warms_up_then_decays():
    cfg = LMTrainConfig(warmup_steps=10)
    lrs = [lr_at(s, 100, cfg) for s in range(100)]
    assert lrs[0] < lrs[9] == pytest.approx(cfg.lr) and lrs[-1] < lrs[50] < lrs[10]


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="divisible"):
        LMTrainConfig(d_model=100, n_head=3)


def test_a_checkpoint_of_another_run_is_not_resumed(smoke_world, tmp_path):
    cfg = LMTrainConfig.for_scale("smoke")
    train_lm(smoke_world, cfg, tmp_path / "model", tmp_path / "ckpt", max_steps=5, progress=False)
    other = LMTrainConfig(**{**cfg.__dict__, "lr": cfg.lr / 2})
    with pytest.raises(ValueError, match="delete that folder"):
        train_lm(smoke_world, other, tmp_path / "model", tmp_path / "ckpt", progress=False)
