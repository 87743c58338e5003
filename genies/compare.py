"""`genies compare`: two or more runs side by side (the paper's cross-model analysis).

Per method and run: mean generalization, DE and source accuracy over the shifts common to every run, each with
its run's own two-level bootstrap interval (genies/uncertainty.py). Per pair of runs: the Pearson r of per-shift
generalization accuracy (per method, and pooled over the pair's shared (shift, method) points) and the paired
mean difference B - A, both with intervals from one joint resample of the shared shifts and each run's own
resamples of its test examples (seeded by dataset, so two runs on the same test examples share them). Only
shifts and methods common to the runs are compared; what was left out, and every difference between the runs'
settings that makes their numbers less comparable (data, limit, prompt format, compute dtype, software), is
said. Pure given the loaded runs; genies/compare_report.py writes the files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from common import UserError
from genies.evaluations import read_row_evaluations
from genies.generalization import ResultRow, RowEvaluations
from genies.results_csv import load_run, results_path, unchecked_records
from genies.run_info import read_run_info
from genies.summary import RunComparison, compare_runs
from genies.uncertainty import (N_BOOTSTRAP, Interval, RunBootstrap, counted_rows, interval, shift_counts,
                                weighted_means,
                                weighted_pearson)

Shift = tuple[str, str]
MEAN_METRICS = (("generalization", "generalization_accuracy"), ("DE", "differential_elicitation"),
                ("source", "source_accuracy"))


@dataclass(frozen=True)
class RunComparisonInterval(RunComparison):
    """A RunComparison with 95% bootstrap intervals for r and for the mean difference."""

    r_low: float
    r_high: float
    difference: float  # mean_b - mean_a over the shared shifts
    difference_low: float
    difference_high: float

    @property
    def resolved(self) -> bool:
        return Interval(self.difference, self.difference_low, self.difference_high).excludes(0.0)


@dataclass
class ComparedRun:
    """One run directory as compare reads it: its rows, their evaluations, its settings and a short label."""

    path: Path
    label: str  # short model name, unique among the compared runs
    info: dict
    rows: list[ResultRow]
    evaluations: Mapping[tuple[str, str, str], RowEvaluations] | None
    keep_degenerate: bool = False  # whether comparisons count the rows of degenerate fits
    _bootstraps: dict = field(default_factory=dict, repr=False)  # and the layer count, once looked up

    @property
    def seed(self) -> int:
        return int(self.info.get("seed", 0))

    @property
    def shifts(self) -> list[Shift]:
        return list(dict.fromkeys(r.shift for r in self.rows))

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(r.method for r in self.rows))

    @property
    def n_layers(self) -> int | None:
        """The model's blocks: as the run recorded them, else (a run made before they were) from the model's
        config where it can be read here without loading weights."""
        if "n_layers" not in self._bootstraps:
            found = self.info.get("n_layers") or next((r.n_layers for r in self.rows if r.n_layers), None)
            if not found and self.info.get("model") and any(r.layer is not None for r in self.rows):
                from actstore.models import model_n_blocks

                found = model_n_blocks(str(self.info["model"]))
            self._bootstraps["n_layers"] = int(found) if found else None
        return self._bootstraps["n_layers"]

    def depth(self, row: ResultRow) -> float | None:
        """The row's relative depth: recorded, or layer / n_layers where run.json knows the model's layer count."""
        if row.depth is not None:
            return row.depth
        return row.layer / self.n_layers if row.layer is not None and self.n_layers else None

    def bootstrap(self, n_bootstrap: int, seed: int | None = None) -> RunBootstrap:
        """The run's bootstrap (seeded with ``seed``, default its own), built once."""
        key = (n_bootstrap, self.seed if seed is None else seed)
        if key not in self._bootstraps:
            self._bootstraps[key] = RunBootstrap(self.rows, self.evaluations, n_bootstrap=n_bootstrap, seed=key[1],
                                                 keep_degenerate=self.keep_degenerate)
        return self._bootstraps[key]


    @property
    def counted(self) -> list[ResultRow]:
        """The rows comparisons count (``uncertainty.counted_rows``)."""
        return counted_rows(self.rows, self.keep_degenerate)


