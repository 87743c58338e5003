"""A model a user points at that cannot be read or used: one `error:` line (exit 2), no store made."""

import importlib.util
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from actstore.models import tiny_random_llama
from cli import actstore
from conftest import TOY_EXAMPLES, write_distribution


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_distribution(tmp_path_factory.mktemp("data"), "toy", TOY_EXAMPLES, TOY_EXAMPLES)


def saved_tiny(directory: Path) -> Path:
    tiny = tiny_random_llama()
    tiny.model.save_pretrained(directory)
    tiny.tokenizer.save_pretrained(directory)
    return directory


def refusal(model, data_dir, out: Path, *extra) -> str:
    result = CliRunner().invoke(actstore, ["extract", "--model", str(model), "--dataset", "toy", "--data-dir",
                                           str(data_dir), "--out", str(out), "--no-progress", *extra])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert not list(out.rglob("*.zarr"))
    return lines[0]


def truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def test_a_truncated_safetensors_checkpoint(tmp_path, data_dir):
    model = saved_tiny(tmp_path / "model")
    weights = model / "model.safetensors"
    truncate(weights, weights.stat().st_size // 2)
    assert refusal(model, data_dir, tmp_path / "s").startswith(f"error: {model}: cannot load a model from it (")


@pytest.mark.parametrize("keep", [1000, 30_000_000])
def test_a_truncated_gguf_file(tmp_path, data_dir, keep):
    from actstore.models import DEFAULT_MODEL, model_aliases

    alias = model_aliases()[DEFAULT_MODEL]  # the bundled GGUF, which `make install` always installs
    gguf = Path(list(importlib.util.find_spec(alias["package"]).submodule_search_locations)[0]) / alias["gguf_file"]
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(gguf.read_bytes()[:keep])
    assert refusal(cut, data_dir, tmp_path / "s").startswith(f"error: {cut}: cannot load a model from it (")


@pytest.mark.parametrize("template, reason", [
    ("{% for m in messages %}{{ raise_exception('no user turns here') }}{% endfor %}", "no user turns here"),
    ("{% for m in messages %}{{ m['content'] }", "TemplateSyntaxError"),
])
def test_a_chat_template_that_raises_or_does_not_parse(tmp_path, data_dir, template, reason):
    model = saved_tiny(tmp_path / "model")
    config_path = model / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = template
    config_path.write_text(json.dumps(config))
    line = refusal(model, data_dir, tmp_path / "s", "--prompt-format", "chat")
    assert "its chat template fails" in line and reason in line and "--prompt-format raw" in line


def test_a_checkpoint_missing_a_tensor_is_refused_not_randomly_initialised(tmp_path, data_dir):
    import torch
    from safetensors.torch import load_file, save_file

    model = saved_tiny(tmp_path / "model")
    weights = load_file(model / "model.safetensors")
    del weights["model.layers.1.mlp.up_proj.weight"]
    weights["model.extra.weight"] = torch.zeros(2)
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    line = refusal(model, data_dir, tmp_path / "s")
    assert "1 missing (model.layers.1.mlp.up_proj.weight)" in line and "1 unexpected (model.extra.weight)" in line
