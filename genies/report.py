"""RUN_DIR/report.md (+ two PNG plots) from RUN_DIR/results.csv, beside the paper's llama-30b figures."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import registry
from common import UserError, write_text_atomic
from genies.evaluations import ROW_OUTCOMES_FILE, read_row_evaluations
from genies.generalization import ZERO_SHOT, ResultRow, RowEvaluations, excluded_methods
from genies.paper import INTERVENTIONS, PAPER_MODEL, paper_figure
from genies.paper_comparison import (PaperComparison, paper_comparisons, paper_method_correlation, paper_points,
                                     paper_zero_shot_correlation)
from genies.baselines import BARELY_TRAINED_MARGIN, CHANCE_LOSS
from genies.plots import method_bars, sweep_plots, zero_shot_scatter
from genies.results_csv import load_run, unchecked_records
from genies.run_info import read_run_info
from genies.summary import Correlation, MethodSummary, method_summaries, methods_in_order, zero_shot_correlation
from genies.uncertainty import LEVEL, N_BOOTSTRAP, Interval, PairedDifference, RunBootstrap, shift_correlation
from probes.sweep import LAYER_RULE, MIN_VALIDATION_PAIRS

REPORT_FILE = "report.md"
SWEEPS_DIR = "sweeps"  # per training set: the layer sweep (CSV) that chose each method's layer, and its plot
SCATTER_FILE = "generalization_vs_zero_shot.png"
BARS_FILE = "methods.png"


@dataclass(frozen=True)
class Report:
    path: Path
    summaries: list[MethodSummary]
    correlation: Correlation
    paper_correlation: Correlation
    bootstrap: RunBootstrap
    correlation_interval: Interval
    layer_warnings: list[str]
    fit_warnings: list[str] = field(default_factory=list)  # degenerate fits, hardly trained TTC candidates
    sweep_plots: list[Path] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)  # what a missing record of the run leaves unchecked

    def summary_rows(self) -> list[dict]:
        """Per method, for console tables: each mean with its interval's bounds beside it."""
        rows = []
        for s in self.summaries:
            row = {"method": s.method, "n_shifts": s.n_shifts}
            for _, name, _ in MEAN_COLUMNS:
                found = self.bootstrap.mean_interval(s.method, name)
                row.update({name: found.estimate, f"{name}_low": found.low, f"{name}_high": found.high})
            rows.append(row)
        return rows


def _per_method_correlation_lines(rows: Sequence[ResultRow], bootstrap: RunBootstrap) -> list[str]:
    """The paper's statistic: per method, r over shifts of generalization against zero-shot accuracy."""
    body = []
    for method in methods_in_order(bootstrap.counted):
        if method == ZERO_SHOT:
            continue
        n = len({r.shift for r in bootstrap.counted if r.method == method})
        paper = paper_method_correlation(rows, method)
        body.append([method, str(n), _ci(bootstrap.zero_shot_correlation(method)),
                     f"{_num(paper.pearson_r)} (n = {paper.n})" if paper else "no counterpart"])
    return ["**Per method (the paper's statistic: one method's r over shifts).** The paper's 0.7 is LoRA's over its "
            "56 shifts (0.699 from its published numbers); the paper column is the paper's own value for the same "
            "method on this run's shifts.", ""] + _table(["method", "shifts", "r [95% CI]", "paper, same method"],
                                                          body)


def _num(value: float | None, signed: bool = False) -> str:
    if value is None or math.isnan(value):
        return "–"
    value = value if round(value, 3) else 0.0  # no "-0.000"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _ci(found: Interval, signed: bool = False) -> str:
    """'0.479 [0.431, 0.527]', or the estimate alone when its interval is unknown."""
    if not found.known:
        return _num(found.estimate, signed)
    return f"{_num(found.estimate, signed)} [{_num(found.low, signed)}, {_num(found.high, signed)}]"


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    return lines + [""]


