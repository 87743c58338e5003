"""sweep.png: accuracy by layer, one line per method, one panel per eval store (validation first)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from probes.sweep import SweepRow  # noqa: E402


def plot_sweep(rows: list[SweepRow], panels: list[str], path: str | Path, *, best: dict[str, int] | None = None,
               title: str = "", n_layers: int | None = None) -> Path:
    """One panel per name in ``panels`` (the rows' ``eval`` column); a dot marks each method's chosen layer and a
    band each accuracy's bootstrap interval (examples resampled), where the rows have one. With ``n_layers`` (the
    model's blocks) the x axis is the relative depth layer / n_layers, 0 to 1, so sweeps of models of different
    depths line up."""
    def x_of(layer: int) -> float:
        return layer / n_layers if n_layers else layer

    methods = list(dict.fromkeys(r.method for r in rows))
    columns = 2 if len(panels) == 4 else min(len(panels), 3)
    n_rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(n_rows, columns, figsize=(5 * columns, 3.6 * n_rows), squeeze=False, sharey=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, panel in enumerate(panels):
        ax = axes[index // columns][index % columns]
        for m, method in enumerate(methods):
            points = sorted((r.layer, r.accuracy, _bound(r.accuracy_ci_low), _bound(r.accuracy_ci_high))
                            for r in rows if r.method == method and r.eval == panel)
            if not points:
                continue
            layers, accuracy, low, high = zip(*points)
            xs = [x_of(layer) for layer in layers]
            color = colors[m % len(colors)]
            ax.plot(xs, accuracy, label=method, color=color, linewidth=1.5)
            ax.fill_between(xs, low, high, color=color, alpha=0.15, linewidth=0)
            if best and method in best and best[method] in layers:
                chosen = layers.index(best[method])
                ax.plot([xs[chosen]], [accuracy[chosen]], "o", color=color, markersize=7, markeredgecolor="black")
        ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
        ax.set_title(panel, fontsize=10)
        if n_layers:
            ax.set_xlim(0, 1)
            ax.set_xlabel(f"relative depth (layer / {n_layers})")
        else:
            ax.set_xlabel("layer")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if index % columns == 0:
            ax.set_ylabel("pairwise accuracy")
    for index in range(len(panels), n_rows * columns):
        axes[index // columns][index % columns].axis("off")
    axes[0][0].legend(fontsize=8, loc="best", title="bands: 95% bootstrap; dot: chosen layer", title_fontsize=7)
    if title:
        figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _bound(value: float | None) -> float:
    return float("nan") if value is None else float(value)
