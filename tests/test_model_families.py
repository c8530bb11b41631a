"""Every public function that takes a model, on the families users bring: GPT-2, GPT-NeoX (Pythia) and Llama.

Each is a randomly initialised 2-layer Hugging Face model (d_model 64, 4 heads) with the embedded model's
tokenizer, saved to a temporary folder and loaded by ``load_model`` - no download. The bridge is checked against
the Hugging Face model itself (logits, and edits at the MLP hooks against the same edits on HF's modules), so a
hook name that exists but sits in the wrong place fails here.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from workbench import hooks, interventions, load_model
from workbench.dictionaries import make_training_sae
from workbench.dictionaries.baselines import neuron_basis
from workbench.dictionaries.metrics import ce_loss_recovered
from workbench.dictionaries.training import DictionaryTrainConfig, TensorSource, train_dictionary
from workbench.generation import generate, generate_tokens
from workbench.paths import embedded_model_dir

D_MODEL, N_LAYERS, N_HEADS, N_CTX = 64, 2, 4, 64
LAYER = 1


def _configs(vocab: int, special: dict) -> dict:
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        GPTNeoXConfig,
        GPTNeoXForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
    )

    return {
        "gpt2": (GPT2LMHeadModel, GPT2Config(vocab_size=vocab, n_positions=N_CTX, n_embd=D_MODEL, n_layer=N_LAYERS,
                                             n_head=N_HEADS, **special)),
        "pythia": (GPTNeoXForCausalLM, GPTNeoXConfig(  # Pythia's layout: parallel attention, partial rotary
            vocab_size=vocab, max_position_embeddings=N_CTX, hidden_size=D_MODEL, num_hidden_layers=N_LAYERS,
            num_attention_heads=N_HEADS, intermediate_size=4 * D_MODEL, rotary_pct=0.25, use_parallel_residual=True,
            **special)),
        "llama": (LlamaForCausalLM, LlamaConfig(  # RMSNorm, rotary, gated SiLU MLP, grouped-query attention
            vocab_size=vocab, max_position_embeddings=N_CTX, hidden_size=D_MODEL, num_hidden_layers=N_LAYERS,
            num_attention_heads=N_HEADS, num_key_value_heads=2, intermediate_size=2 * D_MODEL, **special)),
    }


FAMILIES = ["gpt2", "pythia", "llama"]


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, tmp_path_factory):
    """``(name, Hugging Face model, bridge)`` for one family, saved and loaded from a local folder."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(embedded_model_dir()))
    special = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    cls, config = _configs(len(tokenizer), special)[request.param]
    torch.manual_seed(0)
    hf = cls(config).eval()
    path = tmp_path_factory.mktemp(f"tiny_{request.param}")
    hf.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bridge = load_model(path, device="cpu")
    return request.param, hf, bridge


@pytest.fixture(scope="module")
def tokens(family):
    """``[8, 16]`` random tokens after a BOS (the layout of the project's packed evaluation rows)."""
    _, _, model = family
    g = torch.Generator().manual_seed(1)
    body = torch.randint(1, model.cfg.d_vocab, (8, 15), generator=g)
    return torch.cat([torch.full((8, 1), model.tokenizer.bos_token_id), body], dim=1)


@pytest.fixture(scope="module")
def cached(family, tokens):
    _, _, model = family
    return hooks.cache_activations(model, tokens, [hooks.resid_pre(LAYER), hooks.mlp_out(LAYER)], batch_size=3,
                                   progress=False)


def test_loads_with_the_family_shape_and_matches_hugging_face(family, tokens):
    name, hf, model = family
    assert (model.cfg.n_layers, model.cfg.d_model, model.cfg.n_heads) == (N_LAYERS, D_MODEL, N_HEADS)
    assert model.cfg.n_ctx == N_CTX
    assert model.cfg.parallel_attn_mlp == (name == "pythia")
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), hf(tokens).logits, atol=1e-4, rtol=1e-4)
    text = _prompt(model)
    assert model.to_string(model.to_tokens(text, prepend_bos=False)[0]).strip() == text


