"""Helpers for notebooks that teach: a first cell that keeps executed outputs clean, and notes whose numbers
come from the results.

``notebook_setup()`` is the first call of every numbered notebook. It hides warnings the libraries under us emit
about their own internals (a learner can do nothing about them), keeps their logging to errors, shows figures as
PNGs, and, in headless runs (``WORKBENCH_HEADLESS=1``, set by ``workbench reproduce``), turns progress bars off so
an executed notebook holds results, not bars. ``notice(...)`` writes the "what to notice" note after a figure with
its numbers formatted from the results, so the prose never goes stale.
"""

from __future__ import annotations

import functools
import logging
import os
import string
import warnings

from IPython.display import Markdown, display

HEADLESS_ENV = "WORKBENCH_HEADLESS"

NOISY_LIBRARIES = ("transformers", "transformer_lens", "sae_lens", "huggingface_hub", "accelerate", "datasets",
                   "matplotlib.font_manager")
"""Libraries whose deprecation notices and logging are hidden: they are about their internals, not our code."""

NOISY_MODULES = r"(transformers|transformer_lens|sae_lens|huggingface_hub|accelerate|datasets|torch)(\.|$)"
"""Modules a deprecation warning is attributed to when it is about a library's internals (e.g. SAELens importing
``transformer_lens.utils``, which TransformerLens 3 deprecates)."""

NOISY_MESSAGES = (
    r"Hook alias '.*' -> '.*' on .* did not resolve",  # TransformerLens, bridge construction
    r"\d+ block hook alias\(es\) did not resolve",  # TransformerLens, bridge construction
    r"Backward hooks on hook_scale/hook_normalized require grad-connected",  # TransformerLens LayerNorm fallback
    r"A forward hook edited hook_scale/hook_normalized on the native-autograd path",  # same, forward edits
    r"`torch_dtype` is deprecated",  # transformers 5, raised by libraries that still pass torch_dtype
    r"TypedStorage is deprecated",  # torch, from safetensors/transformers loading
)
"""Messages (regular expressions matched at the start) of UserWarnings about library internals that a bridge
emits while loading or hooking a model; the numerics they mention differ only at float rounding."""


def is_headless() -> bool:
    """True in a papermill run started by ``workbench reproduce`` (``WORKBENCH_HEADLESS=1``)."""
    return os.environ.get(HEADLESS_ENV, "") not in ("", "0", "false", "False")


def notebook_setup(headless: bool | None = None) -> None:
    """Quiet, reproducible notebook output: library deprecation notices and known internal UserWarnings hidden
    (by module and message; every other warning still shows), logging of transformers, TransformerLens and SAELens
    at ERROR, inline figures as PNG, and when ``headless`` (default: ``WORKBENCH_HEADLESS=1``) no progress bars.
    Safe to call more than once."""
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category, module=NOISY_MODULES)
    for message in NOISY_MESSAGES:
        warnings.filterwarnings("ignore", message=message, category=UserWarning)
    for name in NOISY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.ERROR)
    _quiet_transformers_logging()
    _png_figures()
    if is_headless() if headless is None else headless:
        disable_progress_bars()


def _quiet_transformers_logging() -> None:
    """transformers sets its own root logger's level from ``TRANSFORMERS_VERBOSITY``; override it to errors."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.set_verbosity_error()


def _png_figures() -> None:
    """Inline figures as PNG (the format ``viz.save_figure`` writes and the HTML export embeds)."""
    from IPython import get_ipython

    if get_ipython() is None:
        return
    from matplotlib_inline.backend_inline import set_matplotlib_formats

    set_matplotlib_formats("png")


def disable_progress_bars() -> None:
    """No tqdm bars for the rest of the session, including notebook (widget) bars and bars created with an
    explicit ``disable=False``, which ``TQDM_DISABLE=1`` does not reach; also transformers' and the hub's bars."""
    os.environ["TQDM_DISABLE"] = "1"
    import tqdm.std

    init = tqdm.std.tqdm.__init__
    if not getattr(init, "_workbench_disabled", False):

        @functools.wraps(init)
        def __init__(self, *args, **kwargs):  # noqa: N807
            kwargs["disable"] = True
            init(self, *args, **kwargs)

        __init__._workbench_disabled = True
        tqdm.std.tqdm.__init__ = __init__
    try:
        from huggingface_hub.utils import disable_progress_bars as hub_disable
        from transformers.utils.logging import disable_progress_bar as hf_disable
    except ImportError:
        return
    hub_disable()
    hf_disable()


def _field_names(text: str) -> list[str]:
    """The value names ``text``'s placeholders use, in order (``{qa:.2f}`` and ``{m[qa]}`` name ``qa`` and ``m``)."""
    names = []
    for _, field, _, _ in string.Formatter().parse(text):
        if field is None:
            continue
        root = field.split(".", 1)[0].split("[", 1)[0]
        if root == "" or root.isdigit():
            raise ValueError(f"notice placeholders must be named, e.g. {{qa:.2f}}; got {{{field}}} in {text!r}")
        names.append(root)
    return names


def notice(text: str, **values) -> Markdown:
    """Show ``text`` as Markdown with its placeholders formatted from ``values`` (``str.format``:
    ``notice("QA is **{qa:.2f}**", qa=metrics["qa"])``), and return it. The note for a figure or table, whose
    numbers then come from the results, never typed in. The returned object does not show a second time when it
    is the last expression of a cell."""
    missing = [name for name in dict.fromkeys(_field_names(text)) if name not in values]
    if missing:
        raise ValueError(f"notice text has placeholders {missing} without a value; pass them as keywords "
                       f"(given: {sorted(values)}), e.g. notice(text, {missing[0]}=...)")
    note = Notice(text.format(**values))
    from IPython import get_ipython

    if get_ipython() is not None:
        display(note)
    return note


class Notice(Markdown):
    """Markdown shown once: by ``notice()`` where it is made, not again as the value of the cell."""

    _shown = False

    def _ipython_display_(self) -> None:
        if self._shown:
            return
        self._shown = True
        display(Markdown(self.data))
