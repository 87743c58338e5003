"""RUN_DIR/report.md (+ two PNG plots) from RUN_DIR/results.csv, beside the paper's llama-30b figures."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from actstore.errors import UserError
from genies.generalization import ZERO_SHOT, ResultRow
from genies.paper import PAPER_INTERVENTION, PAPER_MODEL, paper_figure, paper_rows
from genies.plots import method_bars, zero_shot_scatter
from genies.results_csv import load_run
from genies.summary import (Correlation, MethodSummary, group_means, mean, method_summaries, methods_in_order,
                            pearson, zero_shot_correlation)

REPORT_FILE = "report.md"
RUN_INFO_FILE = "run.json"  # written by the runner: command, model, manifest, timings
SCATTER_FILE = "generalization_vs_zero_shot.png"
BARS_FILE = "methods.png"


@dataclass(frozen=True)
class PaperComparison:
    method: str
    intervention: str
    n_shifts: int  # shifts of this run that the paper also reports for the intervention
    generalization_accuracy: float
    differential_elicitation: float


@dataclass(frozen=True)
class Report:
    path: Path
    summaries: list[MethodSummary]
    correlation: Correlation
    paper_correlation: Correlation


def read_run_info(run_dir: Path) -> dict:
    path = Path(run_dir) / RUN_INFO_FILE
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(info, dict):
        raise UserError(f"{path}: expected a JSON object")
    return info


def paper_comparisons(rows: Sequence[ResultRow]) -> dict[str, PaperComparison]:
    """Per method: the paper's means over the same shifts, where the paper ran a counterpart."""
    out = {}
    for method in methods_in_order(rows):
        shifts = dict.fromkeys((r.source, r.target) for r in rows if r.method == method)
        found = [p for p in (paper_figure(s, t, method) for s, t in shifts) if p is not None]
        if found:
            out[method] = PaperComparison(
                method, PAPER_INTERVENTION[method], len(found),
                mean(p.generalization_accuracy for p in found), mean(p.differential_elicitation for p in found))
    return out


def paper_zero_shot_correlation(rows: Sequence[ResultRow]) -> Correlation:
    """The paper's generalization-vs-zero-shot r over this run's shifts, pooled over its interventions."""
    shifts = {(r.source, r.target) for r in rows}
    points = [(p.zero_shot_accuracy, p.generalization_accuracy) for p in paper_rows(shifts)
              if p.intervention != "zero_shot" and p.zero_shot_accuracy is not None]
    return Correlation("paper", len(points), pearson([p[0] for p in points], [p[1] for p in points]))


def _num(value: float | None, signed: bool = False) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    return lines + [""]


def _run_lines(run_dir: Path, info: dict, rows: Sequence[ResultRow]) -> list[str]:
    lines = ["# GENIES run report", ""]
    for key in ("command", "model", "manifest"):  # each run's start and wall time: the history below
        if key in info:
            value = f"`{info[key]}`" if key == "command" else info[key]
            lines.append(f"- {key.replace('_', ' ')}: {value}")
    for number, run in enumerate(info.get("history", []), start=1):
        work = ("reused everything" if not any(run.get(k) for k in ("stores_extracted", "fits_run", "evaluations_run"))
                else f"{run.get('stores_extracted', 0)} stores extracted, {run.get('fits_run', 0)} fits, "
                     f"{run.get('evaluations_run', 0)} evaluations")
        lines.append(f"- run {number} ({run.get('started_at', '?')}): {run.get('wall_time_s', '?')} s, {work}")
    n_shifts = len({(r.source, r.target) for r in rows})
    lines += [f"- run directory: `{run_dir}`", f"- {n_shifts} shifts x {len(methods_in_order(rows))} methods "
              f"({len(rows)} rows of `results.csv`)", ""]
    return lines


def _summary_lines(summaries: Sequence[MethodSummary], paper: dict[str, PaperComparison]) -> list[str]:
    header = ["method", "shifts", "generalization", "source", "zero-shot", "DE", "El", "AUROC", "Brier", "RMS cal.",
              f"paper {PAPER_MODEL} (intervention, shifts)", "paper generalization", "paper DE"]
    body = []
    for s in summaries:
        p = paper.get(s.method)
        body.append([s.method, s.n_shifts, _num(s.generalization_accuracy), _num(s.source_accuracy),
                     _num(s.zero_shot_accuracy), _num(s.differential_elicitation, True), _num(s.elicitation),
                     _num(s.auroc), _num(s.brier), _num(s.rms_calibration_error),
                     f"{p.intervention}, {p.n_shifts}" if p else "–",
                     _num(p.generalization_accuracy) if p else "–", _num(p.differential_elicitation, True) if p else "–"])
    return ["## Per-method means over the manifest", ""] + _table(header, body)


