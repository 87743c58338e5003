"""The report's two figures (matplotlib, Agg backend, PNG files)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from genies.generalization import ZERO_SHOT, ResultRow  # noqa: E402
from genies.uncertainty import Interval, RunBootstrap  # noqa: E402


def save_figure(fig, path: Path) -> Path:
    """Lay out, write (110 dpi) and close a figure."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _error(estimate: float, found: Interval) -> tuple[float, float]:
    """matplotlib's (below, above) error lengths; zero where the interval is unknown."""
    if not found.known:
        return 0.0, 0.0
    return max(estimate - found.low, 0.0), max(found.high - estimate, 0.0)


COLORS_IN_CYCLE = 10  # matplotlib's default color cycle: the 11th method takes the 1st color, with another marker
MARKERS = ("o", "s", "^", "D")


def zero_shot_scatter(rows: Sequence[ResultRow], bootstrap: RunBootstrap, correlation: Interval, path: Path, *,
                      model: str = "") -> Path:
    """Generalization vs zero-shot accuracy, one point per shift x method (zero-shot left out), each with its
    per-shift intervals on both axes and its shift number (as in the report's per-shift table)."""
    fig, ax = plt.subplots(figsize=(7, 6.3))
    shifts = list(dict.fromkeys(r.shift for r in rows))
    methods = list(dict.fromkeys(r.method for r in rows if r.method != ZERO_SHOT))
    for index, method in enumerate(methods):
        mine = [r for r in rows if r.method == method]
        x, y = [r.zero_shot_accuracy for r in mine], [r.generalization_accuracy for r in mine]
        xerr = list(zip(*(_error(r.zero_shot_accuracy, bootstrap.row_interval(r, "zero_shot_accuracy")) for r in mine)))
        yerr = list(zip(*(_error(r.generalization_accuracy, bootstrap.row_interval(r, "generalization_accuracy"))
                          for r in mine)))
        marker = MARKERS[index // COLORS_IN_CYCLE % len(MARKERS)]
        bars = ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt=marker, ms=3.5, lw=0.6, alpha=0.75, capsize=0, label=method)
        for r, xi, yi in zip(mine, x, y):
            ax.annotate(str(shifts.index(r.shift) + 1), (xi, yi), xytext=(2, 2), textcoords="offset points",
                        fontsize=5, color=bars.lines[0].get_color())
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="y = x")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="zero-shot accuracy on target", ylabel="generalization accuracy")
    r_text = "n/a" if math.isnan(correlation.estimate) else f"{correlation.estimate:.2f}"
    if correlation.known:
        r_text += f" [{correlation.low:.2f}, {correlation.high:.2f}]"
    bars_text = ("bars: 95% bootstrap intervals (test examples resampled)" if bootstrap.rows_with_outcomes
                 else "no per-shift intervals: the run kept no per-example outcomes")
    ax.set_title(f"{model + ': ' if model else ''}generalization vs zero-shot: r = {r_text} (n = {sum(r.method != ZERO_SHOT for r in rows)}; "
                 f"paper 0.7)\n{bars_text}; numbers: shifts", fontsize=9)
    if methods:
        ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path)


def method_bars(means: dict[str, Interval], paper_means: dict[str, float], path: Path, *,
                resampled: str = "shifts and examples", model: str = "") -> Path:
    """Mean generalization accuracy per method with its 95% interval, and the paper's llama-30b mean beside it."""
    methods = list(means)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.8 * len(methods) + 2), 4))
    positions = range(len(methods))
    width = 0.4
    estimates = [means[m].estimate for m in methods]
    errors = list(zip(*(_error(means[m].estimate, means[m]) for m in methods))) or None
    ax.bar([p - width / 2 for p in positions], estimates, width, yerr=errors, capsize=3,
           label=f"this run (95% interval: {resampled} resampled)")
    paper = [paper_means.get(m, math.nan) for m in methods]
    if any(not math.isnan(v) for v in paper):
        ax.bar([p + width / 2 for p in positions], paper, width, label="paper, llama-30b (same shifts)")
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xticks(list(positions), methods, rotation=30, ha="right")
    ax.set(ylim=(0, 1), ylabel="mean generalization accuracy")
    if model:
        ax.set_title(f"{model}: mean generalization accuracy per method", fontsize=10)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def sweep_plots(sweeps_dir: Path, rows: Sequence[ResultRow], n_layers: int | None, model: str,
                mix_target: int = 0) -> list[Path]:
    """``sweeps_dir/<training set>.png`` beside each ``<training set>.csv`` that `genies run` wrote: validation
    accuracy by relative depth (layer axis where the model's layer count is unknown), with its bootstrap band,
    each method's chosen layer (the one its result rows used) marked."""
    from probes.plot import plot_sweep
    from probes.sweep import VALIDATION, read_csv

    plots = []
    for table in sorted(Path(sweeps_dir).glob("*.csv")) if Path(sweeps_dir).is_dir() else []:
        sweep = [r for r in read_csv(table) if r.role == VALIDATION]
        if not sweep:
            continue
        chosen = {r.method: r.layer for r in rows if r.layer is not None and _training_name(r, mix_target) == table.stem}
        panels = list(dict.fromkeys(r.eval for r in sweep))
        plots.append(plot_sweep(sweep, panels, table.with_suffix(".png"), best=chosen, n_layers=n_layers,
                                title=f"{model}: layer sweep, {table.stem}"))
    return plots


def _training_name(row: ResultRow, mix_target: int) -> str:
    """What the row's method was fitted on (genies.plan.TrainingSet.name)."""
    return f"{row.source}+{mix_target}x{row.target}" if mix_target else row.source
