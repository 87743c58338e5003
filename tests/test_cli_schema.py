"""The command line is generated from the config dataclasses: every command answers --help, a
command's options are its config's documented fields, and a choice is checked in one place."""

import inspect

import click
import pytest
from click.testing import CliRunner

import cli
from common import UserError
from common.settings import Configured, documented_fields, option_name

GROUPS = {"actstore": cli.actstore, "probes": cli.probes, "finetune": cli.finetune, "genies": cli.genies}
# A command with more than MAX_PARAMETERS hand-written parameters fails below: its options belong in a config.
MAX_PARAMETERS = 8


def commands(group: click.Group, prefix: str):
    for name, command in group.commands.items():
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            yield from commands(command, path)
        else:
            yield path, command


ALL = [item for name, group in GROUPS.items() for item in commands(group, name)]


@pytest.mark.parametrize("path,command", ALL, ids=[path for path, _ in ALL])
def test_every_command_answers_help(path, command):
    group_name, *words = path.split()
    result = CliRunner().invoke(GROUPS[group_name], [*words, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and "--help" in result.output


@pytest.mark.parametrize("path,command", ALL, ids=[path for path, _ in ALL])
def test_no_command_takes_many_parameters_by_hand(path, command):
    own = inspect.signature(command.callback).parameters
    assert len(own) <= MAX_PARAMETERS, (path, list(own))


CONFIGURED = [(path, command) for path, command in ALL if isinstance(command, Configured)]


def test_the_benchmark_finetune_and_import_commands_are_generated():
    assert {path for path, _ in CONFIGURED} >= {"genies run", "finetune train", "finetune eval", "genies data import",
                                                "actstore extract", "probes fit", "probes sweep"}


@pytest.mark.parametrize("path,command", CONFIGURED, ids=[path for path, _ in CONFIGURED])
def test_generated_options_are_the_documented_fields(path, command):
    documented = {option_name(field).split("/")[0] for _, field, _ in documented_fields(command.config_class)
                  if not field.metadata["argument"]}
    generated = {p.opts[0] for p in command.params if isinstance(p, click.Option) and p.name != "as_json"}
    assert generated == documented
    assert all(p.help for p in command.params if isinstance(p, click.Option))


@pytest.mark.parametrize("group,args,config,settings", [
    ("genies", ["run", "--model", "m", "--out", "x", "--prompt-format", "jinja"],
     "genies.plan:RunConfig", dict(model="m", prompt_format="jinja")),
    ("finetune", ["train", "--method", "lora", "--dataset", "d", "--precision", "fp8"],
     "finetune.train:TrainConfig", dict(method="lora", dataset="d", precision="fp8")),
    ("genies", ["data", "import", "some.json", "--name", "n", "--format", "xml"],
     "distributions.importing:ImportConfig", dict(source="some.json", name="n", format="xml")),
])
def test_a_choice_is_checked_once_by_the_config(group, args, config, settings):
    """The command line and Python callers meet the same check and the same one-line message."""
    import importlib

    module, name = config.split(":")
    with pytest.raises(UserError) as raised:
        getattr(importlib.import_module(module), name)(**settings)
    result = CliRunner().invoke(GROUPS[group], args)
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {raised.value}"
    assert str(raised.value).startswith("unknown --")


def test_settings_keep_their_types_and_parsers(tmp_path):
    """Parsing only (the run itself: test_genies_runner): --layer becomes a number, --methods a tuple."""
    from common.settings import build_config
    from genies.plan import DEFAULT_METHODS, RunConfig

    command = cli.genies.commands["run"]
    context = command.make_context("run", ["--model", "m", "--out", str(tmp_path), "--layer", "3", "--methods", "paper,lat"])
    values = {path: context.params["__".join(path)] for path, _, _ in command.entries}
    config = build_config(RunConfig, values)
    assert config.layer == 3 and config.methods[-1] == "lat" and "few-shot" in config.methods
    assert config.out == tmp_path and config.limit is None
    assert build_config(RunConfig, {("model",): "m", ("methods",): ",".join(DEFAULT_METHODS)}).methods == DEFAULT_METHODS
