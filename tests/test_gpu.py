"""On a CUDA GPU (skipped elsewhere): extraction equals the CPU's float32 stores under sdpa and flex attention,
with the prefix tree and without; a 4-bit load extracts; `genies run` under torchrun joins its processes over
nccl; gpt-oss's attention sinks are refused under flex attention there too. benchmarks/gpu_check.sh runs these
first."""

import os
import subprocess
import sys

import numpy as np
import pytest

from actstore import open_store
from actstore.engine.extraction import ExtractConfig, extract
from conftest import REPO, write_distribution

pytestmark = pytest.mark.gpu

EXAMPLES = [{"prompt": f"Question {i}: how many?\n### Response:\n",
             "responses": {f"{i + 1}": 1.0, f"{i + 2} or more": 0.0, "none": 0.0}} for i in range(12)]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_distribution(tmp_path_factory.mktemp("gpu-data"), "toy", train=EXAMPLES, test=EXAMPLES)


def stores(data, out, **settings):
    config = ExtractConfig(model="tiny-random", datasets=("toy",), splits=("test",), views=("plain", "yes"),
                           data_dir=str(data), out=str(out), dtype="float32", compute_dtype="float32", progress=False,
                           **settings)
    return {result.view: open_store(result.url) for result in extract(config)}


@pytest.fixture(scope="module")
def on_the_cpu(data, tmp_path_factory):
    return stores(data, tmp_path_factory.mktemp("cpu"), device="cpu", attention="sdpa", prompt_reuse=False)


@pytest.mark.parametrize("attention", ["sdpa", "flex_attention"])
@pytest.mark.parametrize("prompt_reuse", [True, False], ids=["tree", "whole"])
def test_gpu_extraction_equals_the_cpus_in_float32(data, tmp_path, on_the_cpu, attention, prompt_reuse):
    on_the_gpu = stores(data, tmp_path, device="cuda", attention=attention, prompt_reuse=prompt_reuse)
    for view, cpu in on_the_cpu.items():
        gpu = on_the_gpu[view]
        assert gpu.meta["config"]["attention"] == attention
        for layer in cpu.layers:
            reference = cpu.activations(layer)
            scale = float(np.sqrt(np.mean(reference ** 2)))
            np.testing.assert_allclose(gpu.activations(layer), reference, rtol=0, atol=1e-4 * scale,
                                       err_msg=f"{view} layer {layer}")
    np.testing.assert_allclose(on_the_gpu["plain"].sequences()["loglik"], on_the_cpu["plain"].sequences()["loglik"],
                               rtol=0, atol=1e-3)


def test_a_4bit_model_extracts_on_the_gpu(data, tmp_path, on_the_cpu):
    pytest.importorskip("bitsandbytes")
    config = ExtractConfig(model="tiny-random", datasets=("toy",), splits=("test",), data_dir=str(data),
                           out=str(tmp_path), dtype="float32", device="cuda", quantize="4bit", progress=False)
    [result] = extract(config)
    store = open_store(result.url)
    assert store.meta["identity"]["quantization"] == "4bit"
    last = store.layers[-1]
    quantized, exact = store.activations(last), on_the_cpu["plain"].activations(last)
    assert np.isfinite(quantized).all() and np.isfinite(store.sequences()["loglik"]).all()
    assert np.corrcoef(quantized.ravel(), exact.ravel())[0, 1] > 0.9  # 4-bit weights: close, not equal


def test_genies_run_under_torchrun_joins_over_nccl(data, tmp_path):
    shifts = tmp_path / "shifts.json"
    shifts.write_text('[{"source": "toy", "target": "toy", "label": "same", "category": "none"}]')
    environment = {key: value for key, value in os.environ.items() if key != "GENIES_DEVICE"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "-m", "genies",
                           "run", "--model", "tiny-random", "--shifts", str(shifts), "--methods", "zero-shot,mms",
                           "--ttc-methods", "zero-shot,mms", "--layer", "2", "--data-dir", str(data),
                           "--store-root", str(tmp_path / "stores"), "--out", str(tmp_path / "run")],
                          cwd=REPO, capture_output=True, text=True, timeout=300, env=environment)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (tmp_path / "run" / "results.csv").is_file()


def test_attention_sinks_are_refused_under_flex_attention_on_the_gpu_too():
    from actstore.models.attention import set_attention
    from common import UserError
    from model_families import tiny_family_model

    model = tiny_family_model("gpt_oss").model.cuda()
    with pytest.raises(UserError, match="attention sinks under flex attention are not checked"):
        set_attention(model, "gpt_oss", "flex_attention", "cuda", trains=False)
    assert set_attention(model, "gpt_oss", "auto", "cuda", trains=False) != "flex_attention"
