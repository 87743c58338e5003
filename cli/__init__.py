"""Command-line front end: parses arguments, calls the packages, prints. No logic lives here."""

from __future__ import annotations

import errno
import functools
import json
import sys
from pathlib import Path

import click

from common import UserError
from actstore.store.locations import STORE_HELP
from common.settings import Configured
from distributions.data import DATA_DIR_HELP


# A file system refusal of a path the user named: said in one line, like any other mistake in the input.
PLACE_ERRORS = (errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENAMETOOLONG, errno.ENOENT,
                errno.ENOSPC, errno.EDQUOT)


class Group(click.Group):
    """A click group that turns a UserError (or a file system refusal of a named path) into one line on
    stderr and exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as err:
            click.echo(f"error: {err}", err=True)
            ctx.exit(2)
        except OSError as err:
            if err.errno not in PLACE_ERRORS or not err.filename:
                raise
            click.echo(f"error: {err.filename}: {err.strerror}", err=True)
            ctx.exit(2)


def print_table(rows: list[dict], columns: list[str] | None = None) -> None:
    if not rows:
        return
    columns = columns or list(rows[0])
    cells = [[_fmt(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    click.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip())
    for r in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)



def _store_name_options(command):
    """--store-root, --limit and --prompt-format: where store names (MODEL/DATASET/SPLIT[/VIEW]) are
    looked up; the command receives them as one ``names`` (a ``StoreNames``)."""
    from actstore.engine.views import PROMPT_FORMATS

    @functools.wraps(command)
    def with_names(*args, store_root, names_limit, names_prompt_format, **kwargs):
        from actstore.store.locations import StoreNames

        return command(*args, names=StoreNames(store_root, names_limit, names_prompt_format), **kwargs)

    with_names = click.option("--prompt-format", "names_prompt_format", type=click.Choice(PROMPT_FORMATS),
                              default="raw", show_default=True,
                              help="Store names refer to stores extracted with this --prompt-format.")(with_names)
    with_names = click.option("--limit", "names_limit", type=int,
                              help="Names refer to stores of at least N examples (and their earlier "
                                   "names, <split>.limit<N>...).")(with_names)
    return click.option("--store-root", help="Where store names are looked up (default: the per-user store "
                                             "directory).")(with_names)


# ----------------------------------------------------------------------------- genies


@click.group(cls=Group)
@click.version_option(package_name="genies-toolkit")
def genies():
    """GENIES benchmark: data, shift manifests, the benchmark runner, reports and run comparisons."""


@genies.group(cls=Group)
def data():
    """Find, list, validate and download GENIES-format distributions."""


@data.command("path")
@click.option("--data-dir", help=DATA_DIR_HELP)
def data_path(data_dir):
    """Print the data directory that commands will use."""
    from distributions.data import resolve_data_dir

    click.echo(resolve_data_dir(data_dir))


@data.command("ls")
@click.option("--data-dir", help=DATA_DIR_HELP)
def data_ls(data_dir):
    """List distributions with train/test example counts and responses per example."""
    from distributions.data import resolve_data_dir
    from distributions.inventory import summarize

    print_table([s.as_row() for s in summarize(resolve_data_dir(data_dir))])


@data.command("validate")
@click.argument("names", nargs=-1)
@click.option("--data-dir", help=DATA_DIR_HELP)
def data_validate(names, data_dir):
    """Check every example of every distribution (or of NAMES); exit 2 if any problem."""
    from distributions.data import resolve_data_dir
    from distributions.inventory import validate_all

    report = validate_all(resolve_data_dir(data_dir), names)
    for problem in report.problems:
        click.echo(str(problem), err=True)
    if report.problems:
        click.echo(f"{len(report.problems)} problem(s) in {report.n_bad} of {report.n_checked} distributions", err=True)
        sys.exit(2)
    click.echo(f"{report.n_checked} distributions valid")


@data.command("download")
@click.option("--data-dir", help=DATA_DIR_HELP)
def data_download(data_dir):
    """Fetch the official GENIES tarball, check it and unpack it into the data directory."""
    from distributions.data import resolve_data_dir
    from distributions.download import download

    target = resolve_data_dir(data_dir).write_to
    count, digest = download(target)
    click.echo(f"{count} distributions in {target} (tarball sha256 {digest})")


@data.command("import", cls=Configured, config="distributions.importing:ImportConfig")
def data_import(config):
    """Import SOURCE (JSON, JSONL, CSV, Parquet, or a saved `datasets` directory) as distribution NAME."""
    from distributions.importing import import_distribution

    result = import_distribution(config, on_rejected=lambda rejected: click.echo(f"rejected: {rejected}", err=True))
    for line in result.contradictions:
        click.echo(f"warning: {line}", err=True)
    contradicting = f"; {len(result.contradictions)} row(s) contradict an earlier one" if result.contradictions else ""
    click.echo(f"{result.directory}: {result.n_train} train + {result.n_test} test examples ({result.format} format); "
               f"{len(result.rejected)} row(s) rejected{contradicting}")


@data.command("demo")
@click.option("--out", type=click.Path(path_type=Path), help="Where to write it (default: the per-user cache).")
def data_demo(out):
    """Write the bundled demo mini-benchmark (deterministic) and print its directory."""
    from distributions.demo_data import ensure_demo_data

    click.echo(ensure_demo_data(out))


@genies.group(cls=Group)
def shifts():
    """Shift manifests: source -> target pairs with label and category."""


@shifts.command("ls")
@click.option("--manifest", default="genies", show_default=True, help="genies, all, demo, or a manifest JSON file.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def shifts_ls(manifest, as_json):
    """Print the shifts of a manifest."""
    from dataclasses import asdict

    from manifests import load_manifest

    rows = [asdict(s) for s in load_manifest(manifest)]
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    print_table(rows, ["source", "target", "target_reference", "label", "category"])
    click.echo(f"{len(rows)} shifts")


@genies.command("run", cls=Configured, config="genies.plan:RunConfig")
def genies_run(config):
    """Run the benchmark: plan, extract, fit, evaluate; write RUN_DIR/results.csv and report.md."""
    import shlex

    from genies.runner import resolve_config, run_benchmark

    if config.plan_only:
        from actstore.engine.resource_plan import plan_lines
        from genies.resources import run_resource_plan

        for line in plan_lines(run_resource_plan(resolve_config(config))):
            click.echo(line)
        return
    command = "genies " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    summary = run_benchmark(config, command=command, log=click.echo)
    if summary is None:  # a process other than rank 0 of a launch in several processes: rank 0 reports
        return
    click.echo("")
    print_report_summary(summary.report)
    click.echo(f"report: {summary.report.path}  results: {summary.results_path}")


def with_interval(estimate, low, high) -> str:
    """'0.479 [0.431, 0.527]'; the estimate alone when the bounds are unknown."""
    if estimate is None:
        return ""
    if low is None or high is None or low != low or high != high:
        return f"{estimate:.3f}"
    return f"{estimate:.3f} [{low:.3f}, {high:.3f}]"


def print_report_summary(report) -> None:
    """Per-method means with their 95% bootstrap intervals, and the generalization-vs-zero-shot r."""
    rows = report.summary_rows()
    metrics = [("generalization", "generalization_accuracy"), ("source", "source_accuracy"),
               ("zero_shot", "zero_shot_accuracy"), ("DE", "differential_elicitation"), ("El", "elicitation")]
    print_table([{"method": r["method"], "shifts": r["n_shifts"],
                  **{short: with_interval(r[name], r[f"{name}_low"], r[f"{name}_high"]) for short, name in metrics}}
                 for r in rows])
    click.echo("[low, high]: 95% bootstrap interval (shifts, then test examples, and the refits of fitted methods "
               "or random's directions, resampled; report.md says which for each method)")
    r = report.correlation_interval
    click.echo(f"generalization vs zero-shot: Pearson r = {with_interval(r.estimate, r.low, r.high) if r.estimate == r.estimate else 'n/a'} "
               f"(n = {report.correlation.n}; 95% bootstrap interval)")
    for warning in [*report.layer_warnings, *report.fit_warnings]:
        click.echo(f"warning: {warning}")


KEEP_DEGENERATE_HELP = "Count degenerate fits in means, differences and correlations (default: listed, left out)."


@genies.command("report")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--keep-degenerate", is_flag=True, help=KEEP_DEGENERATE_HELP)
def genies_report(run_dir, keep_degenerate):
    """Rebuild RUN_DIR/report.md and its plots from RUN_DIR/results.csv."""
    from genies.report import write_report

    report = write_report(run_dir, keep_degenerate=keep_degenerate)
    print_report_summary(report)
    for line in report.unchecked:
        click.echo(f"not checked: {line}")
    click.echo(f"wrote {report.path}")


@genies.command("compare")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path),
              help="Comparison directory to write (default: compare-<runs> beside the first run; an earlier "
                   "comparison there is replaced).")
@click.option("--bootstrap", type=int, default=2000, show_default=True, help="Bootstrap replicates per interval.")
@click.option("--keep-degenerate", is_flag=True, help=KEEP_DEGENERATE_HELP)
def genies_compare(runs, out, bootstrap, keep_degenerate):
    """Compare two or more runs (e.g. two models): per-method means by model, and per pair of runs the
    correlation of per-shift generalization and the mean difference, with 95% intervals; writes compare.md,
    compare.csv and plots to --out."""
    from dataclasses import asdict

    from genies.compare_report import write_comparison

    if bootstrap < 100:
        raise UserError(f"--bootstrap must be at least 100, got {bootstrap}")
    comparison, directory = write_comparison(list(runs), out, n_bootstrap=bootstrap, keep_degenerate=keep_degenerate)
    if comparison.means:
        print_table([{"method": m.method, "run": m.run, "shifts": m.n_shifts,
                      **{short: with_interval(m.means[name].estimate, m.means[name].low, m.means[name].high)
                         for short, name in (("generalization", "generalization_accuracy"),
                                             ("DE", "differential_elicitation"), ("source", "source_accuracy"))}}
                     for m in comparison.means])
        click.echo("")
    for pair in comparison.pairs:
        if not pair.comparisons:
            click.echo(f"A = {pair.a}, B = {pair.b}: not compared (no shared (shift, method) rows)")
            continue
        print_table([asdict(c) for c in pair.comparisons], ["method", "n", "pearson_r", "r_low", "r_high", "mean_a",
                                                            "mean_b", "difference", "difference_low",
                                                            "difference_high"])
        click.echo(f"A = {pair.a}, B = {pair.b}; pearson_r over per-shift generalization accuracy; difference = "
                   "mean_b - mean_a; _low/_high: 95% bootstrap interval (shifts resampled jointly, examples within "
                   "each run)")
    for line in comparison.left_out:
        click.echo(f"left out: {line}")
    for warning in comparison.warnings:
        click.echo(f"warning: {warning}")
    for line in comparison.degenerate:
        click.echo(f"warning: degenerate fit: {line}")
    for line in comparison.unchecked:
        click.echo(f"not checked: {line}")
    click.echo(f"wrote {directory} (compare.md, compare.csv and plots)")
    for note in comparison.software_notes:
        click.echo(note)


@genies.command("demo")
def genies_demo():
    """`make demo`: the toolkit end to end on the bundled model and demo data, under ./demo-out (reused when rerun)."""
    import time
    from dataclasses import asdict

    from distributions.data import resolve_data_dir
    from genies.demo import OUT, SWEEP_SHIFT, demo_command, demo_config, layer_sweep_plot
    from distributions.inventory import summarize
    from genies.runner import run_benchmark
    from manifests import load_manifest

    started = time.perf_counter()
    data_dir = resolve_data_dir("demo")
    click.echo(f"Demo data: {data_dir}")
    print_table([s.as_row() for s in summarize(data_dir)])
    click.echo("\nDemo shifts (manifests/demo.json):")
    print_table([asdict(s) for s in load_manifest("demo")], ["source", "target", "target_reference", "label", "category"])
    config = demo_config()
    command = demo_command(config)
    click.echo(f"\n$ {command}")
    summary = run_benchmark(config, command=command, log=click.echo)
    if summary is None:  # a process other than rank 0 of a launch in several processes: rank 0 reports
        return
    click.echo("\nPer-method means over the demo shifts (95% bootstrap bounds beside each):")
    print_report_summary(summary.report)
    click.echo("\nPer shift:")
    print_table([{"shift": r.shift_name, "method": r.method, "layer": r.layer,
                  "generalization": with_interval(r.generalization_accuracy, *r.interval("generalization_accuracy")),
                  "source": r.source_accuracy, "zero_shot": r.zero_shot_accuracy, "ttc": r.target_tuned_capability,
                  "de": with_interval(r.differential_elicitation, *r.interval("differential_elicitation"))}
                 for r in summary.rows])
    plot = layer_sweep_plot(config, OUT)
    click.echo(f"\nreport: {summary.report.path} (plots beside it: {', '.join(p.name for p in sorted(summary.run_dir.glob('*.png')))})")
    click.echo(f"layer sweep for {' -> '.join(SWEEP_SHIFT)}: {plot}")
    click.echo(f"demo finished in {time.perf_counter() - started:.0f}s")


# ----------------------------------------------------------------------------- actstore


@click.group(cls=Group)
@click.version_option(package_name="genies-toolkit")
def actstore():
    """Run a model once per dataset and keep its activations in Zarr stores."""


@actstore.command("extract", cls=Configured, config="actstore.engine.extraction:ExtractConfig")
def actstore_extract(config):
    """Run MODEL once over each (dataset, split, view) and write one store each; print their paths."""
    from actstore.engine.extraction import extract

    def report(result):
        rate = f", {result.sequences_per_second:.1f} seq/s" if result.sequences_per_second else ""
        computed = f", {result.sequences_computed} computed" if result.status == "grown" else ""
        click.echo(f"{result.url}  ({result.status}: {result.n_sequences} sequences{computed}{rate})")

    def starting(resolved):
        from actstore.models.devices import device_choice

        spec = resolved.model_spec()
        where = spec.device_map if spec.placed else device_choice(spec.device_map)
        click.echo(f"computing in {resolved.compute_dtype} (log-likelihood head in float32) on {where}", err=True)

    extract(config, on_result=report, on_start=starting)


@actstore.command("plan", cls=Configured, config="actstore.engine.resource_plan:PlanRequest")
def actstore_plan(config):
    """What an extraction of MODEL needs, from its config alone (nothing loads): its weights and where they go,
    one pass's memory beside them, the stores' sizes, and whether it fits (if not, the smallest change that would)."""
    from actstore.engine.resource_plan import plan_extraction, plan_lines

    for line in plan_lines(plan_extraction(config)):
        click.echo(line)


@actstore.command("info")
@click.argument("store", metavar="STORE")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--verify", is_flag=True,
              help="Also read every chunk and check each written block against its checksum (exit 2 on damage).")
@_store_name_options
def actstore_info(store, as_json, verify, names):
    """What STORE holds: model, dataset, split, view, layers, sizes, completeness."""
    from dataclasses import asdict

    from actstore.store.info import human_bytes, store_info, verify_store
    from actstore.store.opening import check_named
    from actstore.store.roots import checked_location

    asked, store = store, checked_location(names.url(store), "STORE")
    check_named(store, names.name(asked, store), asked)
    info = store_info(store)
    verified = verify_store(store) if verify else None
    if as_json:
        click.echo(json.dumps({**info.as_dict(), **({"verified": asdict(verified)} if verified else {})}, indent=1))
        return
    for key, value in info.as_dict().items():
        if key == "size_bytes":
            key, value = "size on disk", f"{human_bytes(value)} ({value} bytes)"
        click.echo(f"{key:>12}: {value}")
    if verified:
        click.echo(f"{'verified':>12}: {verified.blocks_checked} written blocks x {verified.columns} arrays match "
                   f"their checksums ({verified.seconds:.2f}s)")


@actstore.command("ls")
@click.argument("root", required=False)
def actstore_ls(root):
    """One line per store under ROOT (default: the per-user store directory)."""
    from actstore.store.info import LS_COLUMNS, list_stores
    from actstore.store.roots import checked_store_root

    infos = list_stores(checked_store_root(root, "ROOT", writing=False))
    print_table([info.as_row() for info in infos], LS_COLUMNS)
    click.echo(f"{len(infos)} stores")


@actstore.command("migrate")
@click.argument("root", required=False)
def actstore_migrate(root):
    """Move stores named with their limit by earlier versions (<split>.limit<N>...) under ROOT (default: the
    per-user store directory) to the one name of their split and view, where a larger --limit grows them."""
    from actstore.store.migration import migrate
    from actstore.store.roots import checked_store_root

    place = checked_store_root(root, "ROOT", writing=True)
    if "://" in place:
        raise UserError(f"{place}: actstore migrate moves stores in a local directory")
    moves = migrate(place)
    for move in moves:
        click.echo(f"{move.source} -> {move.target}" if move.moved else f"{move.source}: stays ({move.reason})")
    click.echo(f"{sum(move.moved for move in moves)} stores moved")


# ----------------------------------------------------------------------------- probes


@click.group(cls=Group)
@click.version_option(package_name="genies-toolkit")
def probes():
    """Fit representation probes on activation stores (never loads a model)."""




@probes.command("methods")
def probes_methods():
    """List the methods, the views they read and whether they take --layer."""
    from probes.commands import method_rows

    print_table(method_rows())


@probes.command("fit", cls=Configured, config="probes.requests:FitRequest")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def probes_fit(config, as_json):
    """Fit METHOD on the train store; metrics on its test split (if extracted) and on each --eval store."""
    from probes.commands import TABLE_COLUMNS, fit_command, jsonable
    from probes.estimator import make_probe

    report = fit_command(make_probe(config.method, config.layer, **config.estimator_options()), config.train,
                         config.eval_stores, config.out, calibration=config.calibration, n_bootstrap=config.bootstrap,
                         seed=config.seed, threads=config.blas_threads, names=config.names())
    if as_json:
        click.echo(json.dumps(jsonable(report.as_dict()), indent=1))
        return
    probe = report.probe.fitted
    click.echo(f"{probe.method} on {probe.scorer.describe()}, fit on {probe.trained_on.get('dataset', config.train)}"
               f"/{probe.trained_on.get('split', '')}; temperature {probe.temperature:.4g}")
    print_table([row.as_dict() for row in report.rows], TABLE_COLUMNS)
    for note in report.notes:
        click.echo(f"note: {note}")
    if report.saved:
        click.echo(f"saved {report.saved}")


@probes.command("eval")
@click.argument("probe_path", type=click.Path(path_type=Path))
@click.option("--eval", "eval_specs", multiple=True, required=True, help="Store to evaluate on (repeatable). " + STORE_HELP)
@click.option("--bootstrap", type=int, default=1000, show_default=True, help="Bootstrap resamples for the accuracy CI (0 = none).")
@click.option("--calibration", type=click.Choice(["binned", "reference"]), default="binned", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_store_name_options
def probes_eval(probe_path, eval_specs, bootstrap, calibration, seed, as_json, names):
    """Score a saved probe on each --eval store (same model and hidden size only)."""
    from common.settings import check_seed
    from probes.commands import TABLE_COLUMNS, eval_command, jsonable

    check_seed(seed)
    probe, rows = eval_command(probe_path, eval_specs, calibration=calibration, n_bootstrap=bootstrap, seed=seed,
                               names=names)
    rows = [row.as_dict() for row in rows]
    if as_json:
        click.echo(json.dumps(jsonable({"method": probe.method, "results": rows}), indent=1))
        return
    print_table(rows, TABLE_COLUMNS)


@probes.command("sweep", cls=Configured, config="probes.requests:SweepRequest")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def probes_sweep(config, as_json):
    """Every method at every layer; best layer per method chosen on a validation split of the train store."""
    from probes.commands import best_layer_rows, jsonable, parse_methods, sweep_command
    from probes.sweep import SweepConfig

    methods = parse_methods(config.methods, **config.estimator_options())
    sweep = SweepConfig(val_fraction=config.val_fraction, seed=config.seed, refit=config.refit,
                        n_bootstrap=config.bootstrap, calibration=config.calibration)
    result, csv_path, png_path = sweep_command(methods, config.train, config.eval_stores, config.out, config.layers,
                                               sweep, threads=config.blas_threads, names=config.names())
    best = best_layer_rows(result)
    if as_json:
        click.echo(json.dumps(jsonable({"best": best, "csv": str(csv_path), "png": str(png_path),
                                        "seconds": result.seconds, "notes": result.notes}), indent=1))
        return
    print_table(best)
    for note in result.notes:
        click.echo(f"note: {note}")
    from probes.sweep import LAYER_RULE, MIN_VALIDATION_PAIRS

    click.echo(f"best_layer: the {LAYER_RULE}; near_ties: how many layers that was")
    if any(b.small_validation for b in result.best):
        click.echo(f"warning: the validation split has fewer than {MIN_VALIDATION_PAIRS} pairs: layer choices are noisy")
    click.echo(f"{len(result.rows)} rows in {csv_path}; plot {png_path}; {result.seconds:.1f} s")


# ----------------------------------------------------------------------------- finetune


@click.group(cls=Group)
@click.version_option(package_name="genies-toolkit")
def finetune():
    """Live reward models (LoRA, prompt tuning) and live zero-/few-shot baselines."""


@finetune.command("train", cls=Configured, config="finetune.train:TrainConfig")
@click.option("--json", "as_json", is_flag=True, help="Print the training result as JSON.")
def finetune_train(config, as_json):
    """Train a reward model (scalar head on the last token) on one (best, other) pair per example."""
    from finetune.train import train_reward_model

    result = train_reward_model(config)
    if not result.is_main_process:
        return
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=1))
        return
    click.echo(
        f"{result.method} on {config.dataset}: {result.steps} steps x {result.batch_size} pairs "
        f"({result.n_train_pairs} training pairs, lr {result.learning_rate:g}), "
        f"loss {result.mean_loss('first'):.4f} -> {result.mean_loss('last'):.4f} (first/last 20% of steps), "
        f"{result.train_seconds:.1f} s training, {result.total_seconds:.1f} s total"
    )
    checkpointing = "on" if result.gradient_checkpointing else "off"
    gpu = f", GPU {result.peak_gpu_bytes / 2**30:.2f} GiB" if result.peak_gpu_bytes is not None else ""
    click.echo(f"peak memory: host {result.peak_host_rss_bytes / 2**30:.2f} GiB{gpu} "
               f"(gradient checkpointing {checkpointing})")
    if result.dropped_examples:
        click.echo(f"dropped {result.dropped_examples} training example(s) longer than the model's context")
    click.echo(f"saved to {result.out_dir}")


@finetune.command("eval", cls=Configured, config="finetune.eval_request:EvalRequest")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def finetune_eval(config, as_json):
    """Accuracy (all best-vs-other pairs), CI, AUROC, Brier and RMS calibration error."""
    from finetune.eval_request import run_eval
    from finetune.evaluate import TABLE_COLUMNS

    result = run_eval(config)
    if as_json:
        click.echo(json.dumps(result.row(), indent=1))
        return
    print_table([result.row()], TABLE_COLUMNS)
    if result.dropped_examples:
        click.echo(
            f"dropped {result.dropped_examples} of {result.n_examples} examples "
            f"({result.dropped_pairs} pairs) longer than the model's context"
        )