def _prompt(model, n_words: int = 5) -> str:
    """Words of the tokenizer's own vocabulary (the embedded tokenizer is word-level over a synthetic world)."""
    vocab = sorted(model.tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return " ".join([w for w, _ in vocab if w.isalpha() and w.islower()][:n_words])


def _expected_shape(model, helper, batch, pos):
    cfg = model.cfg
    if helper in (hooks.mlp_pre, hooks.mlp_post):
        return (batch, pos, cfg.d_mlp)
    if helper is hooks.attn_pattern:
        return (batch, cfg.n_heads, pos, pos)
    if helper is hooks.z:
        return (batch, pos, cfg.n_heads, cfg.d_head)
    return (batch, pos, cfg.d_model)


HELPERS = [hooks.resid_pre, hooks.resid_mid, hooks.resid_post, hooks.mlp_in, hooks.mlp_pre, hooks.mlp_post,
           hooks.mlp_out, hooks.attn_out, hooks.attn_pattern, hooks.z]


def test_hook_helpers_name_hooks_that_fire_with_the_right_shape(family, tokens):
    name, _, model = family
    for helper in HELPERS:
        for layer in range(N_LAYERS):
            hook_name = helper(layer)
            if name == "pythia" and helper is hooks.resid_mid:
                with pytest.raises(ValueError, match="parallel"):
                    hooks.check_hook_name(model, hook_name)
                continue
            assert hooks.check_hook_name(model, hook_name) == hook_name
            with torch.no_grad():
                _, cache = model.run_with_cache(tokens[:2], names_filter=[hook_name])
            assert hook_name in cache, f"{hook_name} exists on the {name} bridge but did not fire"
            assert tuple(cache[hook_name].shape) == _expected_shape(model, helper, 2, tokens.shape[1]), hook_name


def test_an_unknown_hook_name_raises_with_valid_names(family):
    _, _, model = family
    with pytest.raises(ValueError, match="blocks.0.hook_resid_pre"):
        hooks.check_hook_name(model, "blocks.0.hook_resid_prre")


def _hf_mlp(name: str, hf, layer: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The family's MLP module and its output projection in the Hugging Face model."""
    if name == "gpt2":
        mlp = hf.transformer.h[layer].mlp
        return mlp, mlp.c_proj
    if name == "pythia":
        mlp = hf.gpt_neox.layers[layer].mlp
        return mlp, mlp.dense_4h_to_h
    mlp = hf.model.layers[layer].mlp
    return mlp, mlp.down_proj


@torch.no_grad()
def test_mlp_hooks_sit_where_hugging_face_computes_them(family, tokens):
    """An edit at mlp_in / mlp_post / mlp_out is the same edit on HF's MLP input, down-projection input and MLP
    output: the names a transcoder or a neuron-basis analysis uses read and write the right tensors."""
    name, hf, model = family
    mlp, down = _hf_mlp(name, hf, LAYER)
    cases = [
        (hooks.mlp_in(LAYER), lambda: mlp.register_forward_pre_hook(lambda m, args: (args[0] * 1.5,))),
        (hooks.mlp_post(LAYER), lambda: down.register_forward_pre_hook(lambda m, args: (args[0] * 1.5,))),
        (hooks.mlp_out(LAYER), lambda: mlp.register_forward_hook(lambda m, args, out: out * 1.5)),
    ]
    clean = model(tokens)
    for hook_name, register in cases:
        handle = register()
        try:
            expected = hf(tokens).logits
        finally:
            handle.remove()
        with interventions.replaced(model, hook_name, lambda act: act * 1.5):
            got = model(tokens)
        assert (got - clean).abs().max() > 1e-3, f"scaling {hook_name} changed nothing"
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4, msg=f"{name}: {hook_name}")


def test_cache_activations_keeps_the_non_bos_rows(family, tokens, cached):
    _, _, model = family
    n = int((tokens != model.tokenizer.bos_token_id).sum())
    names = [hooks.resid_pre(LAYER), hooks.mlp_out(LAYER)]
    assert len(cached) == n
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=names)
    for hook_name in names:
        assert cached[hook_name].shape == (n, D_MODEL)
        torch.testing.assert_close(cached[hook_name], cache[hook_name][:, 1:].reshape(-1, D_MODEL))


@pytest.mark.parametrize("hook_of", [hooks.resid_pre, hooks.mlp_out], ids=["resid_pre", "mlp_out"])
@torch.no_grad()
def test_identity_splice_reproduces_the_clean_logits(family, tokens, cached, hook_of):
    _, _, model = family
    hook_name = hook_of(LAYER)
    identity = neuron_basis(cached[hook_name])
    clean = model(tokens)
    splice = interventions.Splice(identity, hook_name, use_error_term=False)
    with interventions.spliced(model, splice):
        got = model(tokens)
    torch.testing.assert_close(got, clean, atol=1e-4, rtol=1e-4)
    assert splice.codes.shape == (*tokens.shape, D_MODEL)