def load_compared(run_dir: Path, keep_degenerate: bool = False) -> ComparedRun:
    from genies.report import run_label

    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    return ComparedRun(run_dir, run_label(run_dir, info), info, load_run(run_dir), read_row_evaluations(run_dir),
                       keep_degenerate)


def unique_labels(runs: Sequence[ComparedRun]) -> None:
    """Runs of one model get their directory's name beside the model's (labels name plots and table rows)."""
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.label] = counts.get(run.label, 0) + 1
    seen: set[str] = set()
    for run in runs:
        if counts[run.label] > 1:
            run.label = f"{run.label} ({run.path.name})"
        while run.label in seen:
            run.label += "'"
        seen.add(run.label)


def pair_comparisons(a: ComparedRun, b: ComparedRun, metric: str = "generalization_accuracy", *,
                     n_bootstrap: int = N_BOOTSTRAP) -> list[RunComparisonInterval]:
    """Per-method and pooled Pearson r and mean difference of ``metric`` over the (shift, method) rows both runs
    hold (empty when they share none). Shifts are resampled jointly for both runs, examples within each run;
    both runs are seeded with A's seed, so two runs on the same test examples share their resamples."""
    points = compare_runs(a.counted, b.counted, metric)
    if points[-1].n == 0:
        return []
    seed = a.seed
    boots = [a.bootstrap(n_bootstrap, seed), b.bootstrap(n_bootstrap, seed)]
    in_b = {r.key for r in b.counted}
    shared = [r for r in a.counted if r.key in in_b]
    shifts = list(dict.fromkeys(r.shift for r in shared))
    counts = shift_counts(len(shifts), n_bootstrap, seed, "compare")
    out = []
    for point in points:
        mine = [r for r in shared if point.method in ("all", r.method)]
        x, y = (np.concatenate([boot.values(r.method, metric, [r.shift])[1] for r in mine], axis=1) for boot in boots)
        weights = counts[:, [shifts.index(r.shift) for r in mine]]
        r = interval(point.pearson_r, weighted_pearson(x, y, weights))
        difference = interval(point.mean_b - point.mean_a, weighted_means(y - x, weights))
        out.append(RunComparisonInterval(**vars(point), r_low=r.low, r_high=r.high, difference=difference.estimate,
                                         difference_low=difference.low, difference_high=difference.high))
    return out


def compare_run_dirs(run_a: Path, run_b: Path, metric: str = "generalization_accuracy", *,
                     n_bootstrap: int = N_BOOTSTRAP) -> list[RunComparisonInterval]:
    """``pair_comparisons`` of two run directories; a UserError when they share no (shift, method) row."""
    found = pair_comparisons(load_compared(run_a), load_compared(run_b), metric, n_bootstrap=n_bootstrap)
    if not found:
        raise UserError(f"{results_path(run_a)} and {results_path(run_b)} share no (shift, method) rows")
    return found


@dataclass(frozen=True)
class MethodMean:
    """One method of one run: means over the shifts common to every run, with the run's own intervals."""

    method: str
    run: str
    n_shifts: int
    means: dict[str, Interval]  # metric -> mean with its interval


@dataclass(frozen=True)
class PairResult:
    a: str
    b: str
    comparisons: list[RunComparisonInterval]  # per method, then "all"; empty: nothing shared
    shared_shifts: list[Shift]
    left_out: list[str]  # what one of the two holds and the other does not


@dataclass
class Comparison:
    runs: list[ComparedRun]
    shifts: list[Shift]  # common to every run, in the first run's order
    methods: list[str]  # common to every run
    means: list[MethodMean]
    pairs: list[PairResult]
    left_out: list[str]  # shifts and methods some run lacks, and which
    warnings: list[str]  # settings that differ between runs
    software_notes: list[str]  # `note: the runs differ in software: ...` lines
    unchecked: list[str] = field(default_factory=list)  # what could not be checked (not recorded by a run)
    degenerate: list[str] = field(default_factory=list)  # rows of degenerate fits, per run

    def run(self, label: str) -> ComparedRun:
        return next(r for r in self.runs if r.label == label)


