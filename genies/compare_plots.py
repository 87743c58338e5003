"""`genies compare`'s figures (matplotlib, Agg backend, PNG files): per pair of runs a per-shift scatter, the
per-method means by model, and generalization against relative depth."""

from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from genies.compare import Comparison, PairResult  # noqa: E402
from genies.generalization import ZERO_SHOT  # noqa: E402
from genies.plots import COLORS_IN_CYCLE, MARKERS, _error, save_figure  # noqa: E402
from genies.uncertainty import N_BOOTSTRAP, Interval  # noqa: E402

MEANS_FILE = "means_by_model.png"
DEPTH_FILE = "generalization_vs_depth.png"


def file_label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"


def scatter_file(pair: PairResult) -> str:
    return f"scatter_{file_label(pair.a)}_vs_{file_label(pair.b)}.png"


def pair_scatter(comparison: Comparison, pair: PairResult, path: Path, n_bootstrap: int = N_BOOTSTRAP) -> Path:
    """Generalization of run A (x) against run B (y), one point per shared (shift, method), each with its run's
    per-shift 95% intervals on both axes and its shift number (as in compare.md's shift table)."""
    a, b = comparison.run(pair.a), comparison.run(pair.b)
    boot_a, boot_b = a.bootstrap(n_bootstrap, a.seed), b.bootstrap(n_bootstrap, a.seed)
    numbers = shift_numbers(comparison)
    in_b = {r.key: r for r in b.rows}
    fig, ax = plt.subplots(figsize=(7, 6.3))
    methods = [m for m in dict.fromkeys(r.method for r in a.rows) if any(r.method == m and r.key in in_b for r in a.rows)]
    for index, method in enumerate(methods):
        mine = [(r, in_b[r.key]) for r in a.rows if r.method == method and r.key in in_b]
        x = [ra.generalization_accuracy for ra, _ in mine]
        y = [rb.generalization_accuracy for _, rb in mine]
        xerr = list(zip(*(_error(ra.generalization_accuracy, boot_a.row_interval(ra, "generalization_accuracy"))
                          for ra, _ in mine)))
        yerr = list(zip(*(_error(rb.generalization_accuracy, boot_b.row_interval(rb, "generalization_accuracy"))
                          for _, rb in mine)))
        marker = MARKERS[index // COLORS_IN_CYCLE % len(MARKERS)]
        bars = ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt=marker, ms=4, lw=0.6, alpha=0.8, capsize=0, label=method)
        for (ra, _), xi, yi in zip(mine, x, y):
            ax.annotate(str(numbers[ra.shift]), (xi, yi), xytext=(2, 2), textcoords="offset points", fontsize=6,
                        color=bars.lines[0].get_color())
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="y = x")
    ax.axhline(0.5, color="grey", lw=0.5, ls=":")
    ax.axvline(0.5, color="grey", lw=0.5, ls=":")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel=f"{pair.a}: generalization accuracy",
           ylabel=f"{pair.b}: generalization accuracy")
    pooled = next((c for c in pair.comparisons if c.method == "all"), None)
    r_text = "n/a"
    if pooled is not None and not math.isnan(pooled.pearson_r):
        r_text = f"{pooled.pearson_r:.2f}" + ("" if math.isnan(pooled.r_low) else
                                              f" [{pooled.r_low:.2f}, {pooled.r_high:.2f}]")
    ax.set_title(f"{pair.a} vs {pair.b}: r = {r_text} over {pooled.n if pooled else 0} (shift, method) points\n"
                 "bars: 95% bootstrap intervals (each run's test examples); numbers: shifts (compare.md)", fontsize=9)
    if methods:
        ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path)


