"""`make demo`: the toolkit end to end on the bundled model and the bundled demo data."""

from __future__ import annotations

import click

from actstore.demo_data import ensure_demo_data
from actstore.inventory import summarize
from actstore.models import load_model
from cli import print_table
from manifests import load_manifest

MODEL = "smollm2-135m"


def main() -> None:
    data_dir = ensure_demo_data()
    click.echo(f"Demo data: {data_dir}")
    print_table([s.as_row() for s in summarize(data_dir)])
    click.echo("\nDemo shifts (manifests/demo.json):")
    print_table([vars(s) for s in load_manifest("demo")], ["source", "target", "target_reference", "label", "category"])
    loaded = load_model(MODEL)
    config = loaded.model.config
    click.echo(
        f"\nModel {MODEL}: {type(loaded.model).__name__}, {config.num_hidden_layers} layers, "
        f"d={config.hidden_size}, {config.num_attention_heads} heads, vocab {config.vocab_size}"
    )


if __name__ == "__main__":
    main()
