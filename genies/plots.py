"""The report's two figures (matplotlib, Agg backend, PNG files)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from genies.generalization import ZERO_SHOT, ResultRow  # noqa: E402
from genies.summary import Correlation, MethodSummary  # noqa: E402


def zero_shot_scatter(rows: Sequence[ResultRow], correlation: Correlation, path: Path) -> Path:
    """Generalization vs zero-shot accuracy, one point per shift x method (zero-shot left out)."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    methods = list(dict.fromkeys(r.method for r in rows if r.method != ZERO_SHOT))
    for method in methods:
        mine = [r for r in rows if r.method == method]
        ax.scatter([r.zero_shot_accuracy for r in mine], [r.generalization_accuracy for r in mine], s=18, label=method, alpha=0.8)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="y = x")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="zero-shot accuracy on target", ylabel="generalization accuracy")
    r_text = "n/a" if math.isnan(correlation.pearson_r) else f"{correlation.pearson_r:.2f}"
    ax.set_title(f"Generalization vs zero-shot (Pearson r = {r_text}, n = {correlation.n}; paper: 0.7)", fontsize=9)
    if methods:
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def method_bars(summaries: Sequence[MethodSummary], paper_means: dict[str, float], path: Path) -> Path:
    """Mean generalization accuracy per method, with the paper's llama-30b mean beside it."""
    fig, ax = plt.subplots(figsize=(max(5.0, 0.8 * len(summaries) + 2), 4))
    positions = range(len(summaries))
    width = 0.4
    ax.bar([p - width / 2 for p in positions], [s.generalization_accuracy for s in summaries], width, label="this run")
    paper = [paper_means.get(s.method, math.nan) for s in summaries]
    if any(not math.isnan(v) for v in paper):
        ax.bar([p + width / 2 for p in positions], paper, width, label="paper, llama-30b (same shifts)")
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xticks(list(positions), [s.method for s in summaries], rotation=30, ha="right")
    ax.set(ylim=(0, 1), ylabel="mean generalization accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
