"""ModelSpec: loading straight into the compute dtype, placement with disk offload, quantization
(bitsandbytes' CPU backend runs here), and the one-line errors; on tiny models saved to disk."""

import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from actstore import open_store
from common import UserError
from actstore.engine.extraction import ExtractConfig, extract
from actstore.models import ModelSpec, load_model, parse_max_memory, tiny_random_llama
from cli import actstore
from conftest import TOY_EXAMPLES, write_distribution

ARRAYS = ("residual", "final_norm", "loglik", "n_tokens", "last_token")


def save_tiny(directory, dtype=torch.bfloat16):
    tiny = tiny_random_llama()
    tiny.model.to(dtype).save_pretrained(directory)
    tiny.tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def data_dir(tmp_path):
    return write_distribution(tmp_path / "data", "toy", TOY_EXAMPLES, TOY_EXAMPLES)


def extract_one(model, data_dir, out, **overrides):
    [result] = extract(ExtractConfig(model=str(model), datasets=("toy",), splits=("test",), data_dir=str(data_dir),
                                     out=str(out), layers="all", progress=False, block_size=4, **overrides))
    return result


def arrays(url):
    group = open_store(url).group
    return {name: group[name][:] for name in ARRAYS}


# ----------------------------------------------------------------------------- dtype


@pytest.mark.parametrize("saved_dtype", [torch.bfloat16, torch.float32])
def test_weights_arrive_in_the_compute_dtype_without_a_float32_copy(tmp_path, monkeypatch, saved_dtype):
    """transformers is asked for bfloat16 (it casts tensor by tensor while reading), and nothing casts the
    loaded model afterwards: no float32 copy of the model exists at any point."""
    from transformers import AutoModelForCausalLM

    directory = save_tiny(tmp_path / "m", saved_dtype)
    asked, casts = [], []
    real_from_pretrained, real_to = AutoModelForCausalLM.from_pretrained, torch.nn.Module.to

    def from_pretrained(*args, **kwargs):
        asked.append(kwargs)
        return real_from_pretrained(*args, **kwargs)

    def to(self, *args, **kwargs):
        if any(isinstance(a, torch.dtype) for a in (*args, *kwargs.values())):
            casts.append((type(self).__name__, args, kwargs))
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", from_pretrained)
    monkeypatch.setattr(torch.nn.Module, "to", to)
    loaded = load_model(ModelSpec(str(directory), compute_dtype="bfloat16"))
    assert [kwargs["dtype"] for kwargs in asked] == [torch.bfloat16] and asked[0]["device_map"] == "cpu"
    assert not casts, f"the loaded model was cast afterwards: {casts}"
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}
    assert loaded.compute_dtype == "bfloat16" and loaded.spec.compute_dtype == "bfloat16"


def test_a_direct_load_computes_exactly_like_the_float32_model_cast(tmp_path):
    """Stores made when models were loaded in float32 and cast stay reproducible bitwise (rotary buffers included)."""
    from transformers import AutoModelForCausalLM

    directory = save_tiny(tmp_path / "m", torch.float32)
    direct = load_model(ModelSpec(str(directory), compute_dtype="bfloat16")).model
    cast = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).to(torch.bfloat16).eval()
    ids = torch.tensor([[1, 5, 9, 20, 40, 41, 42]])
    with torch.no_grad():
        assert torch.equal(direct(ids).logits, cast(ids).logits)


@pytest.mark.bundled
def test_bundled_gguf_cache_loads_straight_into_the_compute_dtype(monkeypatch):
    """The dequantized GGUF is cached as float32 safetensors and once more in bfloat16, which loads without a cast."""
    from transformers import AutoModelForCausalLM

    real_from_pretrained, asked = AutoModelForCausalLM.from_pretrained, []

    def from_pretrained(*args, **kwargs):
        asked.append(kwargs)
        return real_from_pretrained(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", from_pretrained)
    from safetensors import safe_open

    from common import default_model_cache

    loaded = load_model(ModelSpec("smollm2-135m", compute_dtype="bfloat16"))
    assert asked[-1]["dtype"] == torch.bfloat16 and "gguf_file" not in asked[-1]
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}
    with safe_open(str(default_model_cache() / "smollm2-135m.bfloat16" / "model.safetensors"), "pt") as weights:
        assert {weights.get_slice(name).get_dtype() for name in weights.keys()} == {"BF16"}  # mapped, never cast
    reference = load_model("smollm2-135m")  # float32, from the GGUF's own dequantization
    for (name, got), (_, expected) in zip(loaded.model.named_parameters(), reference.model.named_parameters()):
        assert torch.equal(got, expected.to(torch.bfloat16)), name