def _run_lines(run_dir: Path, info: dict, rows: Sequence[ResultRow],
               evaluations: Mapping[tuple[str, str, str], RowEvaluations] | None, bootstrap: RunBootstrap) -> list[str]:
    lines = [f"# GENIES run report: {run_label(run_dir, info)}", ""]
    for key in ("command", "model", "manifest"):  # each run's start and wall time: the history below
        if key in info:
            value = f"`{info[key]}`" if key == "command" else info[key]
            lines.append(f"- {key.replace('_', ' ')}: {value}")
    from common.model_names import is_alias

    fingerprint = info.get("model_fingerprint") or ("none: an alias names a pinned package or a built-in model"
                                                    if is_alias(str(info.get("model", ""))) else "not recorded")
    lines.append(f"- model name: {run_label(run_dir, info)} (content fingerprint: {fingerprint}; "
                 f"{info.get('n_layers') or 'unknown'} layers: depth = layer / {info.get('n_layers') or 'n_layers'})")
    for number, run in enumerate(info.get("history", []), start=1):
        work = ("reused everything" if not any(run.get(k) for k in ("stores_extracted", "fits_run", "evaluations_run"))
                else f"{run.get('stores_extracted', 0)} stores extracted, {run.get('fits_run', 0)} fits, "
                     f"{run.get('evaluations_run', 0)} evaluations")
        lines.append(f"- run {number} ({run.get('started_at', '?')}): {run.get('wall_time_s', '?')} s, {work}")
    n_shifts = len({(r.source, r.target) for r in rows})
    lines += [f"- run directory: `{run_dir}`", f"- {n_shifts} shifts x {len(methods_in_order(rows))} methods "
              f"({len(rows)} rows of `results.csv`)", *_live_settings_lines(run_dir, methods_in_order(rows)),
              compute_dtype_line(evaluations, info.get("compute_dtype", "auto")), _uncertainty_line(bootstrap), ""]
    return lines


def _live_settings_lines(run_dir: Path, methods: Sequence[str]) -> list[str]:
    """How the live methods were trained, as their run directories under ``fits/`` record it."""
    from finetune.checkpoint import read_record
    from finetune.eval_request import EvalRequest

    lines = []
    for method in methods:
        if method == "few-shot":
            lines.append(f"- few-shot: {EvalRequest(dataset='any').n_shots} shots from the source's train split, "
                         "drawn per test example from the run's seed")
        records = []
        for path in sorted((run_dir / "fits" / method).glob("*/finetune.json")):
            try:
                records.append(read_record(path.parent))
            except UserError:
                continue  # an unsealed or damaged run directory: `genies run` trains it again
        if not records:
            continue
        config, settings = records[0]["config"], records[0]["settings"]
        steps = sorted({int(r["result"]["steps"]) for r in records})
        knobs = (f"LoRA r {config['lora_r']}, alpha {config['lora_alpha']}, dropout {config['lora_dropout']} on "
                 f"{'/'.join(settings.get('lora_target_modules', []))}" if method == "lora"
                 else f"{config['n_virtual_tokens']} virtual tokens")
        lines.append(f"- {method}: {knobs}, lr {records[0]['result']['learning_rate']:g}, "
                     f"{'-'.join(map(str, (steps[0], steps[-1]) if len(steps) > 1 else steps))} steps of "
                     f"{config['batch_size']} pairs, precision {config['precision']}, seed {config['seed']} "
                     f"({len(records)} training sets)")
        lines += barely_trained_lines(method, [r["result"]["losses"] for r in records])
    return lines


def barely_trained_lines(method: str, losses: Sequence[list[float]]) -> list[str]:
    """A warning when a live method's final training loss (last 20% of steps) stayed near chance on some sets."""
    from finetune.train import mean_loss

    final = [mean_loss(run, "last") for run in losses if run]
    barely = [loss for loss in final if loss > CHANCE_LOSS - BARELY_TRAINED_MARGIN]
    if not barely:
        return []
    return [f"- **warning: {method} barely trained on {len(barely)} of {len(final)} training sets**: their final "
            f"training loss is {min(barely):.3f}-{max(barely):.3f}, within {BARELY_TRAINED_MARGIN} of chance "
            f"(ln 2 = {CHANCE_LOSS:.3f}); its comparisons with other methods say little there, and it is never the "
            "target-tuned capability where it barely trained. Train longer (`--train-steps`)."]


