"""`genies run --train-layout`: live training sets one per process, or one set in all processes at once (DDP).
Two CPU processes (torchrun, gloo), the tiny random model, a one-shift manifest whose source is also its target's
reference (one training set per live method): training a set together equals training it in one process within
float tolerance; auto trains fewer sets than processes together and says so; a process that fails inside a DDP
step stops the other within seconds, with one line each."""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO
from finetune.pairs import PairCollator
from finetune.step_share import SplitCollator, share_of
from genies.train_layout import choose_layout
from common import UserError
from test_genies_processes import ENVIRONMENT, failed_at, succeeded, two_processes

SHIFT = {"source": "arith_easy", "target": "arith_sycophancy", "target_reference": "arith_easy", "label": "probing",
         "category": "unwanted_personas"}
# float32, so that the only differences are those of summing a step's pairs in two halves (bf16 autocast on the
# CPU is not batch-invariant: its differences are those of bf16 rounding); LoRA without dropout (NO_DROPOUT),
# whose masks are drawn per process.
RUN = ["run", "--model", "tiny-random", "--data-dir", "demo", "--limit", "12", "--train-steps", "3", "--threads", "1",
       "--compute-dtype", "float32"]
LOSS_TOLERANCE = 1e-6  # per step, absolute (observed: 1.2e-7)
WEIGHT_TOLERANCE = 1e-4  # adapter and head weights after 3 Adam steps, absolute (observed: 1e-5)
METRIC_TOLERANCE = 1e-6  # evaluation metrics, absolute (observed: accuracies equal, Brier scores within 1e-9)


def run_args(where: Path, methods: str, name: str) -> list[str]:
    return [*RUN, "--shifts", str(where / "shift.json"), "--methods", methods, "--store-root", str(where / "stores"),
            "--out", str(where / name)]


@pytest.fixture(scope="module")
def where(tmp_path_factory):
    where = tmp_path_factory.mktemp("layout")
    (where / "shift.json").write_text(json.dumps([SHIFT]))
    succeeded(subprocess.run([sys.executable, str(REPO / "tests" / "processes_driver.py"),
                              *run_args(where, "lora,prompt-tuning", "one")], cwd=REPO, capture_output=True, text=True,
                             timeout=240, env={**ENVIRONMENT, "NO_DROPOUT": "1"}))
    return where


def fits(run_dir: Path) -> dict[str, tuple[list[float], dict[str, torch.Tensor]]]:
    """Each live fit's per-step losses and its weights (adapter and head)."""
    found = {}
    for record in sorted(run_dir.glob("fits/*/*/finetune.json")):
        weights = {f"{path.name}:{key}": tensor.float() for path in sorted(record.parent.rglob("*.safetensors"))
                   for key, tensor in load_file(path).items()}
        found[record.parent.relative_to(run_dir).as_posix()] = (json.loads(record.read_text())["result"]["losses"],
                                                                 weights)
    return found


