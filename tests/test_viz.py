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


def _frontier_points():
    """Two architectures at two settings and three seeds, and PCA and ICA at the same two sizes (equal values)."""
    from workbench.analysis.frontier import SweepPoint

    points = []
    for arch, shift in [("standard", 0.0), ("gated", 0.05)]:
        for c, l0, ev in [(1, 32, 0.9 + shift), (2, 16, 0.8 + shift)]:
            points += [SweepPoint(arch, {"c": c}, {"l0": l0 * (1 + 0.1 * seed), "explained_variance": ev + 0.01 * seed,
                                                   "ce_loss_recovered_mean": ev}, seed=seed) for seed in range(3)]
    baselines = [SweepPoint(name, {"n_components": k}, {"l0": k, "explained_variance": ev, "ce_loss_recovered_mean": ev})
                 for k, ev in [(8, 0.5), (32, 0.86)] for name in ("PCA", "ICA")]
    return points, baselines


def test_the_frontier_draws_the_mean_over_seeds_with_each_seed_faint():
    points, baselines = _frontier_points()
    fig = viz.plot_frontiers(points, baselines, highlight=points[:1], highlight_label="saved")
    ev_panel, ce_panel = fig.axes
    lines = {line.get_label(): line for line in ev_panel.get_lines()}
    mean = lines["standard (mean of 3 seeds)"]
    assert list(mean.get_xdata()) == pytest.approx([16 * 1.1, 32 * 1.1])  # mean L0 of each setting over seeds
    assert list(mean.get_ydata()) == pytest.approx([0.81, 0.91])
    faint = [line for line in ev_panel.get_lines() if (line.get_alpha() or 1) < 1 and len(line.get_xdata())]
    assert sorted(len(line.get_xdata()) for line in faint) == [6, 6]  # every run of each architecture
    assert faint[0].get_color() == mean.get_color()
    assert lines["saved"].get_marker() == "*"
    for ax in fig.axes:
        assert ax.get_xscale() == "log" and ax.get_xlabel().startswith("L0") and ax.get_ylabel() and ax.get_title()
    assert ev_panel.get_ylabel() == "explained variance" and ce_panel.get_ylabel().startswith("CE loss recovered")
    plt.close(fig)


def test_the_frontier_draws_pca_as_a_line_and_ica_as_markers_on_it():
    points, baselines = _frontier_points()
    fig = viz.plot_frontiers(points[:1], baselines)
    for ax in fig.axes:
        lines = {line.get_label(): line for line in ax.get_lines()}
        pca, ica = lines["PCA"], next(v for k, v in lines.items() if k.startswith("ICA"))
        assert pca.get_linestyle() != "None" and pca.get_marker() in ("", "None")  # a line, no markers
        assert ica.get_linestyle() == "None" and ica.get_marker() == "x"  # markers, no line
        assert "PCA span" in ica.get_label()  # the legend says why they coincide
        assert ica.get_zorder() > pca.get_zorder() and ica.get_color() != pca.get_color()
        assert "standard" in lines and not any("seeds" in k for k in lines)  # one seed: no mean, no faint points
    plt.close(fig)
