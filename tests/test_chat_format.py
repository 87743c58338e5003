"""--prompt-format chat: prompts rendered by the tokenizer's chat template, kept apart from raw
stores and probes, in extraction, fine-tuning and the runner."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import actstore.models.loading
import genies.runner
from actstore import open_store
from distributions.data import load_split
from common import UserError
from actstore.engine.extraction import ExtractConfig, extract
from actstore.engine.store_identity import recorded_identity
from actstore.engine.views import VIEWS, encode, parse_views
from cli import actstore as actstore_cli
from cli import finetune as finetune_cli
from cli import genies as genies_cli
from cli import probes as probes_cli
from conftest import TOY_EXAMPLES, edit_store_attrs, write_distribution
from finetune.sequences import encode_examples
from probes import make_probe
from probes.sources import StoreSource

# A small template in the usual shape: role markers, and the assistant's turn opened at the end.
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")
LEARNABLE = [{"prompt": f"Is {i} even?", "responses": {"yes" if i % 2 == 0 else "no": 1.0,
                                                       "no" if i % 2 == 0 else "yes": 0.0}} for i in range(12)]


def run(group, *args):
    return CliRunner().invoke(group, [str(a) for a in args])


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def chat_tiny(monkeypatch):
    """tiny-random (a byte tokenizer without a template) given CHAT_TEMPLATE wherever it is loaded by name."""
    original = actstore.models.loading.load_model

    def load_with_template(name, **kwargs):
        loaded = original(name, **kwargs)
        loaded.tokenizer.chat_template = CHAT_TEMPLATE
        return loaded

    def tokenizer_with_template(name):
        tokenizer = original_tokenizer(name)
        tokenizer.chat_template = CHAT_TEMPLATE
        return tokenizer

    original_tokenizer = actstore.models.loading.load_tokenizer
    monkeypatch.setattr(actstore.models.loading, "load_model", load_with_template)
    monkeypatch.setattr(genies.runner, "load_tokenizer", tokenizer_with_template)
    return load_with_template("tiny-random")


@pytest.fixture
def data_dir(tmp_path):
    return write_distribution(tmp_path / "data", "toy", train=LEARNABLE, test=TOY_EXAMPLES)


def test_chat_encoding_is_the_user_turn_then_the_response(chat_tiny):
    tokenizer = chat_tiny.tokenizer
    [chat] = parse_views("plain", "chat")
    prompt_ids, continuation = encode(tokenizer, chat, "Add 2 and 3.", "5")
    assert tokenizer.decode(prompt_ids) == "<|user|>Add 2 and 3.\n<|assistant|>"
    assert continuation == encode(tokenizer, VIEWS["plain"], "Add 2 and 3.", "5")[1]  # the response is unchanged
    with pytest.raises(UserError, match="unknown --prompt-format 'jinja'"):
        parse_views("plain", "jinja")


def test_chat_store_differs_from_raw_lives_beside_it_and_records_its_format(chat_tiny, data_dir, tmp_path):
    settings = dict(model="tiny-random", datasets=("toy",), splits=("test",), data_dir=str(data_dir),
                    out=str(tmp_path / "stores"), progress=False, compute_dtype="float32")
    [raw] = extract(ExtractConfig(**settings), loaded=chat_tiny)
    [chat] = extract(ExtractConfig(**settings, prompt_format="chat"), loaded=chat_tiny)
    assert raw.url.endswith("/toy/test.plain.zarr") and chat.url.endswith("/toy/test.chat.plain.zarr")
    raw_store, chat_store = open_store(raw.url), open_store(chat.url)
    assert chat_store.meta["prompt_format"] == "chat" and chat_store.meta["identity"]["prompt_format"] == "chat"
    assert raw_store.meta["prompt_format"] == "raw"
    overhead = len("<|user|>\n<|assistant|>")  # one token per byte
    assert np.array_equal(chat_store.sequences()["n_tokens"], raw_store.sequences()["n_tokens"] + overhead)
    last = raw_store.layers[-1]
    assert not np.allclose(chat_store.activations(last), raw_store.activations(last))
    assert not np.allclose(chat_store.sequences()["loglik"], raw_store.sequences()["loglik"])
    [again] = extract(ExtractConfig(**settings), loaded=chat_tiny)  # a raw request reuses the raw store only
    assert again.status == "complete" and again.url == raw.url


def test_raw_store_made_before_prompt_formats_is_still_reused(data_dir, tmp_path):
    settings = dict(model="tiny-random", datasets=("toy",), splits=("test",), data_dir=str(data_dir),
                    out=str(tmp_path / "stores"), progress=False, compute_dtype="float32")
    [made] = extract(ExtractConfig(**settings))
    store = open_store(made.url)
    older = {key: value for key, value in store.meta["identity"].items() if key != "prompt_format"}
    edit_store_attrs(made.url, identity=older, prompt_format=None)
    assert recorded_identity(open_store(made.url))["prompt_format"] == "raw"
    [again] = extract(ExtractConfig(**settings))  # neither refused nor extracted again
    assert again.status == "complete" and again.blocks_computed == 0


def test_chat_without_a_template_is_one_line_before_any_store(data_dir, tmp_path):
    result = run(actstore_cli, "extract", "--model", "tiny-random", "--dataset", "toy", "--data-dir", data_dir,
                 "--out", tmp_path / "stores", "--prompt-format", "chat", "--no-progress")
    assert "no chat template" in one_error_line(result) and "--prompt-format raw" in result.stderr
    assert not list((tmp_path / "stores").rglob("*.zarr"))


def test_probe_from_chat_stores_is_refused_on_raw_stores(chat_tiny, data_dir, tmp_path):
    root = tmp_path / "stores"
    for prompt_format in ("raw", "chat"):
        result = run(actstore_cli, "extract", "--model", "tiny-random", "--dataset", "toy", "--data-dir", data_dir,
                     "--out", root, "--prompt-format", prompt_format, "--no-progress", "--compute-dtype", "float32")
        assert result.exit_code == 0, result.output
    chat_train, raw_test = root / "tiny-random/toy/train.chat.plain.zarr", root / "tiny-random/toy/test.plain.zarr"
    fitted = run(probes_cli, "fit", "--method", "mms", "--layer", 2, "--train", chat_train, "--out", tmp_path / "probe",
                 "--json")
    assert fitted.exit_code == 0, fitted.output
    report = json.loads(fitted.stdout)
    assert report["trained_on"]["prompt_format"] == "chat"
    assert [r["store"] for r in report["results"]] == ["toy/train", "toy/test"]  # its test split: the chat one
    line = one_error_line(run(probes_cli, "fit", "--method", "mms", "--layer", 2, "--train", chat_train,
                              "--eval", raw_test))
    assert "extracted with --prompt-format raw" in line and "fit on --prompt-format chat" in line
    assert "--prompt-format raw" in one_error_line(run(probes_cli, "eval", tmp_path / "probe", "--eval", raw_test))
    with pytest.raises(UserError, match="--views yes --prompt-format chat"):  # the hint extracts the chat view
        StoreSource(str(chat_train)).require(("yes",))
    probe = make_probe("mms", 2).fit(StoreSource(str(root / "tiny-random/toy/train.plain.zarr")))
    with pytest.raises(UserError, match="extracted with --prompt-format chat"):
        probe.score(StoreSource(str(root / "tiny-random/toy/test.chat.plain.zarr")))
    by_name = run(probes_cli, "fit", "--method", "mms", "--layer", 2, "--store-root", root, "--prompt-format", "chat",
                  "--train", "tiny-random/toy/train", "--eval", "tiny-random/toy/test", "--json")  # chat stores by name
    assert by_name.exit_code == 0, by_name.output
    assert json.loads(by_name.stdout)["trained_on"]["prompt_format"] == "chat"
    info = run(actstore_cli, "info", "tiny-random/toy/test", "--store-root", root, "--prompt-format", "chat", "--json")
    assert info.exit_code == 0 and json.loads(info.stdout)["url"].endswith("test.chat.plain.zarr"), info.output


def test_views_of_mixed_prompt_formats_are_refused_in_one_source(chat_tiny, data_dir, tmp_path):
    settings = dict(model="tiny-random", datasets=("toy",), splits=("test",), views=("yes", "no"),
                    data_dir=str(data_dir), out=str(tmp_path / "stores"), progress=False, compute_dtype="float32")
    raw = {r.view: r.url for r in extract(ExtractConfig(**settings), loaded=chat_tiny)}
    chat = {r.view: r.url for r in extract(ExtractConfig(**settings, prompt_format="chat"), loaded=chat_tiny)}
    with pytest.raises(UserError, match="prompt_format"):
        StoreSource([chat["yes"], raw["no"]])


def test_finetune_records_the_chat_format_and_evaluates_with_it(chat_tiny, tmp_path):
    data = write_distribution(tmp_path / "data", "toy", train=LEARNABLE, test=LEARNABLE)
    examples = load_split(data, "toy", "test").examples
    raw = encode_examples(chat_tiny.tokenizer, examples, max_length=1024)
    chat = encode_examples(chat_tiny.tokenizer, examples, max_length=1024, prompt_format="chat")
    assert chat_tiny.tokenizer.decode(chat.sequences[0].prompt_ids) == "<|user|>Is 0 even?\n<|assistant|>"
    assert [s.continuation_ids for s in chat.sequences] == [s.continuation_ids for s in raw.sequences]
    trained = run(finetune_cli, "train", "--method", "prompt-tuning", "--model", "tiny-random", "--dataset", "toy",
                  "--data-dir", data, "--out", tmp_path / "run", "--steps", 2, "--batch-size", 4, "--precision", "fp32",
                  "--prompt-format", "chat")
    assert trained.exit_code == 0, trained.output
    assert json.loads((tmp_path / "run" / "finetune.json").read_text())["prompt_format"] == "chat"
    evaluated = run(finetune_cli, "eval", tmp_path / "run", "--dataset", "toy", "--data-dir", data, "--json")
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["n_pairs"] == len(LEARNABLE)
    line = one_error_line(run(finetune_cli, "eval", tmp_path / "run", "--dataset", "toy", "--data-dir", data,
                              "--prompt-format", "raw"))
    assert "trained with --prompt-format chat" in line


def test_finetune_and_runner_refuse_chat_without_a_template(data_dir, tmp_path):
    line = one_error_line(run(finetune_cli, "eval", "--method", "zero-shot", "--model", "tiny-random", "--dataset",
                              "toy", "--data-dir", data_dir, "--prompt-format", "chat"))
    assert "no chat template" in line
    result = run(genies_cli, "run", "--model", "tiny-random", "--shifts", "demo", "--methods", "mms", "--layer", 1,
                 "--limit", 2, "--store-root", tmp_path / "stores", "--out", tmp_path / "run", "--prompt-format", "chat")
    assert result.exit_code == 2 and result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "no chat template" in result.stderr
    assert not list((tmp_path / "stores").rglob("*.zarr"))
    assert not (tmp_path / "run").exists()  # refused before run.json could lock the directory to chat
    assert "loading model" not in result.output


@pytest.mark.bundled
def test_bundled_model_chat_and_raw_on_the_demo(bundled_model, tmp_path):
    from distributions.demo_data import ensure_demo_data

    assert bundled_model.tokenizer.chat_template  # SmolLM2-135M-Instruct ships one
    settings = dict(model="smollm2-135m", datasets=("arith_easy",), data_dir=str(ensure_demo_data(tmp_path / "demo")),
                    out=str(tmp_path / "stores"), layers="10", limit=6, progress=False)
    raw = {r.split: r.url for r in extract(ExtractConfig(**settings), loaded=bundled_model)}
    chat = {r.split: r.url for r in extract(ExtractConfig(**settings, prompt_format="chat"), loaded=bundled_model)}
    for split in ("train", "test"):
        raw_store, chat_store = open_store(raw[split]), open_store(chat[split])
        assert chat_store.meta["prompt_format"] == "chat" and raw_store.meta["prompt_format"] == "raw"
        assert (chat_store.sequences()["n_tokens"] > raw_store.sequences()["n_tokens"]).all()
        assert not np.allclose(chat_store.activations(10), raw_store.activations(10), atol=1e-2)
        assert not np.allclose(chat_store.sequences()["loglik"], raw_store.sequences()["loglik"])
    probe = make_probe("mms", 10).fit(StoreSource(chat["train"]))
    assert probe.trained_on_["prompt_format"] == "chat"
    probe.score(StoreSource(chat["test"]))
    with pytest.raises(UserError, match="extracted with --prompt-format raw"):
        probe.score(StoreSource(raw["test"]))


def test_runner_with_chat_keeps_its_stores_and_run_dir_apart(chat_tiny, tmp_path):
    args = ["run", "--model", "tiny-random", "--shifts", "demo", "--methods", "zero-shot,mms", "--layer", 1,
            "--limit", 3, "--store-root", tmp_path / "stores", "--out", tmp_path / "run"]
    result = run(genies_cli, *args, "--prompt-format", "chat")
    assert result.exit_code == 0, result.output
    stores = sorted(p.name for p in (tmp_path / "stores").rglob("*.zarr"))
    assert stores and all(name.endswith(".chat.plain.zarr") for name in stores)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["prompt_format"] == "chat"
    assert (tmp_path / "run" / "results.csv").is_file()
    line = one_error_line(run(genies_cli, *args))  # the default raw format into the chat run's directory
    assert "prompt_format 'chat' (now 'raw')" in line