def compute_dtype_line(evaluations: Mapping[tuple[str, str, str], RowEvaluations] | None, requested: str) -> str:
    """What the model computed in for the evaluations behind the rows: one dtype, or a warning when they mix
    (stores reused from extractions in another dtype: rounding alone moves per-shift accuracies)."""
    found = {e.key: e.compute_dtype for row in (evaluations or {}).values()
             for e in (row.generalization, row.source, row.zero_shot, row.target_tuned)}
    counts = Counter(dtype or "not recorded" for dtype in found.values())
    if not counts:
        return f"- compute dtype: not known (no per-example evaluations kept; requested {requested})"
    if set(counts) == {"not recorded"}:
        return f"- compute dtype: not recorded (evaluations made before it was; requested {requested})"
    if len(counts) == 1:
        return f"- compute dtype: {next(iter(counts))} for all {len(found)} evaluations (requested {requested})"
    parts = ", ".join(f"{dtype} for {n}" for dtype, n in counts.most_common())
    return (f"- compute dtype: **mixed** ({parts} of {len(found)} evaluations; requested {requested}): "
            "rounding alone moves per-shift accuracies, so compare methods only within one dtype")


def _uncertainty_line(bootstrap: RunBootstrap) -> str:
    what = (f"- uncertainty: [low, high] = {LEVEL:.0%} percentile bootstrap interval, {bootstrap.n_bootstrap} "
            f"replicates, seed {bootstrap.seed}; ")
    if bootstrap.example_level:
        return (what + "per shift: test examples resampled; means over shifts: shifts, then examples, resampled. "
                + "Each row's interval holds " + _covers_text(bootstrap.rows) + ".")
    return what + (f"**only {bootstrap.rows_with_outcomes} of {len(bootstrap.rows)} rows kept per-example outcomes** "
                   f"(`{ROW_OUTCOMES_FILE}`; runs made before they were kept): per-shift intervals are unknown for "
                   "the others, and means over shifts resample shifts only there, so those intervals are too narrow. "
                   "Rerunning the same `genies run` command recomputes the evaluations (no extraction) and adds them.")


def _covers_text(rows: Sequence[ResultRow]) -> str:
    """'test examples + 8 refits on resampled training data (mms, lat); test examples (zero-shot)'."""
    by_cover: dict[str, list[str]] = {}
    for row in rows:
        methods = by_cover.setdefault(row.interval_covers or "test examples", [])
        if row.method not in methods:
            methods.append(row.method)
    return "; ".join(f"{cover} ({', '.join(methods)})" for cover, methods in by_cover.items())


MEAN_COLUMNS = (("generalization", "generalization_accuracy", False), ("source", "source_accuracy", False),
                ("zero-shot", "zero_shot_accuracy", False), ("DE", "differential_elicitation", True),
                ("El", "elicitation", False))


def _summary_lines(summaries: Sequence[MethodSummary], paper: dict[str, PaperComparison],
                   bootstrap: RunBootstrap) -> list[str]:
    header = ["method", "shifts", *(short for short, _, _ in MEAN_COLUMNS), "AUROC", "Brier", "RMS cal.",
              f"paper {PAPER_MODEL} (intervention, shifts)", "paper generalization", "paper DE"]
    body = []
    for s in summaries:
        p = paper.get(s.method)
        body.append([s.method, s.n_shifts,
                     *(_ci(bootstrap.mean_interval(s.method, name), signed) for _, name, signed in MEAN_COLUMNS),
                     _num(s.auroc), _num(s.brier), _num(s.rms_calibration_error),
                     f"{p.intervention}, {p.n_shifts}" if p else "–",
                     _num(p.generalization_accuracy) if p else "–", _num(p.differential_elicitation, True) if p else "–"])
    return ["## Per-method means over the manifest", ""] + _table(header, body)