def _group_lines(title: str, rows: Sequence[ResultRow], group, metrics: Sequence[tuple[str, str, bool]]) -> list[str]:
    groups = list(dict.fromkeys(group(r) for r in rows))
    header = ["method"] + [f"{short} {g}".strip() for short, _, _ in metrics for g in groups]
    tables = {name: group_means(rows, group, name) for _, name, _ in metrics}
    body = [[method] + [_num(tables[name][method][g], signed) for _, name, signed in metrics for g in groups]
            for method in methods_in_order(rows)]
    return [f"## {title}", ""] + _table(header, body)


def _shift_lines(rows: Sequence[ResultRow]) -> list[str]:
    header = ["shift", "label", "category", "method", "layer", "generalization", "source", "zero-shot",
              "TTC (best method)", "DE", "El", "AUROC", "RMS cal.", f"paper {PAPER_MODEL} generalization", "paper DE"]
    body = []
    for r in rows:
        p = paper_figure(r.source, r.target, r.method)
        reference = "" if r.target_reference == r.target else f" [ref {r.target_reference}]"
        ttc = f"{_num(r.target_tuned_capability)} ({r.target_tuned_method})" if r.target_tuned_method else _num(r.target_tuned_capability)
        body.append([f"{r.source} -> {r.target}{reference}", r.label, r.category, r.method,
                     "" if r.layer is None else r.layer, _num(r.generalization_accuracy), _num(r.source_accuracy),
                     _num(r.zero_shot_accuracy), ttc, _num(r.differential_elicitation, True), _num(r.elicitation),
                     _num(r.auroc), _num(r.rms_calibration_error),
                     _num(p.generalization_accuracy) if p else "–",
                     _num(p.differential_elicitation, True) if p else "–"])
    return ["## Per-shift results", ""] + _table(header, body)


NOTES = [
    "## Notes",
    "",
    "- generalization: trained on the source, tested on the target's test split; source: the same fit on the source's "
    "test split; zero-shot: the untrained log-likelihood baseline on the target; TTC: the best method trained and "
    "tested on the target reference's own splits; DE = (generalization - zero-shot) / TTC; El = generalization / TTC.",
    "- layer: the probe's layer; with `--layer best`, chosen per method and source on a validation split of the "
    "source's training data (never a test split), except the chance baseline random, which takes the middle layer.",
    "- Paper figures: llama-30b from the GENIES reference results (`manifests/paper-results.csv`). Method "
    "counterparts: " + ", ".join(f"{m} = {i}" for m, i in PAPER_INTERVENTION.items()) + ". The paper's LAT "
    "(lat_stim_1) is a class-mean difference, not PCA; its ccs accuracy is per response with the sign chosen on the "
    "target; its TTC is re-derived as a best-of-interventions maximum (see manifests/README.md).",
    "",
]


def write_report(run_dir: Path) -> Report:
    """(Re)build RUN_DIR/report.md and its plots from RUN_DIR/results.csv."""
    run_dir = Path(run_dir)
    rows = load_run(run_dir)
    info = read_run_info(run_dir)
    summaries = method_summaries(rows)
    paper = paper_comparisons(rows)
    correlation = zero_shot_correlation(rows)
    paper_correlation = paper_zero_shot_correlation(rows)
    zero_shot_scatter(rows, correlation, run_dir / SCATTER_FILE)
    method_bars(summaries, {m: p.generalization_accuracy for m, p in paper.items()}, run_dir / BARS_FILE)
    lines = _run_lines(run_dir, info, rows)
    lines += _summary_lines(summaries, paper)
    lines += _group_lines("Extreme vs probing shifts", rows, lambda r: r.label,
                          [("generalization", "generalization_accuracy", False), ("DE", "differential_elicitation", True)])
    lines += _group_lines("Per category (mean generalization accuracy)", rows, lambda r: r.category,
                          [("", "generalization_accuracy", False)])
    lines += [
        "## Generalization vs zero-shot accuracy", "",
        f"Pearson r = {_num(correlation.pearson_r)} over {correlation.n} (shift, method) points, every method but "
        f"{ZERO_SHOT}. The paper reports r = 0.7; its llama-30b results on these shifts give "
        f"r = {_num(paper_correlation.pearson_r)} (n = {paper_correlation.n}).", "",
        f"![generalization vs zero-shot]({SCATTER_FILE})", "",
        "## Mean generalization accuracy per method", "", f"![per-method means]({BARS_FILE})", "",
    ]
    lines += _shift_lines(rows) + NOTES
    path = run_dir / REPORT_FILE
    path.write_text("\n".join(lines), encoding="utf-8")
    return Report(path, summaries, correlation, paper_correlation)
