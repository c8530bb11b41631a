import matplotlib.pyplot as plt
import pytest
import torch

from workbench import viz


def test_circuitsvis_renders_with_bundled_javascript_only():
    html = viz.attention_patterns(["a", "b", "c"], torch.rand(2, 3, 3)).html
    assert "<script" in html and len(html) > 100_000  # the bundle is inlined
    assert "unpkg.com" not in html and "cdn" not in html.lower()[:2000]
    assert "<script" in viz.colored_tokens(["x", "y"], [0.1, 0.9])._repr_html_()


def test_attention_pattern_shape_is_checked():
    with pytest.raises(ValueError, match="pattern must be"):
        viz.attention_patterns(["a", "b"], torch.rand(2, 3, 3))


def test_figures_need_titles_and_axis_labels(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    with pytest.raises(ValueError, match="label"):
        viz.save_figure(fig, "bad", tmp_path)
    ax.set(title="t", xlabel="x", ylabel="y")
    assert viz.save_figure(fig, "good", tmp_path).exists()
    plt.close(fig)