def _counterpart_lines(methods: Sequence[str]) -> list[str]:
    """Which of this run's methods sit in a paper column (the same method) and which do not, and why."""
    lines = ["## Paper counterparts", "",
             f"A method of this run is compared with the paper's {PAPER_MODEL} figures only where it is the same "
             "method (settings may differ: see the notes).", ""]
    body = []
    counterparts = registry.paper_counterparts()
    for method in methods:
        if method in counterparts:
            body.append([method, counterparts[method], "yes"])
        else:
            spec = registry.all_methods().get(method)
            why = spec.paper_note if spec and spec.paper_note else "no counterpart in the paper"
            body.append([method, "–", f"no: {why}"])
    lines += _table(["method", "paper intervention", "comparable"], body)
    covered = {counterparts[m] for m in methods if m in counterparts}
    missing = [i for i in INTERVENTIONS if i not in covered]
    if missing:
        lines += [f"Paper interventions without a comparable method in this run: {', '.join(missing)}.", ""]
    return lines


def _difference_lines(bootstrap: RunBootstrap) -> list[str]:
    lines = ["## Which differences are resolved", "",
             f"Every pair of methods: the mean over shared shifts of (A - B), with a paired {LEVEL:.0%} bootstrap "
             "interval (the same shift and example resamples for both methods). Resolved: the interval excludes 0. "
             "Wins: shifts where A (or B) is higher.", ""]
    header = ["A", "B", "shifts", "generalization A - B", "resolved", "wins A / B / ties", "DE A - B", "resolved",
              "wins A / B / ties"]
    body = []
    for gen, de in zip(bootstrap.differences("generalization_accuracy"), bootstrap.differences("differential_elicitation")):
        body.append([gen.a, gen.b, gen.n_shifts, _ci(gen.difference, True), _resolved(gen),
                     f"{gen.a_wins} / {gen.b_wins} / {gen.ties}", _ci(de.difference, True), _resolved(de),
                     f"{de.a_wins} / {de.b_wins} / {de.ties}"])
    resolved = [d for d in bootstrap.differences("generalization_accuracy") if d.resolved]
    summary = ("Resolved generalization differences: " + (", ".join(
        f"{d.a} {'>' if d.difference.estimate > 0 else '<'} {d.b}" for d in resolved) or "none") + ".")
    return lines + _table(header, body) + [summary, ""]


def _resolved(difference: PairedDifference) -> str:
    if not difference.difference.known:
        return "–"
    return "**yes**" if difference.resolved else "no"


def _group_lines(title: str, rows: Sequence[ResultRow], group, metrics: Sequence[tuple[str, str, bool]],
                 bootstrap: RunBootstrap) -> list[str]:
    groups = list(dict.fromkeys(group(r) for r in rows))
    shifts = {g: list(dict.fromkeys(r.shift for r in rows if group(r) == g)) for g in groups}
    header = ["method"] + [f"{short} {g} ({len(shifts[g])})".strip() for short, _, _ in metrics for g in groups]
    body = [[method] + [_ci(bootstrap.mean_interval(method, name, shifts[g], name=g), signed)
                        for _, name, signed in metrics for g in groups]
            for method in methods_in_order(rows)]
    return [f"## {title}", "", "Column headers give the number of shifts in each group.", ""] + _table(header, body)


def layer_warnings(rows: Sequence[ResultRow]) -> list[str]:
    """One line per (method, training source) whose layer was chosen on fewer than MIN_VALIDATION_PAIRS pairs."""
    small = dict.fromkeys((r.method, r.source, r.layer, r.validation_pairs) for r in rows
                          if r.validation_pairs is not None and r.validation_pairs < MIN_VALIDATION_PAIRS)
    return [f"{method} trained on {source}: {'its top-k layers' if layer is None else f'layer {layer}'} chosen on "
            f"{pairs} validation pairs (< {MIN_VALIDATION_PAIRS})" for method, source, layer, pairs in small]


