"""`genies compare`'s directory: compare.md, compare.csv and the plots, written to a staging sibling and moved
into place together (common/atomic.py), so a comparison directory is always whole."""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path
from typing import Sequence

from common import UserError, check_writable_dir
from common.atomic import MARKER, atomic_directory, read_marker
from genies.compare import MEAN_METRICS, Comparison, compare_runs_in
from genies.compare_plots import (DEPTH_FILE, MEANS_FILE, SWEEPS_FILE, generalization_vs_depth, means_by_model,
                                  pair_scatter, scatter_file, shift_numbers, validation_by_depth)
from genies.uncertainty import LEVEL, N_BOOTSTRAP, Interval

COMPARE_FILE = "compare.md"
CSV_FILE = "compare.csv"
KIND = "genies compare"
CSV_COLUMNS = ("kind", "method", "run", "run_b", "n_shifts", "n", "statistic", "estimate", "low", "high")


def default_out(run_dirs: Sequence[Path]) -> Path:
    """Beside the first run: ``compare-<run>-<run>...`` (its directories' names, shortened)."""
    names = "-".join(re.sub(r"[^A-Za-z0-9._-]+", "-", Path(d).resolve().name)[:24] for d in run_dirs[:4])
    more = f"-and-{len(run_dirs) - 4}-more" if len(run_dirs) > 4 else ""
    return Path(run_dirs[0]).resolve().parent / f"compare-{names}{more}"


def check_out(out: Path, run_dirs: Sequence[Path]) -> None:
    """Refuse an --out that is one of the runs or any directory but an earlier comparison (it is replaced)."""
    out = Path(out)
    if any(out.resolve() == Path(d).resolve() for d in run_dirs):
        raise UserError(f"--out {out}: is one of the compared runs; give another directory")
    check_writable_dir(out, "the comparison directory (--out)")
    if out.exists():
        if not out.is_dir():
            raise UserError(f"--out {out}: is a file, not a directory")
        if any(out.iterdir()) and not (out / MARKER).is_file():
            raise UserError(f"--out {out}: exists and is not a `genies compare` directory (it would be replaced); "
                            "give a new or empty directory")
        if (out / MARKER).is_file() and read_marker(out).get("kind") != KIND:
            raise UserError(f"--out {out}: is a sealed directory of something else (not `genies compare`)")


def write_comparison(run_dirs: Sequence[Path], out: Path | None = None, *, n_bootstrap: int = N_BOOTSTRAP,
                     keep_degenerate: bool = False) -> tuple[Comparison, Path]:
    """Compare ``run_dirs`` and write OUT (default ``default_out``): compare.md, compare.csv, the plots."""
    run_dirs = [Path(d) for d in run_dirs]
    out = Path(out) if out is not None else default_out(run_dirs)
    check_out(out, run_dirs)
    comparison = compare_runs_in(run_dirs, n_bootstrap=n_bootstrap, keep_degenerate=keep_degenerate)
    with atomic_directory(out, {"kind": KIND, "runs": [str(d) for d in run_dirs]}) as staging:
        plots = []
        for pair in comparison.pairs:
            if pair.comparisons:
                plots.append(pair_scatter(comparison, pair, staging / scatter_file(pair), n_bootstrap))
        if comparison.means:
            plots.append(means_by_model(comparison, staging / MEANS_FILE))
        for drawn in (generalization_vs_depth(comparison, staging / DEPTH_FILE),
                      validation_by_depth(comparison, staging / SWEEPS_FILE)):
            plots += [drawn] if drawn else []
        (staging / CSV_FILE).write_text(csv_text(comparison), encoding="utf-8")
        (staging / COMPARE_FILE).write_text("\n".join(markdown_lines(comparison, [p.name for p in plots], n_bootstrap)),
                                            encoding="utf-8")
    return comparison, out


