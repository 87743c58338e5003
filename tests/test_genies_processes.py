"""`genies run` in two CPU processes (torchrun, gloo) on the demo data with the tiny random model, against the same
run in one process: the same results.csv and evaluations; a process SIGKILLed mid-run, the run resumed by the same
launch or by one process: the same results again; a process that raises stops the other within seconds, with one
line naming its rank and error."""

import csv
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from actstore.store.sharding import Shard
from conftest import REPO
from genies.plan import DoneChecks, RunConfig, build_plan
from genies.work_split import Assignment, Unit, balance
from manifests import Shift

BIN = Path(sys.executable).parent
RUN = ["run", "--model", "tiny-random", "--shifts", "demo", "--methods", "zero-shot,mms,lat,lora,random",
       "--ttc-methods", "zero-shot,mms,lat,lora", "--limit", "12", "--train-steps", "2", "--threads", "1"]
ENVIRONMENT = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "OMP_NUM_THREADS": "1"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_args(where: Path, name: str, stores: str) -> list[str]:
    return [*RUN, "--store-root", str(where / stores), "--out", str(where / name)]


def two_processes(args: list[str], *, driver: bool = False, timeout: int = 240, **environment):
    program = [str(REPO / "tests" / "processes_driver.py")] if driver else ["-m", "genies"]
    return subprocess.run([str(BIN / "torchrun"), "--nproc_per_node", "2", "--master-port", str(free_port()),
                           *program, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**ENVIRONMENT, **environment})


