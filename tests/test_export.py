"""Offline HTML: an exported notebook carries its figures, keeps widget fallbacks, and loads nothing from the
network."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from workbench.export import WIDGET_VIEW, export_html, network_references

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"workbench-test-image" * 4).decode()


def _executed_notebook(path: Path) -> Path:
    """A notebook as papermill leaves it: a figure, a progress-bar widget with its text fallback, widget state,
    and a markdown cell with maths."""
    figure = new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure size 640x480 with 1 Axes>"})
    bar = new_output("display_data", data={WIDGET_VIEW: {"model_id": "abc", "version_major": 2, "version_minor": 0},
                                           "text/plain": "Loading weights: 100%|##########| 76/76"})
    nb = new_notebook(cells=[
        new_markdown_cell("# A figure\nThe loss $L = x^2$ falls."),
        new_code_cell("plt.plot([1, 2])", outputs=[figure], execution_count=1),
        new_code_cell("model = load_model()", outputs=[bar], execution_count=2),
    ])
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2,
                                                                              "version_minor": 0}}
    nbformat.write(nb, path)
    return path


def _remote_resources(html: str) -> list[str]:
    """http(s) URLs in src/href attributes and anywhere inside <script> or <link> tags (independent of
    ``network_references``, so the test does not trust the code it checks)."""
    attributes = re.findall(r"""(?:src|href)\s*=\s*["']?(https?://[^"'\s>]+)""", html, flags=re.IGNORECASE)
    tags = re.findall(r"<script\b[^>]*>.*?</script>|<link\b[^>]*>", html, flags=re.IGNORECASE | re.DOTALL)
    in_tags = [url for tag in tags for url in re.findall(r"https?://[^\s\"'<>)]+", tag)]
    return attributes + in_tags


def test_export_embeds_images_and_loads_nothing_from_the_network(tmp_path):
    runs = tmp_path / "runs" / "smoke"
    runs.mkdir(parents=True)
    _executed_notebook(runs / "00_example.ipynb")
    pages = export_html("smoke", runs=runs)
    assert pages == [runs / "html" / "00_example.html"]
    html = pages[0].read_text()
    assert PNG in html, "the figure's base64 PNG is not in the page"
    assert "Loading weights: 100%" in html, "the widget's text fallback was lost"
    assert WIDGET_VIEW not in html and "widget-state" not in html
    assert not _remote_resources(html), f"the page loads from the network: {_remote_resources(html)[:5]}"
    assert network_references(html) == []


def test_network_references_finds_what_nbconvert_would_load(tmp_path):
    from nbconvert import HTMLExporter

    nb = nbformat.read(_executed_notebook(tmp_path / "x.ipynb"), as_version=4)
    html, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    found = network_references(html)
    assert any("require" in u for u in found) and any("mathjax" in u for u in found), found
    assert any("html-manager" in u for u in found), f"the widget manager's script was missed: {found}"
    assert network_references('<a href="https://example.org/paper">paper</a>') == []


def test_export_without_executed_notebooks_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"workbench reproduce --scale smoke"):
        export_html("smoke", runs=tmp_path)
