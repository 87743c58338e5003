"""The host stays off the device's critical path: the calls of our code that wait for the device
(``.item()``, ``.tolist()``, ``.cpu()``, a tensor read as a Python number or truth value,
``torch.cuda.synchronize``) are counted per forward pass of extraction and per training step, on the CPU
path, against a bound. (The libraries' own calls are theirs: Adam reads its step counters, kept on the host.)"""

import collections
import sys
from contextlib import contextmanager

import pytest
import torch

from actstore.engine.extraction import ExtractConfig, extract
from conftest import REPO, write_distribution
from finetune.train import TrainConfig, train_reward_model

WAITS = ("item", "tolist", "cpu", "__int__", "__float__", "__bool__")
# per extraction pass: one copy of the captured activations, one of the log-likelihoods; per training step: the
# rows of the pass planned from one copy of the token ids, and the step's loss for the progress bar
BOUNDS = {"tree": 2, "flat": 2, "training step": 2}
OURS = tuple(str(REPO / package) for package in ("actstore", "probes", "finetune", "genies", "common", "registry",
                                                  "distributions"))

EXAMPLES = [{"prompt": f"Question {i}: is it so?\n### Response:\n",
             "responses": {f"yes, {i}": 1.0, f"no, {i + 1}": 0.0, "maybe": 0.0}} for i in range(24)]


@contextmanager
def counting(module: torch.nn.Module):
    """(waits by kind, passes of ``module``) while inside."""
    waits, passes = collections.Counter(), [0]
    originals = {name: getattr(torch.Tensor, name) for name in WAITS}

    def counted(name):
        def call(self, *args, **kwargs):
            if sys._getframe(1).f_code.co_filename.startswith(OURS):
                waits[name] += 1
            return originals[name](self, *args, **kwargs)
        return call

    def one_pass(*args):
        passes[0] += 1

    handle = module.register_forward_pre_hook(one_pass)
    synchronize = torch.cuda.synchronize
    torch.cuda.synchronize = lambda *args: waits.update(["synchronize"])  # never ours: any call counts
    for name in WAITS:
        setattr(torch.Tensor, name, counted(name))
    try:
        yield waits, passes
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
        torch.cuda.synchronize = synchronize
        handle.remove()


@pytest.mark.parametrize("engine", ["tree", "flat"])
def test_an_extraction_pass_waits_for_the_device_at_most_twice(engine, tiny_model, tmp_path):
    data = write_distribution(tmp_path / "data", "toy", train=EXAMPLES, test=EXAMPLES)
    config = ExtractConfig(model="tiny-random", datasets=("toy",), splits=("train",), views=("plain", "yes"),
                           data_dir=str(data), out=str(tmp_path / "s"), dtype="float32", progress=False,
                           batch_tokens=96, prompt_reuse=engine == "tree")
    with counting(tiny_model.model.get_decoder()) as (waits, passes):
        extract(config, loaded=tiny_model)
    assert passes[0] >= 4  # several passes, so that a wait per row or per block would show
    per_pass = sum(waits.values()) / passes[0]
    assert per_pass <= BOUNDS[engine], (dict(waits), passes[0])


def test_a_training_step_waits_for_the_device_at_most_twice(tmp_path):
    data = write_distribution(tmp_path / "data", "toy", train=EXAMPLES, test=EXAMPLES[:6])
    config = TrainConfig(method="lora", model="tiny-random", dataset="toy", data_dir=str(data), out=str(tmp_path / "r"),
                         steps=6, batch_size=8, precision="fp32", seed=0)
    from actstore.models import load_model

    loaded = load_model("tiny-random")
    with counting(loaded.model.get_decoder()) as (waits, _):
        result = train_reward_model(config, progress=False, loaded=loaded)
    training = sum(waits.values()) - 1  # counted over the whole call: the steps, and the head's copy when saved
    assert len(result.losses) == 6 and training / 6 <= BOUNDS["training step"], dict(waits)