def means_by_model(comparison: Comparison, path: Path, metric: str = "generalization_accuracy") -> Path:
    """Mean ``metric`` per method (x), one bar per run (model), each with its run's 95% interval."""
    methods, runs = comparison.methods, [run.label for run in comparison.runs]
    means = {(m.method, m.run): m.means[metric] for m in comparison.means}
    fig, ax = plt.subplots(figsize=(max(5.5, 0.6 * len(methods) * len(runs) + 2), 4.2))
    width = 0.8 / max(1, len(runs))
    for k, run in enumerate(runs):
        found = [means.get((m, run), Interval(math.nan, math.nan, math.nan)) for m in methods]
        positions = [i - 0.4 + width * (k + 0.5) for i in range(len(methods))]
        errors = list(zip(*(_error(f.estimate, f) for f in found))) or None
        ax.bar(positions, [f.estimate for f in found], width, yerr=errors, capsize=3, label=run)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xticks(list(range(len(methods))), methods, rotation=30, ha="right")
    ax.set(ylim=(0, 1), ylabel=f"mean {metric.replace('_', ' ')}")
    ax.set_title(f"Per-method means over the {len(comparison.shifts)} shifts common to the runs "
                 "(95% bootstrap: shifts, then examples)", fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def generalization_vs_depth(comparison: Comparison, path: Path) -> Path | None:
    """Generalization accuracy of each (shift, method) row against its layer's relative depth (0 = embeddings,
    1 = the last block's output), one panel per method that has a layer, one colour per run; None when no row
    of any run has a known depth."""
    methods = [m for m in comparison.methods if m != ZERO_SHOT and not _chance(m) and any(
        run.depth(r) is not None for run in comparison.runs for r in run.rows if r.method == m)]
    if not methods:
        return None
    columns = min(3, len(methods))
    n_rows = -(-len(methods) // columns)
    fig, axes = plt.subplots(n_rows, columns, figsize=(4.2 * columns, 3.6 * n_rows), squeeze=False, sharey=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    common = set(comparison.shifts)  # the shifts every run has; with none in common, each run's own
    for index, method in enumerate(methods):
        ax = axes[index // columns][index % columns]
        for k, run in enumerate(comparison.runs):
            points = [(run.depth(r), r.generalization_accuracy) for r in run.rows
                      if r.method == method and (r.shift in common or not common) and run.depth(r) is not None]
            if points:
                ax.scatter(*zip(*points), s=14, alpha=0.75, color=colors[k % len(colors)],
                           label=f"{run.label} ({run.n_layers or '?'} layers)")
        ax.axhline(0.5, color="grey", lw=0.6, ls=":")
        ax.set(xlim=(-0.02, 1.02), ylim=(0, 1), title=method, xlabel="relative depth (layer / n_layers)")
        if index % columns == 0:
            ax.set_ylabel("generalization accuracy")
        ax.grid(alpha=0.3)
    for index in range(len(methods), n_rows * columns):
        axes[index // columns][index % columns].axis("off")
    if axes[0][0].get_legend_handles_labels()[0]:
        axes[0][0].legend(fontsize=7, loc="lower left")
    fig.suptitle("Generalization against the relative depth of the layer each probe used (one point per shift)",
                 fontsize=10)
    return save_figure(fig, path)


def _chance(method: str) -> bool:
    """A chance baseline: its layer is the middle one, never chosen, so its depth says nothing."""
    import registry

    spec = registry.all_methods().get(method)
    return bool(spec and spec.chance_baseline)


def shift_numbers(comparison: Comparison) -> dict[tuple[str, str], int]:
    """Shift -> its number in compare.md: the common shifts first, then any other, in the runs' order."""
    shifts = list(comparison.shifts)
    shifts += [s for run in comparison.runs for s in run.shifts if s not in shifts]
    shifts = list(dict.fromkeys(shifts))
    return {s: i + 1 for i, s in enumerate(shifts)}


SWEEPS_FILE = "validation_by_depth.png"


def validation_by_depth(comparison: Comparison, path: Path) -> Path | None:
    """Each run's layer sweeps (RUN_DIR/sweeps/*.csv: validation accuracy at every layer, on a validation split of
    each training set) averaged over its training sets, against relative depth: one panel per method, one line
    per run, so "which depth works" can be compared across models of different depth. None without sweeps."""
    from probes.sweep import VALIDATION, read_csv

    curves: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for run in comparison.runs:
        if not run.n_layers or not (run.path / "sweeps").is_dir():
            continue
        sums: dict[tuple[str, int], list[float]] = {}
        for table in sorted((run.path / "sweeps").glob("*.csv")):
            for row in read_csv(table):
                if row.role == VALIDATION and row.method in comparison.methods:
                    sums.setdefault((row.method, row.layer), []).append(row.accuracy)
        for (method, layer), values in sorted(sums.items()):
            curves.setdefault(method, {}).setdefault(run.label, []).append((layer / run.n_layers,
                                                                            sum(values) / len(values)))
    if not curves:
        return None
    methods = [m for m in comparison.methods if m in curves and not _chance(m)]
    if not methods:
        return None
    columns = min(3, len(methods))
    n_rows = -(-len(methods) // columns)
    fig, axes = plt.subplots(n_rows, columns, figsize=(4.2 * columns, 3.6 * n_rows), squeeze=False, sharey=True)
    colors = {run.label: plt.rcParams["axes.prop_cycle"].by_key()["color"][k % COLORS_IN_CYCLE]
              for k, run in enumerate(comparison.runs)}
    for index, method in enumerate(methods):
        ax = axes[index // columns][index % columns]
        for label, points in curves[method].items():
            ax.plot(*zip(*sorted(points)), marker=".", lw=1.2, color=colors[label], label=label)
        ax.axhline(0.5, color="grey", lw=0.6, ls=":")
        ax.set(xlim=(0, 1), ylim=(0, 1), title=method, xlabel="relative depth (layer / n_layers)")
        if index % columns == 0:
            ax.set_ylabel("validation accuracy (mean over training sets)")
        ax.grid(alpha=0.3)
    for index in range(len(methods), n_rows * columns):
        axes[index // columns][index % columns].axis("off")
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.suptitle("Layer sweeps by relative depth: validation accuracy, averaged over each run's training sets",
                 fontsize=10)
    return save_figure(fig, path)
