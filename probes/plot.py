"""sweep.png: accuracy by layer, one line per method, one panel per eval store (validation first)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from probes.sweep import SweepRow  # noqa: E402


def plot_sweep(rows: list[SweepRow], panels: list[str], path: str | Path, *, best: dict[str, int] | None = None,
               title: str = "") -> Path:
    """One panel per name in ``panels`` (the rows' ``eval`` column); a dot marks each method's chosen layer and a
    band each accuracy's bootstrap interval (examples resampled), where the rows have one."""
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
            color = colors[m % len(colors)]
            ax.plot(layers, accuracy, label=method, color=color, linewidth=1.5)
            ax.fill_between(layers, low, high, color=color, alpha=0.15, linewidth=0)
            if best and method in best and best[method] in layers:
                ax.plot([best[method]], [accuracy[layers.index(best[method])]], "o", color=color)
        ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if index % columns == 0:
            ax.set_ylabel("pairwise accuracy")
    for index in range(len(panels), n_rows * columns):
        axes[index // columns][index % columns].axis("off")
    axes[0][0].legend(fontsize=8, loc="best", title="bands: 95% bootstrap", title_fontsize=7)
    if title:
        figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _bound(value: float | None) -> float:
    return float("nan") if value is None else float(value)
