"""The workshop checks pass on correct solutions (written here, and the notebooks' own once they exist) and fail on
each planted common mistake with the message that names it; an unfilled stub's NotImplementedError propagates."""

from __future__ import annotations

import pytest
import torch

from workbench import exercises, hooks, interventions
from workbench.paths import notebooks_dir
from workbench.workshop import solution_functions

# ------------------------------------------------------------------------------------- reference solutions


def patch_residual_at(model, tokens, counterfactual_cache, layer, position):
    hook = hooks.resid_pre(layer)
    with interventions.patched(model, hook, counterfactual_cache[hook], positions=[position]):
        return model(tokens)


def logit_difference(logits, answer_id, foil_id):
    rows = torch.arange(logits.shape[0])
    return logits[rows, -1, answer_id] - logits[rows, -1, foil_id]


def sae_encode(x, W_enc, b_enc, b_dec):
    return torch.relu((x - b_dec) @ W_enc + b_enc)


def explained_variance(x, x_hat):
    return (1 - ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()).item()


def test_checks_pass_on_correct_solutions(tiny_bridge, capsys):
    exercises.check_patch_residual_at(patch_residual_at, tiny_bridge)
    exercises.check_logit_difference(logit_difference)
    exercises.check_sae_encode(sae_encode)
    exercises.check_explained_variance(explained_variance)
    out = capsys.readouterr().out
    for name in ("patch_residual_at", "logit_difference", "sae_encode", "explained_variance"):
        assert f"✓ {name} passed" in out


def test_checks_accept_equivalent_forms(tiny_bridge):
    """A gather instead of fancy indexing, a float64 tensor instead of a float: still correct."""
    def gathered(logits, answer_id, foil_id):
        last = logits[:, -1]
        ids = torch.stack([torch.as_tensor(answer_id).expand(len(last)), torch.as_tensor(foil_id).expand(len(last))])
        picked = last.gather(1, ids.T)
        return picked[:, 0] - picked[:, 1]

    exercises.check_logit_difference(gathered)
    exercises.check_explained_variance(lambda x, x_hat: torch.tensor(explained_variance(x, x_hat), dtype=torch.float64))


def test_an_unfilled_stub_raises_not_implemented(tiny_bridge):
    def stub(*args):
        raise NotImplementedError("Your code here")

    for check in (exercises.check_logit_difference, exercises.check_sae_encode, exercises.check_explained_variance):
        with pytest.raises(NotImplementedError):
            check(stub)
    with pytest.raises(NotImplementedError):
        exercises.check_patch_residual_at(stub, tiny_bridge)


# ------------------------------------------------------------------------------------- planted mistakes: 00


def patch_every_position(model, tokens, counterfactual_cache, layer, position):
    hook = hooks.resid_pre(layer)
    with interventions.patched(model, hook, counterfactual_cache[hook]):
        return model(tokens)


def patch_resid_post(model, tokens, counterfactual_cache, layer, position):
    hook = hooks.resid_post(layer)
    with interventions.patched(model, hook, counterfactual_cache[hook], positions=[position]):
        return model(tokens)


def patch_next_layer(model, tokens, counterfactual_cache, layer, position):
    hook = hooks.resid_pre((layer + 1) % model.cfg.n_layers)
    with interventions.patched(model, hook, counterfactual_cache[hook], positions=[position]):
        return model(tokens)


def return_clean_logits(model, tokens, counterfactual_cache, layer, position):
    return model(tokens)


def run_outside_the_block(model, tokens, counterfactual_cache, layer, position):
    hook = hooks.resid_pre(layer)
    with interventions.patched(model, hook, counterfactual_cache[hook], positions=[position]):
        pass
    return model(tokens)


def patch_first_position(model, tokens, counterfactual_cache, layer, position):
    hook = hooks.resid_pre(layer)
    with interventions.patched(model, hook, counterfactual_cache[hook], positions=[0]):
        return model(tokens)


def leave_a_hook_attached(model, tokens, counterfactual_cache, layer, position):
    name = hooks.resid_pre(layer)

    def patch(act, hook):
        act[:, position] = counterfactual_cache[name][:, position]
        return act

    model.add_hook(name, patch)
    return model(tokens)


@pytest.mark.parametrize("mistake, message", [
    (patch_every_position, r"did you patch every position instead of one\? pass positions=\[position\]"),
    (patch_resid_post, r"wrong hook or layer\? your logits match patching blocks\.\d\.hook_resid_post"),
    (patch_next_layer, r"wrong hook or layer\? your logits match patching blocks\.\d\.hook_resid_(pre|post)"),
    (return_clean_logits, r"patch had no effect: did the hook run inside the `with` block\?"),
    (run_outside_the_block, r"hook never ran\. Did the forward pass run inside the `with"),
    (patch_first_position, r"you patched position 0, not position \d"),
    (leave_a_hook_attached, r"left a hook attached"),
], ids=lambda v: getattr(v, "__name__", ""))
def test_patching_mistakes_are_named(tiny_bridge, mistake, message):
    with pytest.raises(AssertionError, match=message):
        exercises.check_patch_residual_at(mistake, tiny_bridge)
    assert not any(hp.fwd_hooks for hp in tiny_bridge.hook_dict.values()), "a check left a hook on the model"


