"""Offline HTML of the executed notebooks: ``workbench export`` turns ``runs/<scale>/*.ipynb`` into
self-contained pages in ``runs/<scale>/html/`` that a reader opens without a network or a Jupyter server.

nbconvert's JupyterLab template looks right but loads require.js, MathJax, mermaid and the widget manager from
CDNs; :data:`OFFLINE_TEMPLATE` keeps its look and drops those scripts. Figures are already base64 PNGs in the
outputs; ipywidgets outputs (progress bars) are replaced by their text fallback, since nothing would render them;
circuitsvis outputs are inline HTML with their JavaScript bundled (:class:`workbench.viz.OfflineHTML`) and stay.
Maths in markdown appears as its TeX source (MathJax would need the network).
"""

from __future__ import annotations

import copy
import logging
import re
from pathlib import Path

import nbformat

from workbench.paths import runs_dir

log = logging.getLogger(__name__)

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

OFFLINE_TEMPLATE_NAME = "workbench_offline.html.j2"
OFFLINE_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""
"""nbconvert's ``lab`` page without the scripts it would fetch from CDNs."""

_RESOURCE_PATTERNS = (
    re.compile(r"""\b(?:src|href|srcset|data|poster)\s*=\s*["']?\s*((?:https?:)?//[^"'\s>]+)""", re.IGNORECASE),
    re.compile(r"""\bimport\b[^;'"]*?["']((?:https?:)?//[^"']+)["']"""),
    re.compile(r"""\bimport\s*\(\s*["']((?:https?:)?//[^"']+)["']"""),
    re.compile(r"""@import\s+(?:url\()?\s*["']?((?:https?:)?//[^"')\s]+)""", re.IGNORECASE),
    re.compile(r"""url\(\s*["']?((?:https?:)?//[^"')\s]+)""", re.IGNORECASE),
    re.compile(r"""["']((?:https?:)?//[^"'\s]+\.(?:m?js|css)(?:\?[^"'\s]*)?)["']""", re.IGNORECASE),
)


def network_references(html: str) -> list[str]:
    """The URLs a browser would fetch when it opens ``html``: ``src``/``href`` attributes, ES module imports,
    CSS ``@import`` and ``url()``, and quoted ``.js``/``.css`` URLs (scripts that add a ``<script>`` tag themselves).
    Hyperlinks (``<a href>``) and URLs in prose, comments or string data are not counted."""
    found = [m.group(1) for pattern in _RESOURCE_PATTERNS for m in pattern.finditer(html)]
    return [url for url in dict.fromkeys(found) if not _is_hyperlink(html, url)]


def _is_hyperlink(html: str, url: str) -> bool:
    """A URL that only appears as the ``href`` of an ``<a>`` tag is a link a reader may follow, not a resource."""
    uses = [m.start() for m in re.finditer(re.escape(url), html)]
    return bool(uses) and all(re.search(r"<a\s[^>]*$", html[max(0, i - 2000):i], re.IGNORECASE) for i in uses)


def without_widget_views(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` whose ipywidgets outputs keep only their ``text/html`` or ``text/plain`` fallback (outputs
    with neither are dropped), and without the saved widget state, so the page needs no widget manager."""
    nb = copy.deepcopy(nb)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if WIDGET_VIEW in data:
                data.pop(WIDGET_VIEW)
                if not any(k in data for k in ("text/html", "text/plain")):
                    continue
            kept.append(output)
        cell.outputs = kept
    return nb


def _exporter():
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    return HTMLExporter(template_name="lab", template_file=OFFLINE_TEMPLATE_NAME,
                        extra_loaders=[DictLoader({OFFLINE_TEMPLATE_NAME: OFFLINE_TEMPLATE})])


def export_notebook(path: str | Path, out_dir: str | Path) -> Path:
    """Write the executed notebook at ``path`` as ``out_dir/<name>.html``, self-contained; returns its path.
    Logs a warning naming any network reference an output still carries (e.g. HTML that loads from a CDN)."""
    path, out_dir = Path(path), Path(out_dir)
    nb = without_widget_views(nbformat.read(path, as_version=4))
    html, _ = _exporter().from_notebook_node(nb, resources={"metadata": {"name": path.stem}})
    remote = network_references(html)
    if remote:
        log.warning("%s still references the network: %s", path.name, remote[:5])
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{path.stem}.html"
    out.write_text(html, encoding="utf-8")
    return out


def export_html(scale: str = "full", out_dir: str | Path | None = None, runs: str | Path | None = None) -> list[Path]:
    """Export every executed notebook in ``runs/<scale>/`` (or ``runs``) to ``runs/<scale>/html/`` (or ``out_dir``);
    returns the pages written, in notebook order."""
    source = Path(runs) if runs is not None else runs_dir() / scale
    notebooks = sorted(source.glob("*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"no executed notebooks in {source}: run `workbench reproduce --scale {scale}` "
                                "first (it writes them there), then `workbench export`")
    target = Path(out_dir) if out_dir is not None else source / "html"
    return [export_notebook(path, target) for path in notebooks]