def numbers(value, path=""):
    """Every number in a JSON value, by its path."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in numbers(item, f"{path}/{key}").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in numbers(item, f"{path}/{i}").items()}
    return {path: value} if isinstance(value, (int, float)) and not isinstance(value, bool) else {}


def test_one_set_in_two_processes_trains_as_in_one(where):
    output = succeeded(two_processes(run_args(where, "lora,prompt-tuning", "ddp") + ["--train-layout", "ddp"],
                                     driver=True, NO_DROPOUT="1"))
    assert ("training sets: 2 with all 2 processes together (DDP, each step's pairs split over them): as asked "
            "(--train-layout ddp)") in output
    assert re.search(r"^\[rank 0\] done train lora on arith_easy with all 2 processes \(DDP\) in ", output, re.M)
    assert json.loads((where / "ddp" / "run.json").read_text())["train_layout"] == {"layout": "ddp", "per_process": 0,
                                                                                  "ddp": 2}
    for record in (where / "ddp").glob("fits/*/*/finetune.json"):  # accelerate saw both processes: DDP
        assert json.loads(record.read_text())["result"]["n_processes"] == 2, record
    together, alone = fits(where / "ddp"), fits(where / "one")
    assert sorted(together) == ["fits/lora/arith_easy", "fits/prompt-tuning/arith_easy"]
    for name, (losses, weights) in together.items():
        assert len(losses) == 3 and losses == pytest.approx(alone[name][0], abs=LOSS_TOLERANCE), name
        assert weights.keys() == alone[name][1].keys()
        for key, tensor in weights.items():
            assert torch.allclose(tensor, alone[name][1][key], rtol=0, atol=WEIGHT_TOLERANCE), (name, key)
    for path in sorted((where / "one" / "evaluations").rglob("*.json")):
        reference = numbers(json.loads(path.read_text()))
        found = numbers(json.loads((where / "ddp" / path.relative_to(where / "one")).read_text()))
        assert found.keys() == reference.keys() and found == pytest.approx(reference, abs=METRIC_TOLERANCE), path


def test_a_failure_inside_a_ddp_step_stops_the_other_process_within_seconds(where):
    # auto: one training set (lora) for two processes, so they train it together; rank 1 raises at its first loss
    failed = two_processes(run_args(where, "lora", "failed"), driver=True, FAIL_AT="1:raise:loss")
    ended = time.time()
    assert failed.returncode != 0
    assert ("training sets: 1 with all 2 processes together (DDP, each step's pairs split over them): fewer training "
            "sets (1) than processes (2) (--train-layout auto)") in failed.stdout
    assert ended - failed_at("loss", failed.stderr) < 15, failed.stderr[-3000:]
    ours = [line for line in failed.stderr.splitlines() if line.startswith("error: ")]
    cause = f"RuntimeError: injected failure at loss (traceback: {where / 'failed' / 'errors' / 'rank1.txt'})"
    assert sorted(ours) == [f"error: process rank 0 of 2 stops: rank 1 failed: {cause}",
                            f"error: process rank 1 of 2 failed: {cause}"], failed.stderr[-3000:]
    assert not re.search(r'File ".*/(genies|finetune)/', failed.stderr)  # no traceback of ours


@pytest.mark.parametrize("layout,sets,size,placed,expected", [
    ("auto", 1, 4, False, (0, 1)),  # one source on 4 GPUs: together
    ("auto", 3, 4, False, (0, 3)),
    ("auto", 4, 4, False, (4, 0)),  # every process has one
    ("auto", 8, 4, False, (8, 0)),
    ("auto", 9, 4, False, (8, 1)),  # the tail together
    ("auto", 1, 1, False, (1, 0)),  # one process
    ("per-process", 1, 4, False, (1, 0)),
    ("ddp", 9, 4, False, (0, 9)),
    ("auto", 1, 4, True, (1, 0)),  # placed over several GPUs: no DDP
])
def test_the_layout_trains_fewer_sets_than_processes_together(layout, sets, size, placed, expected):
    choice = choose_layout(layout, sets, size, placed=placed)
    assert (choice.per_process, choice.together) == expected
    assert choice.line(size).startswith("training sets: ") and f"(--train-layout {layout})" in choice.line(size)


def test_ddp_is_refused_for_a_model_placed_over_several_devices():
    with pytest.raises(UserError, match="^--train-layout ddp needs the whole model in each process"):
        choose_layout("ddp", 2, 2, placed=True)


def test_each_process_collates_its_share_of_the_step_and_weights_it_by_the_steps_pairs():
    assert [share_of(5, rank, 2) for rank in (0, 1)] == [slice(0, 3), slice(3, 5)]
    assert [share_of(1, rank, 3) for rank in (0, 1, 2)] == [slice(0, 1), slice(1, 1), slice(1, 1)]
    from finetune.pairs import TrainingPair
    from finetune.sequences import TokenSequence

    def sequence(example: int, best: bool) -> TokenSequence:
        return TokenSequence(example=example, response=0, is_best=best, prompt_ids=(1, 2, example + 3),
                             continuation_ids=(7, 8) if best else (9,))

    pairs = [TrainingPair(sequence(i, True), sequence(i, False)) for i in range(5)]
    shares = [SplitCollator(PairCollator(0), rank, 2)(pairs) for rank in (0, 1)]
    assert [sum(share.weights) for share in shares] == [3 / 5, 2 / 5]  # DDP's mean of size x these: the step's mean
    assert {(share.gradient_scale, share.loss_reduction) for share in shares} == {(2.0, "sum")}
    alone = SplitCollator(PairCollator(0), 1, 2)(pairs[:1])  # a step of one pair: rank 1 runs it with weight 0
    assert alone.weights == [0.0] and len(alone.passes[0]["group"]) == 2