# ------------------------------------------------------------------------------------- planted mistakes: logit diff


def _ids(logits, answer_id, foil_id):
    n = logits.shape[0]
    return torch.arange(n), torch.as_tensor(answer_id).expand(n), torch.as_tensor(foil_id).expand(n)


def foil_minus_answer(logits, answer_id, foil_id):
    return -logit_difference(logits, answer_id, foil_id)


def first_position(logits, answer_id, foil_id):
    rows, a, f = _ids(logits, answer_id, foil_id)
    return logits[rows, 0, a] - logits[rows, 0, f]


def mean_over_batch(logits, answer_id, foil_id):
    return logit_difference(logits, answer_id, foil_id).mean()


def index_with_the_id_tensor(logits, answer_id, foil_id):
    return logits[:, -1, answer_id] - logits[:, -1, foil_id]


@pytest.mark.parametrize("mistake, message", [
    (foil_minus_answer, "answer minus foil, not foil minus answer"),
    (first_position, r"first position instead of the last"),
    (mean_over_batch, r"returned the mean over the batch; return one value per row"),
    (index_with_the_id_tensor, r"\[batch, batch\] matrix"),
], ids=lambda v: getattr(v, "__name__", ""))
def test_logit_difference_mistakes_are_named(mistake, message):
    with pytest.raises(AssertionError, match=message):
        exercises.check_logit_difference(mistake)


# ------------------------------------------------------------------------------------- planted mistakes: 03


@pytest.mark.parametrize("mistake, message", [
    (lambda x, W, b_enc, b_dec: torch.relu(x @ W + b_enc), "forget to subtract b_dec"),
    (lambda x, W, b_enc, b_dec: (x - b_dec) @ W + b_enc, "forget the ReLU"),
    (lambda x, W, b_enc, b_dec: torch.relu((x - b_dec + b_enc) @ W), "add b_enc before the matmul"),
    (lambda x, W, b_enc, b_dec: torch.relu((x + b_dec) @ W + b_enc), "subtract b_dec, don't add it"),
    (lambda x, W, b_enc, b_dec: torch.relu((x - b_dec) @ W.T + b_enc), r"not x @ W_enc\.T"),
    (lambda x, W, b_enc, b_dec: torch.relu((x - b_dec) @ W + b_enc) * 1.01, "differs from the reference by up to"),
], ids=["no b_dec", "no relu", "b_enc before matmul", "adds b_dec", "transposed W_enc", "other"])
def test_sae_encode_mistakes_are_named(mistake, message):
    with pytest.raises(AssertionError, match=message):
        exercises.check_sae_encode(mistake)


def _sse(x, x_hat):
    return ((x - x_hat) ** 2).sum()


@pytest.mark.parametrize("mistake, message", [
    (lambda x, x_hat: float(1 - _sse(x, x_hat) / (x**2).sum()), "forget to centre the denominator"),
    (lambda x, x_hat: float((1 - ((x - x_hat) ** 2).sum(0) / ((x - x.mean(0)) ** 2).sum(0)).mean()),
     "averaged per-dimension ratios; pool instead"),
    (lambda x, x_hat: float(_sse(x, x_hat) / ((x - x.mean(0)) ** 2).sum()), r"fraction of variance unexplained"),
    (lambda x, x_hat: 1 - ((x - x_hat) ** 2).sum(0) / ((x - x.mean(0)) ** 2).sum(0), "one explained variance per "
     "dimension"),
], ids=["uncentred denominator", "mean of per-dim ratios", "fvu", "per-dim vector"])
def test_explained_variance_mistakes_are_named(mistake, message):
    with pytest.raises(AssertionError, match=message):
        exercises.check_explained_variance(mistake)


# ------------------------------------------------------------------------------------- the notebooks' own solutions

NOTEBOOK_SOLUTIONS = [
    ("00_quickstart.ipynb", "patch_residual_at", lambda fn, model: exercises.check_patch_residual_at(fn, model)),
    ("00_quickstart.ipynb", "logit_difference", lambda fn, model: exercises.check_logit_difference(fn)),
    ("03_sae_and_gated_sae.ipynb", "sae_encode", lambda fn, model: exercises.check_sae_encode(fn)),
    ("03_sae_and_gated_sae.ipynb", "explained_variance", lambda fn, model: exercises.check_explained_variance(fn)),
]


@pytest.mark.parametrize("notebook, name, check", NOTEBOOK_SOLUTIONS, ids=[n for _, n, _ in NOTEBOOK_SOLUTIONS])
def test_the_notebook_solution_passes_its_check(tiny_bridge, notebook, name, check, capsys):
    functions = solution_functions(notebooks_dir() / notebook)
    if name not in functions:
        pytest.skip(f"{notebook} has no cell tagged 'solution' defining {name} yet (being written); this test runs "
                    "once it does")
    check(functions[name], tiny_bridge)
    assert f"✓ {name} passed" in capsys.readouterr().out