def compare_runs_in(run_dirs: Sequence[Path], *, n_bootstrap: int = N_BOOTSTRAP,
                    keep_degenerate: bool = False) -> Comparison:
    """Everything `genies compare` reports about ``run_dirs`` (two or more); degenerate fits are left out of every
    comparison unless ``keep_degenerate``."""
    if len(run_dirs) < 2:
        raise UserError("genies compare needs two or more run directories")
    runs = [load_compared(Path(d), keep_degenerate) for d in run_dirs]
    unique_labels(runs)
    shifts = [s for s in runs[0].shifts if all(s in run.shifts for run in runs[1:])]
    methods = [m for m in runs[0].methods if all(m in run.methods for run in runs[1:])]
    means = [MethodMean(method, run.label, len(shifts),
                        {name: run.bootstrap(n_bootstrap).mean_interval(method, name, shifts, name="compare")
                         for _, name in MEAN_METRICS})
             for method in methods for run in runs] if shifts else []
    pairs = []
    for i, a in enumerate(runs):
        for b in runs[i + 1:]:
            shared = [s for s in a.shifts if s in b.shifts]
            pairs.append(PairResult(a.label, b.label, pair_comparisons(a, b, n_bootstrap=n_bootstrap), shared,
                                    _pair_left_out(a, b)))
    if not any(p.comparisons for p in pairs):
        raise UserError(f"the runs {', '.join(str(d) for d in run_dirs)} share no (shift, method) rows: there is "
                        "nothing to compare")
    notes, unrecorded = software_notes(runs)
    data, unchecked = data_warnings(runs)
    missing = [line for run in runs for line in unchecked_records(run.path)]
    return Comparison(runs, shifts, methods, means, pairs, left_out_lines(runs, shifts, methods),
                      same_run_warnings(run_dirs) + setting_warnings(runs) + data, notes,
                      missing + unchecked + unrecorded, degenerate_lines(runs))


def same_run_warnings(run_dirs: Sequence[Path]) -> list[str]:
    """A line per run directory given more than once (by any path to it): a run compared with itself."""
    seen: dict[Path, Path] = {}
    warnings = []
    for run_dir in map(Path, run_dirs):
        resolved = run_dir.resolve()
        if resolved in seen:
            warnings.append(f"{run_dir} is the same run as {seen[resolved]}: it is compared with itself")
        seen.setdefault(resolved, run_dir)
    return warnings


def left_out_lines(runs: Sequence[ComparedRun], shifts: Sequence[Shift], methods: Sequence[str]) -> list[str]:
    """A line per shift and per method some run lacks: which runs hold it."""
    lines = []
    for kind, held, kept, name in (("shift", lambda run: run.shifts, shifts, lambda s: f"{s[0]} -> {s[1]}"),
                                   ("method", lambda run: run.methods, methods, str)):
        for item in dict.fromkeys(item for run in runs for item in held(run)):
            if item not in kept:
                holders = [run.label for run in runs if item in held(run)]
                lines.append(f"{kind} {name(item)}: only in {', '.join(holders)} (not run by "
                             f"{', '.join(run.label for run in runs if run.label not in holders)})")
    return lines


def _pair_left_out(a: ComparedRun, b: ComparedRun) -> list[str]:
    only = []
    for first, second in ((a, b), (b, a)):
        shifts = [s for s in first.shifts if s not in second.shifts]
        methods = [m for m in first.methods if m not in second.methods]
        if shifts:
            only.append(f"{len(shifts)} shift(s) only in {first.label}")
        if methods:
            only.append(f"method(s) {', '.join(methods)} only in {first.label}")
    return only


COMPARABLE_SETTINGS = (("limit", "--limit (examples per split)"), ("prompt_format", "--prompt-format"),
                       ("seed", "--seed"))  # the data: by the files' fingerprints (data_warnings)