def _layer_lines(rows: Sequence[ResultRow], warnings: list[str], layer_setting) -> list[str]:
    chosen = [r for r in rows if r.validation_pairs is not None]
    lines = ["## Layer selection", ""]
    if not chosen:
        if layer_setting in (None, "best") and any(r.layer is not None and r.method != "random" for r in rows):
            return lines + ["`results.csv` records no validation sizes (it predates them): with `--layer best` these "
                            "layers may have been chosen by the earlier rule, the plain argmax of validation accuracy, "
                            f"and their validation sizes are unknown. The current rule is the {LAYER_RULE}.", ""]
        return lines + ["No layer in this run was chosen on validation data (a fixed `--layer`).", ""]
    sizes = sorted({r.validation_pairs for r in chosen})
    lines += [f"With `--layer best` each probe's layer is the {LAYER_RULE}, on a validation split of the source's "
              f"training data (never a test split); the chance baseline random takes the middle layer; lat-stim and "
              f"lat-stim-1 keep their top-k layers by accuracy on such a split. Validation "
              f"splits here hold {sizes[0]} to {sizes[-1]} pairs (the `validation pairs` column below). Below "
              f"{MIN_VALIDATION_PAIRS} pairs the standard error of a validation accuracy exceeds 0.05, and the layer "
              "choice is mostly noise.", ""]
    if warnings:
        lines += [f"**Warning: {len(warnings)} layer choices rest on fewer than {MIN_VALIDATION_PAIRS} validation "
                  "pairs:**", ""] + [f"- {w}" for w in warnings] + [""]
    return lines


def run_label(run_dir: Path, info: Mapping) -> str:
    """A run's short model name: the one run.json records, else derived from its model (never a long path)."""
    from common.model_names import model_name

    if info.get("model_name"):
        return str(info["model_name"])
    return model_name(str(info["model"])) if info.get("model") else Path(run_dir).name


def ttc_lines(rows: Sequence[ResultRow], ttc_methods: Sequence[str] | None = None) -> list[str]:
    """Per target reference: the method taken as its target-tuned capability, why, and which were left out;
    ``ttc_methods``: the candidates the run fixed (None: a run made before they were fixed, every method it ran)."""
    candidates = (f"of a fixed set, the same whatever `--methods` asks for (`--ttc-methods`: "
                  f"{', '.join(ttc_methods)})" if ttc_methods else
                  "of the methods this run ran (made before the candidates were fixed: DE and El change with "
                  "`--methods`)")
    lines = ["## Target-tuned capability (what DE and El divide by)", "",
             f"TTC is the best method, {candidates}, trained and tested on the target reference's own splits. Not "
             "eligible: chance baselines (they measure no capability), live methods whose final training loss stayed "
             f"within {BARELY_TRAINED_MARGIN} of chance (ln 2), and degenerate fits (constant scores, no separation of "
             "their own training pairs, a calibration temperature at its bound).", ""]
    untrained_kinds = (registry.Kind.STORE_BASELINE, registry.Kind.LIVE_UNTRAINED)
    specs = registry.all_methods()
    trained = [m for m in (ttc_methods or methods_in_order(rows)) if m in specs and specs[m].counts_as_capability
               and specs[m].kind not in untrained_kinds]
    body, untrained = [], []
    for reference in dict.fromkeys(r.target_reference for r in rows):
        row = next(r for r in rows if r.target_reference == reference)
        method = row.target_tuned_method or "not recorded"
        why = "best accuracy among the eligible methods"
        if method in specs and specs[method].kind in untrained_kinds:
            left_out = set(excluded_methods(row.target_tuned_excluded))
            if not trained:
                why = f"the run has no trained method: {method} (untrained) is the TTC"
            elif all(m in left_out for m in trained):
                why = f"no trained method qualifies (all left out): {method} (untrained) is the TTC"
                untrained.append(reference)
            else:
                why = f"{method} (untrained) was more accurate than every eligible trained method"
        body.append([reference, method, _num(row.target_tuned_capability), why, row.target_tuned_excluded or "–"])
    lines += _table(["reference", "TTC method", "TTC", "why", "left out (why)"], body)
    if untrained:
        lines += [f"**No trained method qualifies as the TTC on {len(untrained)} reference(s)** "
                  f"({', '.join(untrained)}): every trained method was left out there, and DE divides by an "
                  "untrained baseline's accuracy.", ""]
    return lines