def test_requested_spec_resolves_auto_and_parses_max_memory(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a machine with one GPU, as far as the spec asks
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    spec = ModelSpec.requested("m", compute_dtype="float32", max_memory="0=70GiB, cpu=200GiB", offload_dir="/d")
    assert spec.device_map == "auto" and spec.placed
    assert spec.max_memory == (("0", "70GiB"), ("cpu", "200GiB"))
    with pytest.raises(UserError, match=r"device cuda:1 is not on this machine \(it has: cpu, cuda:0\)"):
        ModelSpec.requested("m", device_map="cuda:1")
    monkeypatch.undo()
    assert ModelSpec.requested("m", compute_dtype="float16", device="cpu").device_map == "cpu"
    assert parse_max_memory(None) == ()


def test_a_gpu_asked_for_where_cuda_cannot_run_says_why(monkeypatch):
    """One line with the reason: a CPU build of torch, a driver too old for this torch, or no device visible."""
    from actstore.models import devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(UserError, match=r"device cuda was asked for, but this torch \(.*\) is a CPU build; install a "
                                        r"CUDA build of torch"):
        ModelSpec.requested("m", device="cuda")
    monkeypatch.setattr(torch.version, "cuda", "13.0")

    def old_driver():
        raise RuntimeError("The NVIDIA driver on your system is too old (found version 11040).\nmore")

    monkeypatch.setattr(torch.cuda, "init", old_driver)
    with pytest.raises(UserError, match=r"device cuda:0 was asked for, but CUDA does not start \(RuntimeError: The "
                                        r"NVIDIA driver on your system is too old \(found version 11040\)\.\)$"):
        ModelSpec.requested("m", device_map="cuda:0")
    monkeypatch.setattr(torch.cuda, "init", lambda: None)
    assert devices.cuda_unavailable_reason().startswith("no CUDA device is visible")
    assert devices.device_choice("cpu", {}).startswith("cpu (no GPU: no CUDA device is visible")
    assert devices.device_choice("cpu", {"GENIES_DEVICE": "cpu"}) == "cpu (from GENIES_DEVICE)"
    assert devices.default_device({"GENIES_DEVICE": "cuda:1"}) == "cuda:1"


@pytest.mark.parametrize("kwargs, message", [
    (dict(max_memory="cpu=lots"), "'lots' is not a size"),
    (dict(max_memory="gpu0=1GiB"), "is not DEVICE=SIZE"),
    (dict(device_map="everywhere"), "unknown --device-map 'everywhere'"),
    (dict(device="cpu", max_memory="cpu=1GiB"), "need a placement"),
    (dict(device="cpu", device_map="auto"), "disagree"),
    (dict(quantization="4bit", offload_dir="/d"), "does not combine with --offload-dir"),
    (dict(quantization="2bit"), "unknown --quantize '2bit'"),
    (dict(device_map="cuda:0"), r"device cuda:0 was asked for, but "),
    (dict(device="cuda"), "device cuda was asked for, but "),
    (dict(device_map="mps"), r"device mps is not on this machine \(it has: cpu\)"),
    (dict(max_memory="0=1GiB,cpu=1GiB"), "device cuda:0 was asked for, but "),
])
def test_bad_specs_are_user_errors(kwargs, message, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on a machine with a GPU
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(UserError, match=message):
        ModelSpec.requested("m", **kwargs)


# ----------------------------------------------------------------------------- placement and offload


def test_disk_offload_gives_the_in_memory_activations(saved, data_dir, tmp_path):
    """A placement with a few kB of host memory puts most blocks on disk; the activations are bitwise equal."""
    in_memory = extract_one(saved, data_dir, tmp_path / "a", compute_dtype="bfloat16")
    spec = ModelSpec.requested(str(saved), compute_dtype="bfloat16", max_memory="cpu=200KB",
                               offload_dir=str(tmp_path / "offload"))
    loaded = spec.load()
    placement = set(loaded.model.hf_device_map.values())
    assert placement == {"cpu", "disk"}, loaded.model.hf_device_map
    offloaded = extract_one(saved, data_dir, tmp_path / "b", compute_dtype="bfloat16", max_memory="cpu=200KB",
                            offload_dir=str(tmp_path / "offload"))
    expected, got = arrays(in_memory.url), arrays(offloaded.url)
    for name in ARRAYS:
        assert got[name].tobytes() == expected[name].tobytes(), name
    recorded = open_store(offloaded.url).meta["config"]["device_map"]
    assert "disk" in recorded.values()


# ----------------------------------------------------------------------------- quantization


def test_quantized_store_records_its_quantization_and_is_never_reused_unquantized(saved, data_dir, tmp_path):
    """bitsandbytes' CPU backend runs here: a 4-bit extraction really runs; its store is refused to a plain request
    and the other way round."""
    out = tmp_path / "stores"
    quantized = extract_one(saved, data_dir, out, compute_dtype="bfloat16", quantize="4bit")
    store = open_store(quantized.url)
    assert store.meta["identity"]["quantization"] == "4bit" and store.meta["config"]["quantization"] == "4bit"
    assert np.isfinite(arrays(quantized.url)["residual"]).all()
    with pytest.raises(UserError, match="quantization: stored 4bit, requested None"):
        extract_one(saved, data_dir, out, compute_dtype="bfloat16")
    plain = extract_one(saved, data_dir, tmp_path / "plain", compute_dtype="bfloat16")
    assert "quantization" not in open_store(plain.url).meta["identity"]  # stores from before quantization still match
    with pytest.raises(UserError, match="quantization: stored None, requested 8bit"):
        extract_one(saved, data_dir, tmp_path / "plain", compute_dtype="bfloat16", quantize="8bit")
    # the same 4-bit request reuses its store
    assert extract_one(saved, data_dir, out, compute_dtype="bfloat16", quantize="4bit").status == "complete"


def test_quantized_weights_are_bitsandbytes_layers(saved):
    import bitsandbytes as bnb

    four = load_model(ModelSpec(str(saved), compute_dtype="bfloat16", quantization="4bit"))
    eight = load_model(ModelSpec(str(saved), compute_dtype="bfloat16", quantization="8bit"))
    assert isinstance(four.model.model.layers[0].self_attn.q_proj, bnb.nn.Linear4bit)
    assert four.model.model.layers[0].self_attn.q_proj.weight.quant_type == "nf4"
    assert isinstance(eight.model.model.layers[0].mlp.up_proj, bnb.nn.Linear8bitLt)


def extract_cli(saved, data_dir, out, *extra):
    return CliRunner().invoke(actstore, ["extract", "--model", str(saved), "--dataset", "toy", "--split", "test",
                                         "--data-dir", str(data_dir), "--out", str(out), "--no-progress", *extra])


def test_missing_bitsandbytes_is_one_line_before_any_work(saved, data_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes.functional", None)  # import fails as if not installed
    monkeypatch.setattr("actstore.models.loading.load_model", lambda *a, **k: pytest.fail("loaded a model"))
    result = extract_cli(saved, data_dir, tmp_path / "s", "--quantize", "4bit")
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and "--quantize 4bit needs bitsandbytes" in result.output
    assert not (tmp_path / "s").exists()


def test_bitsandbytes_without_a_backend_for_the_device_is_one_line(saved, data_dir, tmp_path, monkeypatch):
    import bitsandbytes.functional

    def no_backend(*args, **kwargs):
        raise NotImplementedError("no kernel registered for device cpu")

    monkeypatch.setattr(bitsandbytes.functional, "int8_vectorwise_quant", no_backend)
    result = extract_cli(saved, data_dir, tmp_path / "s", "--quantize", "8bit")
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and "cannot run on cpu (no kernel registered" in result.output
    assert not (tmp_path / "s").exists()


def test_sigkilled_offloaded_extraction_resumes_to_the_in_memory_store(saved, tmp_path):
    """Killed in a forward pass of a disk-offloaded model (the 4th of the 6 blocks, one tree-attention pass each),
    then resumed: the store equals the in-memory run's."""
    import subprocess

    from conftest import REPO
    from test_reliability import EXAMPLES, assert_bitwise_equal, state, subprocess_env

    data = write_distribution(tmp_path / "data", "toy", EXAMPLES, EXAMPLES)
    common = ["extract", "--model", str(saved), "--dataset", "toy", "--split", "test", "--data-dir", str(data),
              "--block-size", "3", "--batch-tokens", "200", "--compute-dtype", "bfloat16", "--no-progress"]
    whole = CliRunner().invoke(actstore, [*common, "--out", str(tmp_path / "whole")])
    assert whole.exit_code == 0, whole.output
    offloaded = [*common, "--out", str(tmp_path / "cut"), "--max-memory", "cpu=200KB",
                 "--offload-dir", str(tmp_path / "offload")]
    died = subprocess.run([sys.executable, str(REPO / "tests" / "kill_driver.py"), *offloaded],
                          env=subprocess_env(KILL_AT="forward:4"), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert died.returncode == -9 and "killed at forward 4" in died.stderr, died.stderr
    [url] = [str(p) for p in (tmp_path / "cut").rglob("test.plain.zarr")]
    done, complete = state(url)
    assert done < 6 and not complete  # blocks are written in the background: how many landed varies
    resumed = CliRunner().invoke(actstore, offloaded)
    assert resumed.exit_code == 0 and "(resumed: 18 sequences" in resumed.output, resumed.output
    assert_bitwise_equal(url, whole.stdout.split()[0])


def test_the_tree_runs_over_a_placement_and_equals_whole_sequences(saved, data_dir, tmp_path):
    """Prompt reuse is the engine over a device map too (the tree's masks are arguments that accelerate's hooks
    move with the hidden states): over CPU and disk its float32 values equal whole sequences' within 1e-4 of
    each layer's RMS, log-likelihoods within 1e-3 nats, and each store records which engine made it."""
    placed = dict(compute_dtype="float32", dtype="float32", max_memory="cpu=200KB", offload_dir=str(tmp_path / "off"))
    tree = extract_one(saved, data_dir, tmp_path / "tree", **placed)
    whole = extract_one(saved, data_dir, tmp_path / "whole", prompt_reuse=False, **placed)
    assert "disk" in open_store(tree.url).meta["config"]["device_map"].values()
    assert open_store(tree.url).meta["config"]["prompt_reuse"] is True
    assert open_store(whole.url).meta["config"]["prompt_reuse"] is False
    got, expected = arrays(tree.url), arrays(whole.url)
    for layer in range(expected["residual"].shape[0]):
        rms = float(np.sqrt(np.mean(expected["residual"][layer].astype(np.float64) ** 2)))
        assert np.abs(got["residual"][layer] - expected["residual"][layer]).max() <= 1e-4 * rms, layer
    assert np.abs(got["loglik"] - expected["loglik"]).max() <= 1e-3
    assert np.array_equal(got["n_tokens"], expected["n_tokens"]) and np.array_equal(got["last_token"], expected["last_token"])


@pytest.mark.parametrize("group, args, message", [
    ("finetune", ["train", "--method", "lora", "--model", "tiny-random", "--dataset", "toy", "--max-memory", "cpu=lots"],
     "'lots' is not a size"),
    ("finetune", ["eval", "--method", "zero-shot", "--model", "tiny-random", "--dataset", "toy", "--device-map", "gpu"],
     "unknown --device-map 'gpu'"),
    ("genies", ["run", "--model", "tiny-random", "--out", "x", "--device-map", "everywhere"], "unknown --device-map"),
])
def test_placement_flags_are_checked_on_every_command(group, args, message, data_dir, tmp_path):
    import cli

    result = CliRunner().invoke(getattr(cli, group), [*args, "--data-dir", str(data_dir)])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and result.output.startswith("error: ") and message in result.output


def test_genies_run_extracts_with_an_offloaded_model(saved, tmp_path):
    """`genies run --max-memory`: the run's one model is placed with disk offload, and its stores say so."""
    import json

    from genies.plan import RunConfig
    from genies.runner import run_benchmark
    from test_genies_runner import arithmetic

    for name, offset in {"easy": 1, "hard": 40}.items():
        write_distribution(tmp_path / "data", name, arithmetic(8, offset, 1), arithmetic(6, offset + 100, 1))
    manifest = tmp_path / "shifts.json"
    manifest.write_text(json.dumps([{"source": "easy", "target": "hard", "label": "extreme", "category": "difficulty"}]))
    config = RunConfig(model=str(saved), shifts=str(manifest), methods=("zero-shot", "mms"), layer=2,
                       data_dir=str(tmp_path / "data"), store_root=str(tmp_path / "stores"), out=tmp_path / "run",
                       max_memory="cpu=200KB", offload_dir=str(tmp_path / "offload"))
    summary = run_benchmark(config, command="genies run (offloaded)", log=lambda line: None)
    assert summary.model_loads == 1 and {r.method for r in summary.rows} == {"zero-shot", "mms"}
    stores = list((tmp_path / "stores").rglob("*.plain.zarr"))
    assert stores and all("disk" in open_store(str(s)).meta["config"]["device_map"].values() for s in stores)
