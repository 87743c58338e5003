"""Command-line front end: parses arguments, calls the packages, prints. No logic lives here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from actstore.errors import UserError

DATA_DIR_HELP = "Directory holding distributions/ (default: $GENIES_DATA, else the per-user cache); 'demo' = the bundled demo data."


class Group(click.Group):
    """A click group that turns a UserError into one line on stderr and exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as err:
            click.echo(f"error: {err}", err=True)
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


# ----------------------------------------------------------------------------- genies


@click.group(cls=Group)
@click.version_option(package_name="genies-toolkit")
def genies():
    """GENIES benchmark: data, shift manifests and (later) the benchmark runner."""


@genies.group(cls=Group)
def data():
    """Find, list, validate and download GENIES-format distributions."""


@data.command("path")
@click.option("--data-dir", help=DATA_DIR_HELP)
def data_path(data_dir):
    """Print the data directory that commands will use."""
    from actstore.data import resolve_data_dir

    click.echo(resolve_data_dir(data_dir))


@data.command("ls")
@click.option("--data-dir", help=DATA_DIR_HELP)
def data_ls(data_dir):
    """List distributions with train/test example counts and responses per example."""
    from actstore.data import resolve_data_dir
    from actstore.inventory import summarize

    print_table([s.as_row() for s in summarize(resolve_data_dir(data_dir))])


@data.command("validate")
@click.argument("names", nargs=-1)
@click.option("--data-dir", help=DATA_DIR_HELP)
def data_validate(names, data_dir):
    """Check every example of every distribution (or of NAMES); exit 2 if any problem."""
    from actstore.data import resolve_data_dir
    from actstore.inventory import validate_all

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
    from actstore.data import resolve_data_dir
    from actstore.download import download

    target = resolve_data_dir(data_dir)
    count, digest = download(target)
    click.echo(f"{count} distributions in {target} (tarball sha256 {digest})")


@data.command("demo")
@click.option("--out", type=click.Path(path_type=Path), help="Where to write it (default: the per-user cache).")
def data_demo(out):
    """Write the bundled demo mini-benchmark (deterministic) and print its directory."""
    from actstore.demo_data import ensure_demo_data

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


# ----------------------------------------------------------------------------- actstore


@click.group(cls=Group)
@click.version_option(package_name="genies-toolkit")
def actstore():
    """Run a model once per dataset and keep its activations in Zarr stores."""


# ----------------------------------------------------------------------------- probes


@click.group(cls=Group)
@click.version_option(package_name="genies-toolkit")
def probes():
    """Fit representation probes on activation stores (never loads a model)."""


# ----------------------------------------------------------------------------- finetune


@click.group(cls=Group)
@click.version_option(package_name="genies-toolkit")
def finetune():
    """Live reward models (LoRA, prompt tuning) and live zero-/few-shot baselines."""