def degenerate_warnings(rows: Sequence[ResultRow]) -> list[str]:
    """One line per (method, source) whose fit or scores are degenerate: its numbers are not ordinary results."""
    found = dict.fromkeys((r.method, r.source, r.degenerate) for r in rows if r.degenerate)
    return [f"{method} trained on {source}: degenerate fit ({why}); its accuracies are not results"
            for method, source, why in found]


def degenerate_counts(rows: Sequence[ResultRow]) -> dict[str, tuple[int, int]]:
    """Per method with degenerate rows: (degenerate rows, all its rows)."""
    return {method: (sum(1 for r in rows if r.method == method and r.degenerate),
                     sum(1 for r in rows if r.method == method))
            for method in methods_in_order(rows) if any(r.method == method and r.degenerate for r in rows)}


def _degenerate_lines(warnings: list[str], counts: Mapping[str, tuple[int, int]], kept: bool) -> list[str]:
    if not warnings:
        return []
    where = ("the means, differences and correlations above count them (`--keep-degenerate`), as the method's failure "
             "there" if kept else "the means, differences and correlations above leave them out (`--keep-degenerate` "
             "puts them back)")
    per_method = ", ".join(f"{method} {n} of {total} shifts" for method, (n, total) in counts.items())
    return ["## Degenerate fits", "",
            f"**Warning: {len(warnings)} fit(s) are degenerate.** Constant scores tie every pair; a fit that does "
            "not separate its own training pairs points nowhere in particular; a calibration temperature at its "
            "bound makes every P(best) 0.5. The per-shift table marks them `degenerate` instead of showing them as "
            f"numbers; {where}. Degenerate rows: {per_method}.", ""] + [f"- {w}" for w in warnings] + [""]


def _sweep_lines(plots: Sequence[Path], run_dir: Path) -> list[str]:
    if not plots:
        return []
    lines = ["### Layer sweeps", "", "Validation accuracy by relative depth (layer / n_layers) on each training "
             "set's validation split, with 95% bootstrap bands; the dot marks the chosen layer.", ""]
    for plot in plots:
        relative = plot.relative_to(run_dir).as_posix()
        lines.append(f"- {plot.stem}: [{relative}]({relative})")
    return lines + [""]


