import pytest
import torch
from torch import nn

from workbench import hooks, interventions
from workbench.dictionaries import baselines, metrics


class _Zero(nn.Module):
    """A dictionary whose reconstruction is always zero: splicing it in is zero-ablation."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.W_enc = nn.Parameter(torch.zeros(d, 1))
        self.W_dec = nn.Parameter(torch.zeros(1, d))

    def encode(self, x):
        return x @ self.W_enc

    def decode(self, codes):
        return codes @ self.W_dec


@pytest.fixture()
def packed(tiny_tokens):
    """Rows of two documents each, as evaluation rows are packed: a BOS at position 0 and mid-row."""
    rows = torch.cat([tiny_tokens, tiny_tokens.roll(1, dims=0)], dim=1)
    assert (rows == rows[0, 0]).sum(1).min() >= 2
    return rows


def _loss_with(model, tokens, hook, value, mask):
    with interventions.patched(model, hook, value, positions=mask):
        logits = model(tokens)
    return -logits[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None]).mean().item()


def test_splice_and_ablations_touch_no_bos_position_of_packed_rows(tiny_bridge, packed):
    hook, d = hooks.resid_pre(1), tiny_bridge.cfg.d_model
    not_bos = packed != tiny_bridge.tokenizer.bos_token_id
    r = metrics.ce_loss_recovered(tiny_bridge, _Zero(d), hook, packed)
    zero_at_non_bos = _loss_with(tiny_bridge, packed, hook, torch.zeros(d), not_bos)
    zero_after_first = _loss_with(tiny_bridge, packed, hook, torch.zeros(d), slice(1, None))
    assert abs(zero_at_non_bos - zero_after_first) > 1e-3  # the mid-row BOS matters, so the test can tell
    assert r["ce_loss_spliced"] == pytest.approx(zero_at_non_bos, abs=1e-6)
    assert r["ce_loss_zero_ablated"] == pytest.approx(zero_at_non_bos, abs=1e-6)
    assert r["ce_loss_recovered_zero"] == pytest.approx(0.0, abs=1e-6)
    _, cache = tiny_bridge.run_with_cache(packed, names_filter=[hook])
    mean = cache[hook][not_bos].mean(0)
    assert r["ce_loss_mean_ablated"] == pytest.approx(_loss_with(tiny_bridge, packed, hook, mean, not_bos), abs=1e-6)


def test_an_exact_dictionary_recovers_everything(tiny_bridge, packed):
    r = metrics.ce_loss_recovered(tiny_bridge, baselines.neuron_basis(torch.zeros(1, tiny_bridge.cfg.d_model)),
                                  hooks.resid_pre(1), packed)
    assert r["ce_loss_recovered_zero"] == pytest.approx(1.0, abs=1e-4)
    assert r["ce_loss_recovered_mean"] == pytest.approx(1.0, abs=1e-4)


def test_a_transcoder_replaces_the_mlp_output(tiny_bridge, packed):
    from sae_lens import Transcoder, TranscoderConfig

    d = tiny_bridge.cfg.d_model
    torch.manual_seed(0)
    tc = Transcoder(TranscoderConfig(d_in=d, d_sae=16, d_out=d, apply_b_dec_to_input=False))
    r = metrics.ce_loss_recovered(tiny_bridge, tc, hooks.mlp_in(0), packed, hook_out=hooks.mlp_out(0))
    not_bos = packed != tiny_bridge.tokenizer.bos_token_id
    _, cache = tiny_bridge.run_with_cache(packed, names_filter=[hooks.mlp_in(0)])
    with torch.no_grad():
        prediction = tc.decode(tc.encode(cache[hooks.mlp_in(0)]))
    assert r["ce_loss_spliced"] == pytest.approx(_loss_with(tiny_bridge, packed, hooks.mlp_out(0), prediction, not_bos),
                                                 abs=1e-5)
    assert r["ce_loss_zero_ablated"] == pytest.approx(_loss_with(tiny_bridge, packed, hooks.mlp_out(0),
                                                                 torch.zeros(d), not_bos), abs=1e-6)
