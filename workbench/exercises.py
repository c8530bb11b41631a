"""Checks for the workshop edition's exercises: each takes the learner's function, runs it on small deterministic
cases against a reference computed independently, and on failure names the likely mistake.

Why name the mistake: "wrong answer, max error 0.53" sends a learner back to stare at their code; "did you patch
every position instead of one?" sends them to the line to change (ARENA's checks work this way). Each check
computes the outputs of the common mistakes only when the learner's output is wrong, and says which one it matches;
otherwise it reports the largest error and where it is.

A check returns None and prints one line when the function passes (these run in notebook cells, so ``print`` is the
output the learner reads). It raises ``AssertionError`` with the message otherwise; errors raised by the learner's
function itself (``NotImplementedError`` from an unfilled stub, a typo) propagate unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from workbench import hooks, interventions

Mistake = tuple[str, Callable[[], Tensor]]
"""A likely mistake: the message that names it, and a function computing what that mistake returns."""

ATOL = 1e-4
"""Absolute tolerance between the learner's output and the reference (float32 on CPU; reductions reorder sums)."""


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _same(a: Tensor, b: Tensor, atol: float = ATOL) -> bool:
    return a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=atol, rtol=1e-4)


def _as_tensor(name: str, result: object, case: str) -> Tensor:
    if not isinstance(result, Tensor):
        raise AssertionError(f"{name}{case} returned a {type(result).__name__}; return a torch.Tensor")
    return result.detach().cpu()


def _verdict(name: str, case: str, got: Tensor, expected: Tensor, mistakes: Sequence[Mistake] = ()) -> None:
    """Raise naming the first mistake whose output ``got`` matches; else a generic message with the largest error."""
    if _same(got, expected):
        return
    for message, compute in mistakes:
        if _same(got, compute()):
            raise AssertionError(f"{name}{case}: {message}")
    if got.shape != expected.shape:
        raise AssertionError(f"{name}{case} returned shape {tuple(got.shape)}; expected {tuple(expected.shape)}")
    error = (got.float() - expected.float()).abs()
    where = tuple(int(i) for i in torch.unravel_index(error.argmax(), error.shape)) if error.dim() else ()
    raise AssertionError(f"{name}{case} differs from the reference by up to {error.max().item():.4g} (at index "
                         f"{where}: got {got.flatten()[error.argmax()].item():.4g}, expected "
                         f"{expected.flatten()[error.argmax()].item():.4g}); none of the usual mistakes matches, so "
                         "compare your function with the formula in its docstring line by line")


def _passed(name: str) -> None:
    print(f"✓ {name} passed")


# ---------------------------------------------------------------------------------------------- notebook 00


def _attached_hooks(model: torch.nn.Module) -> int:
    return sum(len(getattr(hp, "fwd_hooks", ())) for hp in model.hook_dict.values())