def _shift_lines(rows: Sequence[ResultRow], bootstrap: RunBootstrap) -> list[str]:
    header = ["#", "shift", "label", "category", "method", "layer", "depth", "validation pairs", "generalization", "source",
              "zero-shot", "TTC (best method)", "DE", "El", "AUROC", "RMS cal.", f"paper {PAPER_MODEL} generalization",
              "paper DE"]
    body = []
    shifts = list(dict.fromkeys(r.shift for r in rows))
    for r in rows:
        p = paper_figure(r.source, r.target, r.method)
        reference = "" if r.target_reference == r.target else f" [ref {r.target_reference}]"
        ttc = _ci(bootstrap.row_interval(r, "target_tuned_capability"))
        ttc = f"{ttc} ({r.target_tuned_method})" if r.target_tuned_method else ttc
        own = ("generalization_accuracy", "source_accuracy", "differential_elicitation", "elicitation")
        cell = {m: ("**degenerate**" if r.degenerate and m in own else _ci(bootstrap.row_interval(r, m), signed))
                for m, signed in (("generalization_accuracy", False), ("source_accuracy", False),
                                  ("zero_shot_accuracy", False), ("differential_elicitation", True),
                                  ("elicitation", False))}
        body.append([shifts.index(r.shift) + 1, f"{r.source} -> {r.target}{reference}", r.label, r.category, r.method,
                     "" if r.layer is None else r.layer, "" if r.depth is None else f"{r.depth:.2f}",
                     "" if r.validation_pairs is None else r.validation_pairs,
                     cell["generalization_accuracy"], cell["source_accuracy"], cell["zero_shot_accuracy"],
                     ttc, cell["differential_elicitation"], cell["elicitation"],
                     "–" if r.degenerate else _num(r.auroc), "–" if r.degenerate else _num(r.rms_calibration_error),
                     _num(p.generalization_accuracy) if p else "–",
                     _num(p.differential_elicitation, True) if p else "–"])
    return ["## Per-shift results", "", "`#` numbers the shifts as in the scatter plot.", ""] + _table(header, body)


NOTES = [
    "## Notes",
    "",
    "- generalization: trained on the source, tested on the target's test split; source: the same fit on the source's "
    "test split; zero-shot: the untrained log-likelihood baseline on the target; TTC: the best method trained and "
    "tested on the target reference's own splits; DE = (generalization - zero-shot) / TTC; El = generalization / TTC.",
    "- layer: the probe's layer; with `--layer best`, chosen per method and source on a validation split of the "
    "source's training data (never a test split), except the chance baseline random, which takes the middle layer "
    "(see Layer selection).",
    "- Paper figures: llama-30b from the GENIES reference results (`manifests/paper-results.csv`). Same methods: "
    + ", ".join(f"{m} = {i}" for m, i in registry.paper_counterparts().items()) + ". The paper's LAT (lat_stim_1/2) is a "
    "class-mean difference over its top-16 layers, not PCA; its ccs accuracy is per response with the sign chosen on "
    "the target; its live methods ran on llama-30b in 4-bit with their own step counts; its TTC is re-derived as a "
    "best-of-interventions maximum (see manifests/README.md).",
    "- Intervals (genies/uncertainty.py): every evaluation on one test split uses the same example resamples, so "
    "methods on a shift, and generalization with zero-shot in DE, are compared example by example. A method fitted "
    "from stores is refitted `--train-replicates` times on its training examples drawn with replacement, with seeds "
    "of its own (validation split, layer choice, initialisations); each replicate draws one refit per fit and adds "
    "its deviation from the refits' mean to the fit's resampled accuracy, so intervals and paired differences hold "
    "the fit's own variability. random is the mean over its directions, each replicate drawing one: no method "
    "beats chance by the luck of one direction. Live methods are retrained only with `--live-replicates` (their rows "
    "say which). TTC keeps the "
    "method that was best on the full data and resamples the reference's test examples. Means resample shifts, "
    "then examples. AUROC, Brier and RMS calibration error are point estimates (no interval); the paper's figures "
    "have no per-example outcomes, so only shifts are resampled for its r.",
    "",
]


def write_report(run_dir: Path, *, n_bootstrap: int = N_BOOTSTRAP, keep_degenerate: bool = False) -> Report:
    """(Re)build RUN_DIR/report.md and its plots from RUN_DIR/results.csv (and outcomes.json, if kept)."""
    run_dir = Path(run_dir)
    return report_from_rows(run_dir, load_run(run_dir), read_row_evaluations(run_dir), n_bootstrap=n_bootstrap,
                            keep_degenerate=keep_degenerate)


