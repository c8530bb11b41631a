import pytest
import torch

from workbench import hooks, interventions
from workbench.generation import generate, generate_tokens


def _hf_greedy_loop(hf_model, tokens: torch.Tensor, n: int) -> torch.Tensor:
    seq = tokens
    with torch.no_grad():
        for _ in range(n):
            seq = torch.cat([seq, hf_model(seq).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return seq[:, tokens.shape[1]:]


def _hf_generate(hf_model, tokens: torch.Tensor, n: int, use_cache: bool = True) -> torch.Tensor:
    out = hf_model.generate(tokens, max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=use_cache,
                            pad_token_id=0, attention_mask=torch.ones_like(tokens))
    return out[:, tokens.shape[1]:]


def test_greedy_equals_a_manual_loop_and_hugging_face_generate(tiny_bridge, tiny_tokens):
    ours = generate_tokens(tiny_bridge, tiny_tokens, max_new_tokens=12)
    assert torch.equal(ours, _hf_greedy_loop(tiny_bridge.original_model, tiny_tokens, 12))
    assert torch.equal(ours, _hf_generate(tiny_bridge.original_model, tiny_tokens, 12))


def test_greedy_under_an_intervention_equals_hugging_face_generate_under_it(tiny_bridge, tiny_tokens):
    vector = 3 * torch.randn(tiny_bridge.cfg.d_model, generator=torch.Generator().manual_seed(0))
    plain = generate_tokens(tiny_bridge, tiny_tokens, max_new_tokens=12)
    with interventions.added(tiny_bridge, hooks.resid_pre(1), vector):  # every position, cached or not
        ours = generate_tokens(tiny_bridge, tiny_tokens, max_new_tokens=12)
        theirs = _hf_generate(tiny_bridge.original_model, tiny_tokens, 12)
    assert not torch.equal(ours, plain)
    assert torch.equal(ours, theirs)
    # a patch at one prompt position holds at every step (no KV cache to shift positions)
    with interventions.added(tiny_bridge, hooks.resid_pre(1), vector, positions=[2]):
        ours = generate_tokens(tiny_bridge, tiny_tokens, max_new_tokens=12)
        theirs = _hf_generate(tiny_bridge.original_model, tiny_tokens, 12, use_cache=False)
    assert torch.equal(ours, theirs)


def test_generation_under_a_zero_intervention_equals_plain_generation(tiny_bridge, smoke_world):
    prompts = [q.prompt for q in smoke_world.qa_split("heldout_train_template")[:8]]
    plain = generate(tiny_bridge, prompts, max_new_tokens=8)
    with interventions.added(tiny_bridge, hooks.resid_post(0), torch.ones(tiny_bridge.cfg.d_model), scale=0.0):
        steered = generate(tiny_bridge, prompts, max_new_tokens=8)
    assert steered == plain
    assert len(set(plain)) > 1  # the prompts are not all alike


def test_seeded_sampling_is_reproducible(tiny_bridge, tiny_tokens):
    a = generate_tokens(tiny_bridge, tiny_tokens, max_new_tokens=10, temperature=1.0, seed=3)
    b = generate_tokens(tiny_bridge, tiny_tokens, max_new_tokens=10, temperature=1.0, seed=3)
    c = generate_tokens(tiny_bridge, tiny_tokens, max_new_tokens=10, temperature=1.0, seed=4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_stop_token_ends_each_continuation(tiny_bridge, tiny_tokens):
    first = generate_tokens(tiny_bridge, tiny_tokens, max_new_tokens=6)
    stop = int(first[0, 2])  # row 0 emits this token at step 3 (or earlier)
    out = generate_tokens(tiny_bridge, tiny_tokens, max_new_tokens=6, stop_token_id=stop)
    k = int((first[0] == stop).nonzero()[0])
    assert torch.equal(out[0, :k + 1], first[0, :k + 1])
    assert (out[0, k:] == stop).all()


def test_generation_refuses_prompts_longer_than_the_context(tiny_bridge):
    with pytest.raises(ValueError, match="context"):
        generate_tokens(tiny_bridge, torch.zeros(1, tiny_bridge.cfg.n_ctx, dtype=torch.long), max_new_tokens=1)


def test_generation_stops_at_the_period_that_ends_a_sentence(tiny_bridge, smoke_world):
    """The word-level tokenizer puts a space before any text it encodes, so ``"."`` alone is ``" ."``, no token of the
    vocabulary (the unknown token); the period to stop at is the one that ends a sentence ("... Paris.")."""
    tok = tiny_bridge.tokenizer
    sentence = next(t for t in smoke_world.all_texts() if t.endswith("."))
    period = tok(sentence, add_special_tokens=False).input_ids[-1]
    assert tok.decode([period]) == "." and tok(".", add_special_tokens=False).input_ids == [tok.unk_token_id]
    prompts = [q.prompt for q in smoke_world.qa_split("heldout_train_template")[:3]]
    push = 100 * tiny_bridge.W_U[:, period].detach()  # makes the period the likeliest next token everywhere
    with interventions.added(tiny_bridge, hooks.resid_post(tiny_bridge.cfg.n_layers - 1), push):
        assert generate(tiny_bridge, prompts, max_new_tokens=6) == ["......"] * 3
        assert generate(tiny_bridge, prompts, max_new_tokens=6, stop_at=".") == ["."] * 3
    with pytest.raises(ValueError, match="one token of the vocabulary"):
        generate(tiny_bridge, prompts, max_new_tokens=2, stop_at="qqzx")  # unknown: it could never stop