def setting_warnings(runs: Sequence[ComparedRun]) -> list[str]:
    """One line per setting whose value differs between runs (data, limit, prompt format, compute dtype)."""
    warnings = []
    for key, what in COMPARABLE_SETTINGS:
        values = {run.label: run.info.get(key) for run in runs}
        if len({repr(v) for v in values.values()}) > 1:
            warnings.append(f"{what} differs: " + ", ".join(f"{label} {value}" for label, value in values.items()))
    dtypes = {run.label: compute_dtypes(run) for run in runs}
    if len({tuple(v) for v in dtypes.values()}) > 1:
        warnings.append("compute dtype differs: " + ", ".join(
            f"{label} {'/'.join(found) or 'not recorded'}" for label, found in dtypes.items()))
    return warnings


def degenerate_lines(runs: Sequence[ComparedRun]) -> list[str]:
    """Per run, its degenerate fits (their numbers sit at chance by construction), one line per fit with
    every target it was evaluated on."""
    targets: dict[tuple[str, str, str, str], list[str]] = {}
    for run in runs:
        for r in run.rows:
            if r.degenerate:
                targets.setdefault((run.label, r.method, r.source, r.degenerate), []).append(r.target)
    return [f"{label}: {method} on {source} -> {', '.join(found)} ({why})"
            for (label, method, source, why), found in targets.items()]


def compute_dtypes(run: ComparedRun) -> list[str]:
    """The dtypes the run's evaluations were computed in (what the model computed in, not what was asked)."""
    found = {e.compute_dtype for row in (run.evaluations or {}).values()
             for e in (row.generalization, row.source, row.zero_shot, row.target_tuned) if e.compute_dtype}
    return sorted(found)


def data_warnings(runs: Sequence[ComparedRun]) -> tuple[list[str], list[str]]:
    """Data files (dataset/split) that the runs read in different versions, by their recorded fingerprints; and
    which runs recorded none (their data cannot be checked)."""
    recorded = {run.label: run.info.get("data_fingerprints") for run in runs}
    missing = [label for label, found in recorded.items() if not found]
    unchecked = [f"data fingerprints not recorded for {', '.join(missing)}: the data cannot be checked to be the "
                 "same"] if missing else []
    lines = []
    known = {label: found for label, found in recorded.items() if found}
    files = sorted({key for found in known.values() for key in found if "/" in key})  # not the settings digest
    differing = [key for key in files if len({found[key] for found in known.values() if key in found}) > 1]
    if differing:
        lines.append(f"data files differ between runs ({len(differing)}: {', '.join(differing[:5])}"
                     f"{', ...' if len(differing) > 5 else ''}): the runs did not test on the same examples there")
    return lines, unchecked


def software_notes(runs: Sequence[ComparedRun]) -> tuple[list[str], list[str]]:
    """``software_note`` lines of the first run against each other run (two runs: the one line as it always was),
    and the runs that recorded no software versions (nothing to check there)."""
    from actstore.store.software import software_differences

    notes = []
    unrecorded = [run.label for run in runs if not run.info.get("software")]
    for other in runs[1:]:
        if unrecorded:
            continue
        note = software_note(runs[0].path, other.path)
        if note and len(runs) == 2:
            notes.append(note)
        elif note:
            differences = software_differences(runs[0].info.get("software"), other.info.get("software"))
            notes.append(f"note: {runs[0].label} and {other.label} differ in software: {'; '.join(differences)}")
    if unrecorded:
        recorded = [run for run in runs if run.info.get("software")]
        for i, run in enumerate(recorded):  # those that did record theirs are still compared among themselves
            for other in recorded[i + 1:]:
                differences = software_differences(run.info.get("software"), other.info.get("software"))
                if differences:
                    notes.append(f"note: {run.label} and {other.label} differ in software: {'; '.join(differences)}")
    return notes, ([f"software versions not recorded for {', '.join(unrecorded)}"] if unrecorded else [])


def software_note(run_a: Path, run_b: Path) -> str | None:
    """A line saying which recorded library versions or toolkit commit differ between two runs, or None."""
    from actstore.store.software import software_differences

    differences = software_differences(read_run_info(run_a).get("software"), read_run_info(run_b).get("software"))
    return f"note: the runs differ in software: {'; '.join(differences)}" if differences else None