def report_from_rows(run_dir: Path, rows: Sequence[ResultRow],
                     evaluations: Mapping[tuple[str, str, str], RowEvaluations] | None, *,
                     n_bootstrap: int = N_BOOTSTRAP, keep_degenerate: bool = False) -> Report:
    """Write RUN_DIR/report.md and its plots from the rows of a run and their evaluations (None: no
    per-example outcomes, so only shifts are resampled); `genies run` passes the rows it holds. Means,
    differences and correlations leave degenerate fits out unless ``keep_degenerate``.

    Deterministic: the bootstrap is seeded with the run's seed, so the same inputs give the same bytes."""
    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    bootstrap = RunBootstrap(rows, evaluations, n_bootstrap=n_bootstrap, seed=int(info.get("seed", 0)),
                             keep_degenerate=keep_degenerate)
    summaries = method_summaries(bootstrap.counted)
    paper = paper_comparisons(bootstrap.counted)
    correlation = zero_shot_correlation(bootstrap.counted)
    correlation_interval = bootstrap.zero_shot_correlation()
    paper_correlation = paper_zero_shot_correlation(rows)
    paper_interval = shift_correlation(paper_points(rows), bootstrap.shifts, n_bootstrap=n_bootstrap, seed=bootstrap.seed)
    means = {s.method: bootstrap.mean_interval(s.method, "generalization_accuracy") for s in summaries}
    label = run_label(run_dir, info)
    zero_shot_scatter(rows, bootstrap, correlation_interval, run_dir / SCATTER_FILE, model=label)
    method_bars(means, {m: p.generalization_accuracy for m, p in paper.items()}, run_dir / BARS_FILE,
                resampled="shifts and examples" if bootstrap.example_level else "shifts only", model=label)
    n_layers = info.get("n_layers") or next((r.n_layers for r in rows if r.n_layers), None)
    sweeps = sweep_plots(run_dir / SWEEPS_DIR, rows, n_layers, label, int(info.get("mix_target") or 0))
    lines = _run_lines(run_dir, info, rows, evaluations, bootstrap)
    lines += _summary_lines(summaries, paper, bootstrap)
    lines += _counterpart_lines(methods_in_order(rows))
    lines += _difference_lines(bootstrap)
    lines += _group_lines("Extreme vs probing shifts", rows, lambda r: r.label,
                          [("generalization", "generalization_accuracy", False), ("DE", "differential_elicitation", True)],
                          bootstrap)
    lines += _group_lines("Per category (mean generalization accuracy)", rows, lambda r: r.category,
                          [("", "generalization_accuracy", False)], bootstrap)
    lines += [
        "## Generalization vs zero-shot accuracy", "",
        *_per_method_correlation_lines(rows, bootstrap),
        f"**Pooled over methods (not the paper's statistic).** Pearson r = {_ci(correlation_interval)} over "
        f"{correlation.n} (shift, method) points, every method but {ZERO_SHOT} (interval: "
        f"{'shifts and examples' if bootstrap.example_level else 'shifts only'} resampled). The paper's {PAPER_MODEL} "
        f"results on these shifts, pooled the same way over its interventions, give r = {_ci(paper_interval)} "
        f"(n = {paper_correlation.n}; interval: shifts resampled).", "",
        f"![generalization vs zero-shot]({SCATTER_FILE})", "",
        "## Mean generalization accuracy per method", "", f"![per-method means]({BARS_FILE})", "",
    ]
    warnings = layer_warnings(rows)
    degenerate = degenerate_warnings(rows)
    lines += ttc_lines(rows, info.get("ttc_methods"))
    lines += _degenerate_lines(degenerate, degenerate_counts(rows), keep_degenerate)
    lines += _layer_lines(rows, warnings, info.get("layer")) + _sweep_lines(sweeps, run_dir)
    lines += _shift_lines(rows, bootstrap) + NOTES
    unchecked = unchecked_records(run_dir)
    if unchecked:
        lines += ["## Not checked", "", *(f"- {line}" for line in unchecked), ""]
    path = run_dir / REPORT_FILE
    write_text_atomic(path, "\n".join(lines))
    return Report(path, summaries, correlation, paper_correlation, bootstrap, correlation_interval, warnings,
                  degenerate, sweeps, unchecked)