def check_patch_residual_at(fn: Callable, model: torch.nn.Module) -> None:
    """Check ``fn(model, tokens, counterfactual_cache, layer, position)``: the logits of ``tokens`` with
    ``blocks.{layer}.hook_resid_pre`` replaced at ``position`` only by the counterfactual run's activation there.

    Runs random token ids from the model's vocabulary against a counterfactual cache of other random ids, at the
    last layer and a middle position, then at layer 0 and the last position. The reference is
    ``interventions.patched`` at that one position.
    """
    batch, n_pos = 2, 6
    gen = _generator(0)
    device = next(model.parameters()).device
    tokens = torch.randint(0, model.cfg.d_vocab, (batch, n_pos), generator=gen).to(device)
    cf_tokens = torch.randint(0, model.cfg.d_vocab, (batch, n_pos), generator=gen).to(device)
    with torch.no_grad():
        _, cache = model.run_with_cache(cf_tokens)
    for layer, position in [(model.cfg.n_layers - 1, n_pos // 2), (0, n_pos - 1)]:
        _patch_residual_case(fn, model, tokens, cache, layer, position)
    _passed("patch_residual_at")


def _patch_residual_case(fn: Callable, model: torch.nn.Module, tokens: Tensor, cache, layer: int,
                         position: int) -> None:
    name, n_pos = "patch_residual_at", tokens.shape[1]
    case = f"(model, tokens {list(tokens.shape)}, counterfactual_cache, layer={layer}, position={position})"
    target = hooks.resid_pre(layer)

    def run_patched(hook_name: str, positions: interventions.Positions) -> Tensor:
        with torch.no_grad(), interventions.patched(model, hook_name, cache[hook_name], positions=positions):
            return model(tokens).cpu()

    def clean() -> Tensor:
        with torch.no_grad():
            return model(tokens).cpu()

    before = _attached_hooks(model)
    try:
        with torch.no_grad():
            result = fn(model, tokens, cache, layer, position)
    except interventions.HookNeverFiredError as err:
        raise AssertionError(f"{name}{case}: the patch's hook never ran. Did the forward pass run inside the "
                             "`with interventions.patched(...)` block? Call the model inside it.") from err
    finally:
        left_attached = _attached_hooks(model) > before
        if left_attached:  # else every later run of the model, and the reference below, would be patched too
            model.reset_hooks()
    if left_attached:
        raise AssertionError(f"{name}{case} left a hook attached to the model after returning, so every later run "
                             "is patched too. Add hooks only with `with interventions.patched(...)` (or "
                             "`model.hooks(...)`), which removes them on exit. (Removed them for you.)")
    got = _as_tensor(name, result, case)
    wrong_hooks = [hooks.resid_post(layer), hooks.resid_mid(layer)]
    wrong_hooks += [hooks.resid_pre(other) for other in range(model.cfg.n_layers) if other != layer]
    mistakes: list[Mistake] = [
        ("your logits equal the clean run's, so the patch had no effect: did the hook run inside the `with` block? "
         "Call the model inside `with interventions.patched(...)` and return those logits.", clean),
        ("did you patch every position instead of one? pass positions=[position] to interventions.patched "
         f"(patch only position {position}).", lambda: run_patched(target, None)),
        (f"did you patch positions {position} onwards instead of only {position}? pass positions=[position].",
         lambda: run_patched(target, slice(position, None))),
    ]
    mistakes += [(f"you patched position {other}, not position {position}: pass positions=[position].",
                  lambda other=other: run_patched(target, [other])) for other in range(n_pos) if other != position]
    mistakes += [(f"did you patch the wrong hook or layer? your logits match patching {wrong} instead of {target} "
                  "(hooks.resid_pre(layer): the residual stream entering block `layer`).",
                  lambda wrong=wrong: run_patched(wrong, [position])) for wrong in wrong_hooks]
    _verdict(name, case, got, run_patched(target, [position]), mistakes)


def _reference_logit_difference(logits: Tensor, answer_id: int | Tensor, foil_id: int | Tensor,
                                 pos: int = -1) -> Tensor:
    rows = torch.arange(logits.shape[0])
    answer = torch.as_tensor(answer_id).expand(logits.shape[0])
    foil = torch.as_tensor(foil_id).expand(logits.shape[0])
    return logits[rows, pos, answer] - logits[rows, pos, foil]


def check_logit_difference(fn: Callable) -> None:
    """Check ``fn(logits, answer_id, foil_id)``: the final-position logit of the answer minus the foil's, one value
    per row ``[batch]``, with ids given as ints or as ``[batch]`` tensors."""
    logits: Float[Tensor, "batch pos d_vocab"] = torch.randn(3, 5, 11, generator=_generator(1)) * 3
    _logit_difference_case(fn, logits, 3, 8)
    _logit_difference_case(fn, logits, torch.tensor([2, 7, 4]), torch.tensor([5, 1, 9]))
    _passed("logit_difference")


def _logit_difference_case(fn: Callable, logits: Tensor, answer_id: int | Tensor, foil_id: int | Tensor) -> None:
    name = "logit_difference"
    kind = "ints" if isinstance(answer_id, int) else "[batch] tensors"
    case = f"(logits {list(logits.shape)}, answer_id, foil_id as {kind})"
    got = _as_tensor(name, fn(logits.clone(), answer_id, foil_id), case)
    expected = _reference_logit_difference(logits, answer_id, foil_id)
    mistakes: list[Mistake] = [
        ("wrong sign: the logit difference is answer minus foil, not foil minus answer.", lambda: -expected),
        ("did you read the first position instead of the last? the prediction is at the final position: "
         "logits[:, -1].", lambda: _reference_logit_difference(logits, answer_id, foil_id, pos=0)),
        ("you returned the mean over the batch; return one value per row, shape [batch].", expected.mean),
        ("you returned the sum over the batch; return one value per row, shape [batch].", expected.sum),
    ]
    if isinstance(answer_id, Tensor):
        mistakes.append((
            "indexing logits[:, -1, answer_id] with [batch] tensors of ids gives a [batch, batch] matrix (every row's "
            "logit for every row's id); take each row's own id: logits[torch.arange(batch), -1, answer_id], or gather.",
            lambda: logits[:, -1, answer_id] - logits[:, -1, foil_id]))
    _verdict(name, case, got, expected, mistakes)


# ---------------------------------------------------------------------------------------------- notebook 03


def check_sae_encode(fn: Callable) -> None:
    """Check ``fn(x, W_enc, b_enc, b_dec)`` = ``ReLU((x - b_dec) @ W_enc + b_enc)``.

    The first case is square (``d_in == d_sae``), so that a bias added in the wrong space or a transposed
    ``W_enc`` still runs and can be named; the second has ``d_sae > d_in`` as a real SAE does.
    """
    gen = _generator(2)
    for batch, d_in, d_sae in [(4, 6, 6), (5, 6, 10)]:
        x = torch.randn(batch, d_in, generator=gen)
        W_enc = torch.randn(d_in, d_sae, generator=gen) / d_in**0.5
        b_enc, b_dec = torch.randn(d_sae, generator=gen) * 0.5, torch.randn(d_in, generator=gen)
        _sae_encode_case(fn, x, W_enc, b_enc, b_dec)
    _passed("sae_encode")


def _sae_encode_case(fn: Callable, x: Float[Tensor, "batch d_in"], W_enc: Float[Tensor, "d_in d_sae"],
                     b_enc: Float[Tensor, " d_sae"], b_dec: Float[Tensor, " d_in"]) -> None:
    name = "sae_encode"
    (batch, d_in), d_sae = x.shape, W_enc.shape[1]
    case = f"(x [{batch}, {d_in}], W_enc [{d_in}, {d_sae}], b_enc [{d_sae}], b_dec [{d_in}])"
    try:
        result = fn(x.clone(), W_enc.clone(), b_enc.clone(), b_dec.clone())
    except RuntimeError as err:
        if isinstance(err, NotImplementedError) or d_in == d_sae:
            raise
        raise AssertionError(f"{name}{case} raised {type(err).__name__}: {err}. Check which space each bias lives "
                             "in: b_dec [d_in] is subtracted from x before the matmul, b_enc [d_sae] is added after "
                             "it.") from err
    mistakes: list[Mistake] = [
        ("did you forget to subtract b_dec? the encoder reads x - b_dec (the decoder bias centres the input).",
         lambda: torch.relu(x @ W_enc + b_enc)),
        ("did you forget the ReLU? codes are non-negative: ReLU((x - b_dec) @ W_enc + b_enc).",
         lambda: (x - b_dec) @ W_enc + b_enc),
        ("subtract b_dec, don't add it: ReLU((x - b_dec) @ W_enc + b_enc).",
         lambda: torch.relu((x + b_dec) @ W_enc + b_enc)),
        ("did you forget b_enc? add it after the matmul: ReLU((x - b_dec) @ W_enc + b_enc).",
         lambda: torch.relu((x - b_dec) @ W_enc)),
    ]
    if d_in == d_sae:
        mistakes += [
            ("did you add b_enc before the matmul? b_enc lives in the d_sae space, after W_enc: "
             "ReLU((x - b_dec) @ W_enc + b_enc).", lambda: torch.relu((x - b_dec + b_enc) @ W_enc)),
            ("W_enc is [d_in, d_sae]: multiply x @ W_enc, not x @ W_enc.T.",
             lambda: torch.relu((x - b_dec) @ W_enc.T + b_enc)),
        ]
    _verdict(name, case, _as_tensor(name, result, case), torch.relu((x - b_dec) @ W_enc + b_enc), mistakes)


def check_explained_variance(fn: Callable) -> None:
    """Check ``fn(x, x_hat)`` = ``1 - sum((x - x_hat)^2) / sum((x - x.mean(0))^2)``, pooled over every dimension,
    returned as one number.

    The main case has dimensions of different scales, a non-zero mean and per-dimension errors plus an offset, so
    that each usual mistake gives a different number; then a perfect reconstruction (EV 1) and the mean (EV 0).
    """
    gen = _generator(3)
    n, d = 20, 5
    x = torch.randn(n, d, generator=gen) * torch.tensor([0.5, 1.0, 2.0, 4.0, 0.2]) + torch.tensor([3.0, -1, 0.5, 2, 1])
    noisy = x + torch.randn(n, d, generator=gen) * torch.tensor([0.4, 0.1, 0.5, 0.3, 0.1]) + 0.2
    _explained_variance_case(fn, x, noisy, "a noisy reconstruction")
    _explained_variance_case(fn, x, x.clone(), "x itself")
    _explained_variance_case(fn, x, x.mean(0, keepdim=True).expand(n, d).clone(), "the mean of x")
    _passed("explained_variance")


def _explained_variance_case(fn: Callable, x: Float[Tensor, "n d"], x_hat: Float[Tensor, "n d"], label: str) -> None:
    name = "explained_variance"
    case = f"(x {list(x.shape)}, x_hat = {label})"
    result = fn(x.clone(), x_hat.clone())
    if isinstance(result, Tensor) and result.numel() != 1:
        if _same(result.detach().cpu().flatten(), _per_dimension_ev(x, x_hat)):
            raise AssertionError(f"{name}{case}: you returned one explained variance per dimension; pool the squared "
                                 "errors and the variance over all dimensions and return one number.")
        raise AssertionError(f"{name}{case} returned a tensor of shape {tuple(result.shape)}; return one number (a "
                             "float), pooled over all dimensions.")
    try:
        value = float(result)
    except (TypeError, ValueError) as err:
        raise AssertionError(f"{name}{case} returned {result!r}; return one number (a float)") from err
    sse, total = ((x - x_hat) ** 2).sum(), ((x - x.mean(0)) ** 2).sum()
    residual = x - x_hat
    mistakes: list[Mistake] = [
        ("did you forget to centre the denominator? divide by sum((x - x.mean(0))^2), the variance of x, not "
         "sum(x^2).", lambda: 1 - sse / (x**2).sum()),
        ("you averaged per-dimension ratios; pool instead: one sum of squared errors over one total variance, both "
         "summed over every dimension.", lambda: _per_dimension_ev(x, x_hat).mean()),
        ("you returned the fraction of variance unexplained (FVU = 1 - EV); return 1 - FVU.", lambda: sse / total),
        ("did you centre the residual too? a constant offset in x_hat is an error: use sum((x - x_hat)^2), not the "
         "variance of x - x_hat.", lambda: 1 - ((residual - residual.mean(0)) ** 2).sum() / total),
    ]
    _verdict(name, case, torch.tensor(value), 1 - sse / total, mistakes)


def _per_dimension_ev(x: Tensor, x_hat: Tensor) -> Tensor:
    """One explained variance per dimension ``[d]``: the usual mistake of averaging ratios instead of pooling."""
    return 1 - ((x - x_hat) ** 2).sum(0) / ((x - x.mean(0)) ** 2).sum(0)