def csv_text(comparison: Comparison) -> str:
    """Long format: per (method, run) its means (kind mean), per (pair, method) r and B - A (kind pair)."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(CSV_COLUMNS)
    for m in comparison.means:
        for _, name in MEAN_METRICS:
            found = m.means[name]
            writer.writerow(["mean", m.method, m.run, "", m.n_shifts, "", name, *_cells(found)])
    for pair in comparison.pairs:
        for c in pair.comparisons:
            shifts = len({r for r in pair.shared_shifts})
            writer.writerow(["pair", c.method, pair.a, pair.b, shifts, c.n, "pearson_r",
                             *_cells(Interval(c.pearson_r, c.r_low, c.r_high))])
            writer.writerow(["pair", c.method, pair.a, pair.b, shifts, c.n, "mean_difference_b_minus_a",
                             *_cells(Interval(c.difference, c.difference_low, c.difference_high))])
            writer.writerow(["pair", c.method, pair.a, pair.b, shifts, c.n, "mean_a", _cell(c.mean_a), "", ""])
            writer.writerow(["pair", c.method, pair.a, pair.b, shifts, c.n, "mean_b", _cell(c.mean_b), "", ""])
        if not pair.comparisons:
            writer.writerow(["pair", "", pair.a, pair.b, 0, 0, "not compared: no shared (shift, method) rows", "", "", ""])
    return text.getvalue()


def _cell(value: float) -> str:
    return "" if value is None or math.isnan(value) else repr(float(value))


def _cells(found: Interval) -> list[str]:
    return [_cell(found.estimate), _cell(found.low), _cell(found.high)]


def _num(value: float, signed: bool = False) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    value = value if round(value, 3) else 0.0
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _ci(found: Interval, signed: bool = False) -> str:
    if math.isnan(found.low) or math.isnan(found.high):
        return _num(found.estimate, signed)
    return f"{_num(found.estimate, signed)} [{_num(found.low, signed)}, {_num(found.high, signed)}]"


def _table(header: Sequence[str], body: Sequence[Sequence]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
            + ["| " + " | ".join(str(c) for c in row) + " |" for row in body] + [""])


def markdown_lines(comparison: Comparison, plots: Sequence[str], n_bootstrap: int = N_BOOTSTRAP) -> list[str]:
    runs = comparison.runs
    lines = [f"# GENIES comparison: {' vs '.join(run.label for run in runs)}", ""]
    lines += _table(["run", "model name", "model", "layers", "shifts", "methods", "limit", "compute dtype",
                     "directory"],
                    [[chr(ord("A") + i) if i < 26 else i + 1, run.label, f"`{run.info.get('model', '?')}`",
                      run.n_layers or "?", len(run.shifts), len(run.methods), run.info.get("limit") or "all",
                      "/".join(_dtypes(run)) or "not recorded", f"`{run.path}`"] for i, run in enumerate(runs)])
    lines += ["## Comparability", ""]
    if comparison.warnings or comparison.software_notes:
        lines += ["**Warning: these runs differ in more than the model**; differences between them below mix the "
                  "model's effect with these:", ""]
        lines += [f"- {w}" for w in comparison.warnings]
        lines += [f"- {n.removeprefix('note: ')}" for n in comparison.software_notes]
    else:
        lines.append("The runs were made with the same data files, limit, prompt format, compute dtype, seed and "
                     "software" + (" (as far as they recorded them)" if comparison.unchecked else "")
                     + ": they differ in the model only.")
    if comparison.unchecked:
        lines += ["", "Not checked (not recorded by the runs):", ""] + [f"- {u}" for u in comparison.unchecked]
    lines.append("")
    if comparison.degenerate:
        lines += [f"**Degenerate fits** ({len(comparison.degenerate)} row(s): constant scores, no separation of their "
                  "own training pairs, or a calibration temperature at its bound: not ordinary results; the numbers below "
                  "count them as the method's failure there):", ""]
        lines += [f"- {line}" for line in comparison.degenerate] + [""]
    lines += [f"Compared: the {len(comparison.shifts)} shift(s) and {len(comparison.methods)} method(s) common to "
              "every run (per pair: the (shift, method) rows both runs hold)."]
    if comparison.left_out:
        lines += ["Left out, because not every run has them:", ""] + [f"- {line}" for line in comparison.left_out]
    else:
        lines.append("Nothing was left out: every run has the same shifts and methods.")
    lines.append("")
    lines += _mean_lines(comparison)
    lines += _pair_lines(comparison)
    lines += _shift_table(comparison)
    unknown = [run.label for run in runs if not run.n_layers and any(r.layer is not None for r in run.rows)]
    lines += ["## Plots", ""]
    if unknown:
        lines += [f"Relative depth unknown for {', '.join(unknown)}: the run records no layer count (made before "
                  "`genies run` recorded it) and the model's config cannot be read here; rerun it to add it.", ""]
    for plot in plots:
        lines += [f"![{plot}]({plot})", ""]
    lines += ["## How to read it", "",
              f"- Intervals: {LEVEL:.0%} percentile bootstrap, {n_bootstrap} replicates. A mean resamples shifts, then "
              "each run's test examples. A pair's r and B - A resample the pair's shared shifts once for both runs "
              "and each run's test examples (seeded by dataset: runs on the same examples share them), so the "
              "difference is paired.",
              "- Resolved: the interval of B - A excludes 0. r over a handful of shifts has wide intervals: "
              "read the scatter plots before the number.",
              "- Depth: layer / n_layers of the model (0 = embeddings, 1 = the last block's output), so models of "
              "different depth share one axis.", ""]
    return lines


def _dtypes(run) -> list[str]:
    from genies.compare import compute_dtypes

    return compute_dtypes(run)


def _mean_lines(comparison: Comparison) -> list[str]:
    lines = ["## Per-method means by model", ""]
    if not comparison.means:
        return lines + ["No shift is common to every run: there are no means over the same shifts to set side by "
                        "side (the pairs below compare what each two runs share).", ""]
    lines += [f"Over the {len(comparison.shifts)} shifts common to every run; each run's own intervals.", ""]
    runs = [run.label for run in comparison.runs]
    by = {(m.method, m.run): m for m in comparison.means}
    header = ["method", *(f"{short} {run}" for short, _ in MEAN_METRICS for run in runs)]
    body = [[method, *(_ci(by[(method, run)].means[name], short == "DE") for short, name in MEAN_METRICS
                       for run in runs)] for method in comparison.methods]
    return lines + _table(header, body)


def _pair_lines(comparison: Comparison) -> list[str]:
    lines = ["## Pairs of runs", "",
             "Per pair: Pearson r of per-shift generalization accuracy (A on x, B on y) and the mean difference B - A "
             "over the pair's shared shifts.", ""]
    for pair in comparison.pairs:
        lines += [f"### {pair.a} (A) vs {pair.b} (B)", ""]
        if pair.left_out:
            lines += [f"Not in this pair's comparison: {'; '.join(pair.left_out)}.", ""]
        if not pair.comparisons:
            lines += ["**Not compared: the two runs share no (shift, method) rows** (disjoint shifts or methods).",
                      ""]
            continue
        body = [[c.method, c.n, _ci(Interval(c.pearson_r, c.r_low, c.r_high), True), _num(c.mean_a), _num(c.mean_b),
                 _ci(Interval(c.difference, c.difference_low, c.difference_high), True),
                 "**yes**" if c.resolved else "no"] for c in pair.comparisons]
        lines += _table(["method", "points", "Pearson r", "mean A", "mean B", "B - A", "resolved"], body)
    return lines


def _shift_table(comparison: Comparison) -> list[str]:
    numbers = shift_numbers(comparison)
    common = set(comparison.shifts)
    lines = ["## Shifts", "", "`#` numbers the shifts as in the scatter plots.", ""]
    body = [[n, f"{s[0]} -> {s[1]}", "yes" if s in common else "no: " + ", ".join(
        run.label for run in comparison.runs if s in run.shifts) + " only"] for s, n in numbers.items()]
    return lines + _table(["#", "shift", "in every run"], body)