def test_ce_loss_recovered_of_the_identity_is_one(family, tokens, cached):
    _, _, model = family
    hook_name = hooks.resid_pre(LAYER)
    out = ce_loss_recovered(model, neuron_basis(cached[hook_name]), hook_name, tokens)
    assert out["ce_loss_spliced"] == pytest.approx(out["ce_loss_clean"], abs=1e-5)
    assert out["ce_loss_zero_ablated"] != pytest.approx(out["ce_loss_clean"], abs=1e-4)
    assert out["ce_loss_recovered_zero"] == pytest.approx(1.0, abs=1e-2)
    assert out["ce_loss_recovered_mean"] == pytest.approx(1.0, abs=1e-2)


def test_train_dictionary_on_cached_activations_and_splice_it(family, tokens, cached):
    _, _, model = family
    hook_name = hooks.resid_pre(LAYER)
    torch.manual_seed(0)
    sae = make_training_sae("standard", d_in=D_MODEL, d_sae=2 * D_MODEL, l1_coefficient=1e-3)
    cfg = DictionaryTrainConfig(n_steps=30, batch_size=32, lr=3e-3, dead_window=10)
    result = train_dictionary(sae, TensorSource(cached[hook_name]), cfg, progress=False)
    assert result.steps == 30
    losses = [h["loss"] for h in result.history if "loss" in h]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    with torch.no_grad(), interventions.spliced(model, interventions.Splice(sae, hook_name)):
        got = model(tokens)  # with the error term the run is unchanged
    torch.testing.assert_close(got, model(tokens), atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_greedy_generation_matches_hugging_face(family):
    _, hf, model = family
    # a stop token other than EOS (id 0), which the random GPT-2 predicts first after every prompt: both sides
    # then generate past it
    stop = model.cfg.d_vocab - 1
    lengths = []
    for n_words in (1, 2, 3, 4, 5, 6):
        prompt = model.tokenizer(_prompt(model, n_words), add_special_tokens=False).input_ids
        assert model.tokenizer.unk_token_id not in prompt
        ids = torch.tensor([[model.tokenizer.bos_token_id, *prompt]])
        ours = generate_tokens(model, ids, max_new_tokens=8, stop_token_id=stop)[0].tolist()
        theirs = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
                             eos_token_id=stop, pad_token_id=stop)[0, ids.shape[1]:].tolist()  # with KV cache
        assert ours[:len(theirs)] == theirs
        assert all(t == stop for t in ours[len(theirs):])  # ours pads a stopped row with the stop token
        lengths.append(len(theirs))
    assert max(lengths) >= 4, f"every continuation ended at once ({lengths}): the comparison checked nothing"
    text = generate(model, [_prompt(model), _prompt(model, 2)], max_new_tokens=4)
    assert len(text) == 2 and all(isinstance(t, str) and t for t in text)


def test_a_hub_name_loads_from_the_local_cache(tmp_path, monkeypatch):
    """``load_model("EleutherAI/pythia-70m")`` boots from the local Hugging Face cache, offline: here a cache
    holding a tiny random Pythia under that name (the real weights load the same way)."""
    from huggingface_hub import constants
    from transformers import AutoTokenizer

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    repo, commit = tmp_path / "models--EleutherAI--pythia-70m", "0" * 40
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    tokenizer = AutoTokenizer.from_pretrained(str(embedded_model_dir()))
    cls, config = _configs(len(tokenizer), dict(bos_token_id=tokenizer.bos_token_id,
                                                eos_token_id=tokenizer.eos_token_id))["pythia"]
    torch.manual_seed(0)
    hf = cls(config).eval()
    hf.save_pretrained(str(snapshot))
    tokenizer.save_pretrained(str(snapshot))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model("EleutherAI/pythia-70m", device="cpu")
    assert model.cfg.model_name == "EleutherAI/pythia-70m" and model.cfg.n_layers == N_LAYERS
    ids = torch.tensor([[tokenizer.bos_token_id, 5, 6, 7]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids), hf(ids).logits, atol=1e-4, rtol=1e-4)