def one_process(args: list[str], timeout: int = 240):
    return subprocess.run([sys.executable, "-m", "genies", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=ENVIRONMENT)


def succeeded(done) -> str:
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done.stdout


def results(run_dir: Path) -> list[dict]:
    with (run_dir / "results.csv").open() as handle:
        return list(csv.DictReader(handle))


def evaluations(run_dir: Path) -> dict[str, dict]:
    return {path.relative_to(run_dir).as_posix(): json.loads(path.read_text())
            for path in sorted((run_dir / "evaluations").rglob("*.json"))}


def failed_at(where: str, stderr: str) -> float:
    """When the driver's injected failure happened (its own line on stderr): the others' stop is timed from
    there, not from the launch, so that a loaded machine's slow start does not count."""
    return float(re.search(rf"^failing at {where} \(raise\) at ([\d.]+)$", stderr, re.M).group(1))


def assert_same_results(run_dir: Path, reference: Path) -> None:
    """Bitwise: every process computes with one thread, so each unit's arithmetic is the one process's."""
    assert (run_dir / "results.csv").read_bytes() == (reference / "results.csv").read_bytes()
    assert evaluations(run_dir) == evaluations(reference)
    assert (run_dir / "outcomes.json").read_bytes() == (reference / "outcomes.json").read_bytes()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    where = tmp_path_factory.mktemp("processes")
    reference = succeeded(one_process(run_args(where, "one", "stores-one")))
    began = time.perf_counter()
    two = two_processes(run_args(where, "two", "stores-two"))
    return where, reference, succeeded(two), time.perf_counter() - began


def test_two_processes_write_the_results_of_one(runs):
    where, _, output, _ = runs
    assert_same_results(where / "two", where / "one")
    assert {row["method"] for row in results(where / "two")} == {"zero-shot", "mms", "lat", "lora", "random"}
    info = json.loads((where / "two" / "run.json").read_text())
    assert info["processes"] == 2 and info["fits_run"] > 0 and info["evaluations_run"] > 0
    # each process says what it does, one line per finished unit names its rank; rank 0 counts them all
    for rank in (0, 1):
        assert re.search(rf"^\[rank {rank}\] pid \d+ on .+, cpu, 1 thread\(s\): ", output, re.M), output
        assert re.search(rf"^\[rank {rank}\] done .+ in [\d.]+s \(\d+/\d+ units of the run\)$", output, re.M)
    total = int(re.search(r"\((\d+)/(\d+) units of the run\)", output).group(2))
    assert f"overall: {total}/{total} units done" in output or f"({total}/{total} units of the run)" in output
    assert output.count("wrote ") == 1 and "report: " in output  # rank 0 alone writes and reports
    # as many lora training sets as processes, twice: one per process (--train-layout auto), said once
    assert output.count("training sets: ") == 1
    assert "training sets: 4 one per process: 4 sets on 2 processes, 2 each (--train-layout auto)" in output
    assert info["train_layout"] == {"layout": "auto", "per_process": 4, "ddp": 0}


def test_a_killed_process_resumes_with_the_same_launch_or_with_one_process(runs):
    where = runs[0]
    # rank 1 killed at its first block write: its stores half made, its lock files left behind
    killed = two_processes(run_args(where, "killed", "stores-killed"), driver=True, FAIL_AT="1:kill:write")
    assert killed.returncode != 0 and "failing at write (kill)" in killed.stderr, killed.stderr[-3000:]
    assert not (where / "killed" / "results.csv").exists()
    succeeded(two_processes(run_args(where, "killed", "stores-killed")))
    assert_same_results(where / "killed", where / "one")
    # rank 1 killed at its first live training set (the stores all extracted), the run finished by one process
    killed = two_processes(run_args(where, "killed-training", "stores-two"), driver=True, FAIL_AT="1:kill:train")
    assert killed.returncode != 0 and "failing at train (kill)" in killed.stderr, killed.stderr[-3000:]
    assert not (where / "killed-training" / "results.csv").exists()
    succeeded(one_process(run_args(where, "killed-training", "stores-two")))
    assert_same_results(where / "killed-training", where / "one")


def test_a_process_that_raises_stops_the_other_within_seconds_with_one_line(runs):
    where = runs[0]
    # rank 0's fits, trainings and evaluations each take 5 minutes; rank 1 raises at its first training set
    failed = two_processes(run_args(where, "raised", "stores-two"), driver=True, FAIL_AT="1:raise:train", SLOW_RANK="0")
    assert failed.returncode != 0
    assert time.time() - failed_at("train", failed.stderr) < 60, failed.stderr[-3000:]
    ours = [line for line in failed.stderr.splitlines() if line.startswith("error: ")]
    failure = [line for line in ours if line.startswith("error: process rank 1 of 2 failed")]
    assert len(failure) == 1, failed.stderr[-3000:]
    assert failure[0].startswith("error: process rank 1 of 2 failed: RuntimeError: injected failure at train "
                                 "(traceback: "), failure
    assert all("rank 1 failed: RuntimeError: injected failure at train" in line for line in ours
               if line.startswith("error: process rank 0 of 2 stops: ")), ours
    assert (where / "raised" / "errors" / "rank1.txt").read_text().startswith("Traceback")
    assert not re.search(r'File ".*/genies/', failed.stderr)  # no traceback of ours: one line


def test_without_torchrun_the_others_stop_by_themselves(runs):
    """Processes started as a launcher that stops no one would (srun): rank 0 stops through the run's store."""
    where, port = runs[0], str(free_port())
    processes = [subprocess.Popen([sys.executable, str(REPO / "tests" / "processes_driver.py"),
                                   *run_args(where, "raised-alone", "stores-two")], cwd=REPO, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env={**ENVIRONMENT, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
                                       "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
                                       "FAIL_AT": "1:raise:train", "SLOW_RANK": "0"}) for rank in (0, 1)]
    errors = [process.communicate(timeout=400)[1] for process in processes]
    assert time.time() - failed_at("train", errors[1]) < 60, errors  # rank 0 was sleeping 5 minutes
    assert [process.returncode for process in processes] == [2, 2]
    assert [line for line in errors[1].splitlines() if line.startswith("error: ")] == [
        f"error: process rank 1 of 2 failed: RuntimeError: injected failure at train (traceback: "
        f"{where / 'raised-alone' / 'errors' / 'rank1.txt'})"]
    assert errors[0].splitlines() == ["error: process rank 0 of 2 stops: rank 1 failed: RuntimeError: injected failure "
                                      f"at train (traceback: {where / 'raised-alone' / 'errors' / 'rank1.txt'})"]


def test_units_go_to_the_least_loaded_process_costliest_first():
    units = [Unit("evaluate", "e1", (), 1.0), Unit("train", "t1", (), 60.0), Unit("train", "t2", (), 60.0),
             Unit("train", "t3", (), 60.0), Unit("fit", "f1", (), 8.0), Unit("evaluate", "e2", (), 1.0)]
    assert balance(units, 2) == [1, 0, 1, 0, 1, 1]  # t1 t2 t3 by turns, then the light units to rank 1
    assert balance(units, 1) == [0] * 6
    assert balance(units, 2) == balance(list(units), 2)  # the same in every process


def test_a_stores_blocks_turn_over_the_processes_from_the_one_that_creates_it():
    assert Shard(1, 2, first=1).creates and [b for b in range(5) if Shard(1, 2, first=1).owns(b)] == [0, 2, 4]
    assert not Shard(0, 2, first=1).creates and [b for b in range(5) if Shard(0, 2, first=1).owns(b)] == [1, 3]
    assert [b for b in range(5) if Shard(0, 2).owns(b)] == [0, 2, 4]  # the default: rank 0 first, as before


@pytest.mark.parametrize("size", [1, 2, 3, 8])
def test_every_unit_of_the_plan_goes_to_one_process_after_what_it_needs(tmp_path, size):
    config = RunConfig(model="tiny-random", methods=("zero-shot", "mms", "ccs", "lora", "random"), layer=3, out=tmp_path,
                       store_root=str(tmp_path / "stores"), ttc_methods=("zero-shot", "mms", "ccs", "lora"))
    shifts = [Shift("easy", "hard", "extreme", "difficulty"),
              Shift("easy", "trap", "probing", "unwanted_personas", target_reference="ref")]
    plan = build_plan(config, shifts, DoneChecks(store_complete=lambda url: False, path_exists=lambda path: False))
    split = Assignment.of(plan, size)
    stores = [s for unit in split.extraction for s in unit.steps]
    fits = [s for units in [*split.fits, split.together] for unit in units for s in unit.steps
            if unit.kind in ("fit", "train")]
    early = [s for units in split.fits for unit in units for s in unit.steps if unit.kind == "evaluate"]
    late = [s for units in split.evaluations for unit in units for s in unit.steps]
    assert sorted(s.url for s in stores) == sorted(s.url for s in plan.stores)  # each once
    assert sorted(map(str, (f.path for f in fits))) == sorted(str(f.path) for f in plan.fits)
    assert sorted(str(e.path) for e in early + late) == sorted(str(e.path) for e in plan.evaluations)
    # an evaluation runs in the stage after its fit or training; those of the second stage need none
    assert {e.method for e in early} == {"zero-shot"} and {e.method for e in late} == {"mms", "ccs", "lora", "random"}
    # a process's evaluations of one test split are one unit
    for units in split.evaluations:
        tested = [unit.steps[0].tested_on for unit in units]
        assert len(tested) == len(set(tested)) and all(len({s.tested_on for s in u.steps}) == 1 for u in units)
    trainings = [sum(unit.kind == "train" for unit in units) for units in split.fits]
    assert max(trainings) - min(trainings) <= 1  # the training sets spread over the processes
    n_sets = sum(trainings) + len(split.together)  # fewer sets than processes (8): all together (DDP)
    assert len(split.together) == (n_sets if n_sets < size else n_sets % size)
    assert split.total == (len(split.extraction) + len(split.together) + sum(map(len, split.fits))
                           + sum(map(len, split.evaluations)))


# ----------------------------------------------------------------------------- every rank reads what rank 0 planned

def launch_by_hand(tmp_path, args_of, environment_of, cwd_of=lambda rank: REPO):
    """Two processes started one by one (as srun would), each with its own arguments, environment and cwd."""
    port = str(free_port())
    processes = [subprocess.Popen([sys.executable, "-m", "genies", *args_of(rank)], cwd=cwd_of(rank), text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env={**ENVIRONMENT, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
                                       "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
                                       **environment_of(rank)}) for rank in (0, 1)]
    return [(process.communicate(timeout=400), process.returncode) for process in processes]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


@pytest.fixture(scope="module")
def two_data_dirs(tmp_path_factory):
    """A manifest of one shift, its data, and a copy of the data whose target test labels are flipped."""
    from conftest import example, write_distribution

    base = tmp_path_factory.mktemp("rank-data")
    examples = [example(f"Add {i} and 2.\n### Response:\n", {f"{i + 2}": 1.0, f"{i + 3}": 0.0}) for i in range(8)]
    flipped = [{**e, "responses": {text: 1.0 - score for text, score in e["responses"].items()}} for e in examples]
    for name, test in (("right", examples), ("flipped", flipped)):
        write_distribution(base / name, "easy", train=examples)
        write_distribution(base / name, "hard", train=examples, test=test)
    (base / "shifts.json").write_text(json.dumps([{"source": "easy", "target": "hard"}]))
    return base


def small_run(where: Path, out: str, *extra) -> list[str]:
    return ["run", "--model", "tiny-random", "--shifts", str(where / "shifts.json"), "--methods", "zero-shot,mms",
            "--threads", "1", "--store-root", str(where / "stores"), "--out", str(where / out), *extra]


def test_a_rank_given_other_data_stops_the_launch_naming_itself_and_the_file(two_data_dirs):
    where = two_data_dirs
    (_, rank0_err), rank0_code = (done := launch_by_hand(
        where, lambda rank: small_run(where, "mixed-data"),
        lambda rank: {"GENIES_DATA": str(where / ("right" if rank == 0 else "flipped"))}))[0]
    (_, rank1_err), rank1_code = done[1]
    assert (rank0_code, rank1_code) == (2, 2), (rank0_err[-3000:], rank1_err[-3000:])
    flipped_file = where / "flipped" / "distributions" / "hard" / "test.json"
    assert error_lines(rank1_err) == [error_lines(rank1_err)[0]] and error_lines(rank1_err)[0].startswith(
        f"error: process rank 1 of 2 stops: {flipped_file}: not the data file rank 0 planned with"), rank1_err
    assert "rank 1: " in error_lines(rank0_err)[0] and str(flipped_file) in error_lines(rank0_err)[0], rank0_err
    assert not (where / "mixed-data" / "results.csv").exists()
    assert "Traceback" not in rank0_err + rank1_err


def test_a_rank_given_other_settings_stops_the_launch(two_data_dirs):
    where = two_data_dirs
    done = launch_by_hand(where, lambda rank: small_run(where, "mixed-limit", "--limit", "4" if rank == 0 else "6"),
                          lambda rank: {"GENIES_DATA": str(where / "right")})
    (_, rank1_err), rank1_code = done[1]
    assert rank1_code == 2 and error_lines(rank1_err) == [
        "error: process rank 1 of 2 stops: --limit 6 here, but rank 0 was given 4: give every process the same "
        "command"], rank1_err
    assert done[0][1] == 2 and not (where / "mixed-limit" / "results.csv").exists()


def test_a_rank_that_reaches_another_model_by_the_same_path_stops_the_launch(two_data_dirs, tmp_path):
    from actstore.models import tiny_random_llama

    where = two_data_dirs
    for rank in (0, 1):  # the same relative path, two checkpoints (one per node's disk)
        tiny = tiny_random_llama(seed=rank)
        tiny.model.save_pretrained(tmp_path / f"node{rank}" / "model")
        tiny.tokenizer.save_pretrained(tmp_path / f"node{rank}" / "model")
    args = [a if a != "tiny-random" else "model" for a in small_run(where, "mixed-model", "--limit", "4")]
    done = launch_by_hand(where, lambda rank: args, lambda rank: {"GENIES_DATA": str(where / "right")},
                          cwd_of=lambda rank: tmp_path / f"node{rank}")
    (_, rank1_err), rank1_code = done[1]
    assert rank1_code == 2 and error_lines(rank1_err)[0].startswith(
        "error: process rank 1 of 2 stops: model: not the model rank 0 planned with"), rank1_err
