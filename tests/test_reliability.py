"""Extraction that survives: SIGKILL and resume, two processes into one store, the lock, memory:// stores.

The subprocess tests run the real command line (``python -m actstore`` / tests/kill_driver.py)
with one thread each, and compare with the same command run in this process (also one
thread), array by array, bitwise.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from actstore import open_store
from common import UserError
from actstore.store.lock import ExtractionLock, lock_dir
from actstore.store.sharding import Shard, wait_for_creation
from actstore.store import find_store
from cli import actstore
from conftest import REPO, write_distribution

EXAMPLES = [
    {"prompt": f"Question {i}: what is {i} plus {i}?\n### Response:\n",
     "responses": {str(2 * i): 1.0, str(2 * i + 1): 0.0, f"It is {i}{i}, clearly.": 0.0}}
    for i in range(6)
]  # 18 sequences; block size 3 -> 6 blocks
ARRAYS = ("residual", "final_norm", "loglik", "n_tokens", "last_token", "example", "response", "score", "block_done")



@pytest.fixture
def data_dir(tmp_path):
    return write_distribution(tmp_path / "data", "toy", train=EXAMPLES, test=EXAMPLES)


def extract_args(data_dir, out) -> list[str]:
    return ["extract", "--model", "tiny-random", "--dataset", "toy", "--split", "test", "--data-dir", str(data_dir),
            "--out", str(out), "--block-size", "3", "--batch-tokens", "200", "--no-progress"]


def store_url(out) -> str:
    return f"{out}/tiny-random/toy/test.plain.zarr"


def run_here(args) -> str:
    result = CliRunner().invoke(actstore, args)
    assert result.exit_code == 0, result.output
    return result.output


def arrays(url) -> dict[str, np.ndarray]:
    group = open_store(url).group
    return {name: group[name][:] for name in ARRAYS}


def assert_bitwise_equal(url, reference_url):
    got, expected = arrays(url), arrays(reference_url)
    for name in ARRAYS:
        assert got[name].dtype == expected[name].dtype, name
        assert got[name].tobytes() == expected[name].tobytes(), f"{name} differs from the uninterrupted run"


def subprocess_env(**extra) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(name, None)
    return {**env, **extra}


def state(url) -> tuple[int, bool]:
    """(blocks flagged, complete) of the store at ``url``."""
    store = find_store(url)
    if store is None or store.meta.get("creating"):
        return 0, False
    return int(store.blocks_done().sum()), bool(store.meta.get("complete"))


# ----------------------------------------------------------------------------- SIGKILL and resume


def test_sigkill_at_several_points_then_resume_is_bitwise_equal(data_dir, tmp_path):
    run_here(extract_args(data_dir, tmp_path / "whole"))
    reference = store_url(tmp_path / "whole")
    args, url = extract_args(data_dir, tmp_path / "cut"), store_url(tmp_path / "cut")
    driver = str(REPO / "tests" / "kill_driver.py")
    flagged = []
    # each run resumes the previous one's store and is killed further along:
    # in a forward pass of block 2 (one batch per block here, prompt pass and responses, so well past block 0),
    # in the middle of a block's write (residual and final norm written, flag not), and just before `complete`.
    for kill_at, where in [("forward:5", "killed at forward 5"), ("write:9", "killed at write 9 (block"),
                           ("complete", "killed at complete")]:
        died = subprocess.run([sys.executable, driver, *args], env=subprocess_env(KILL_AT=kill_at), cwd=REPO,
                              capture_output=True, text=True, timeout=120)
        assert died.returncode == -9, died.stderr
        assert where in died.stderr
        done, complete = state(url)
        assert not complete, f"reported complete after a kill at {kill_at}"
        with pytest.raises(UserError, match="incomplete store"):
            open_store(url)
        assert list(lock_dir(url).glob("*.json")), "a killed process leaves its lock file behind"
        flagged.append(done)
    n_blocks = 6
    assert 0 <= flagged[0] < flagged[1] < n_blocks and flagged[2] == n_blocks, flagged

    output = run_here(args)  # the same command again: the dead process's lock is stale, the store is finished
    assert "(resumed: 18 sequences" in output
    assert open_store(url).meta["completion"]["blocks_computed"] == 0
    assert_bitwise_equal(url, reference)
    assert not lock_dir(url).exists()


class Killed(Exception):
    """Stands for the process dying (click would turn a KeyboardInterrupt into exit 1)."""


def test_killed_store_creation_is_redone(data_dir, tmp_path, monkeypatch):
    """A store whose creation died (arrays made, attributes not) is created again, not refused as foreign."""
    import zarr

    real_create_array = zarr.Group.create_array

    def die_at_block_done(self, name, **kwargs):
        if name == "block_done":
            raise Killed
        return real_create_array(self, name, **kwargs)

    monkeypatch.setattr(zarr.Group, "create_array", die_at_block_done)
    with pytest.raises(Killed):
        CliRunner().invoke(actstore, extract_args(data_dir, tmp_path / "s"), catch_exceptions=False)
    monkeypatch.undo()
    url = store_url(tmp_path / "s")
    result = CliRunner().invoke(actstore, ["info", url])
    assert result.exit_code == 2 and "creation was interrupted" in result.output
    listing = CliRunner().invoke(actstore, ["ls", str(tmp_path / "s")])
    assert listing.exit_code == 0 and "creation was interrupted" in listing.output and "1 stores" in listing.output
    with pytest.raises(UserError, match="creation was interrupted"):
        open_store(url)
    assert "(created: 18 sequences" in run_here(extract_args(data_dir, tmp_path / "s"))
    assert open_store(url).meta["complete"]


# ----------------------------------------------------------------------------- several processes


def test_two_processes_fill_one_store_equal_to_one_process(data_dir, tmp_path):
    run_here(extract_args(data_dir, tmp_path / "one"))
    args = extract_args(data_dir, tmp_path / "two")
    processes = [subprocess.Popen([sys.executable, "-m", "actstore", *args], cwd=REPO, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True,
                                  env=subprocess_env(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank)))
                 for rank in range(2)]
    outputs = [process.communicate(timeout=120) for process in processes]
    for process, (stdout, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr
    url = store_url(tmp_path / "two")
    store = open_store(url)  # complete
    assert store.meta["completion"]["blocks_computed"] == 3  # the last process to finish wrote its 3 blocks
    statuses = sorted(stdout.split("(")[1].split(":")[0] for stdout, _ in outputs)
    assert statuses in (["created", "partial"], ["partial", "resumed"]), statuses
    assert_bitwise_equal(url, store_url(tmp_path / "one"))
    assert not lock_dir(url).exists()


def test_shard_from_environment():
    assert Shard.from_environment({}) == Shard(0, 1)
    shard = Shard.from_environment({"RANK": "1", "WORLD_SIZE": "3"})
    assert [b for b in range(8) if shard.owns(b)] == [1, 4, 7] and not shard.is_main
    with pytest.raises(UserError, match="rank 3 is not within world size 2"):
        Shard.from_environment({"RANK": "3", "WORLD_SIZE": "2"})
    with pytest.raises(UserError, match="WORLD_SIZE='two' is not an integer"):
        Shard.from_environment({"WORLD_SIZE": "two"})


# ----------------------------------------------------------------------------- the lock


def test_second_extraction_into_a_running_store_is_refused(data_dir, tmp_path):
    url = store_url(tmp_path / "s")
    with ExtractionLock(url):  # another extraction (this process) holds the store
        result = CliRunner().invoke(actstore, extract_args(data_dir, tmp_path / "s"))
        assert result.exit_code == 2
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {url}: another extraction is writing this store (pid {os.getpid()}")
        assert find_store(url) is None  # refused before anything was written
    run_here(extract_args(data_dir, tmp_path / "s"))  # released: now it runs


def write_lock(url, rank=0, world_size=1, pid=None, host=None, age_s=0.0) -> Path:
    directory = lock_dir(url)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"rank{rank}-of{world_size}.json"
    path.write_text(json.dumps({"pid": pid or os.getpid(), "host": host or socket.gethostname(), "rank": rank,
                                "world_size": world_size, "started": time.time() - age_s}))
    os.utime(path, (time.time() - age_s, time.time() - age_s))
    return path


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_stale_locks_are_taken_over_and_live_ones_refused(tmp_path):
    url = str(tmp_path / "a.plain.zarr")
    write_lock(url, pid=dead_pid())  # same host, process gone
    with ExtractionLock(url) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not lock_dir(url).exists()

    write_lock(url, host="elsewhere", pid=1, age_s=3600)  # another host, heartbeat an hour old
    with ExtractionLock(url):
        pass

    write_lock(url, host="elsewhere", pid=1, age_s=5)  # another host, fresh heartbeat: live
    with pytest.raises(UserError, match=r"another extraction is writing this store \(pid 1 on elsewhere, last heartbeat 5 s"):
        ExtractionLock(url).__enter__()
    # another process of the same run (other rank, same world size) is not a conflict; another world size is
    url = str(tmp_path / "b.plain.zarr")
    write_lock(url, rank=0, world_size=2, host="elsewhere", pid=1)
    with ExtractionLock(url, Shard(1, 2)):
        pass
    with pytest.raises(UserError, match="rank 0 of 2"):
        ExtractionLock(url, Shard(2, 3)).__enter__()


def test_a_waiting_rank_sees_rank_0_stop(tmp_path):
    url = str(tmp_path / "a.plain.zarr")
    with ExtractionLock(url, Shard(1, 2)) as lock:
        assert not lock.main_rank_gone()  # rank 0 has not started: keep waiting
        main = write_lock(url, rank=0, world_size=2)  # rank 0 alive (this process)
        assert not lock.main_rank_gone()
        main.unlink()  # rank 0 released its lock without creating the store
        with pytest.raises(UserError, match=r"rank 1 stops: rank 0 of this run stopped before creating the store"):
            wait_for_creation(url, lambda: None, rank=1, main_gone=lock.main_rank_gone, timeout_s=60, poll_s=0.01)
        # ...unless the store is there after all
        assert wait_for_creation(url, lambda: "store", rank=1, main_gone=lambda: True) == "store"
    url = str(tmp_path / "b.plain.zarr")
    write_lock(url, rank=0, world_size=2, pid=dead_pid(), age_s=7200)  # left by an earlier run
    with ExtractionLock(url, Shard(1, 2)) as lock:
        assert not lock.main_rank_gone()
        write_lock(url, rank=0, world_size=2, pid=dead_pid())  # this run's rank 0, died
        assert lock.main_rank_gone()


def test_extraction_on_rank_1_stops_at_once_when_rank_0_died(data_dir, tmp_path, monkeypatch):
    write_lock(store_url(tmp_path / "s"), rank=0, world_size=2, pid=dead_pid())
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    began = time.monotonic()
    result = CliRunner().invoke(actstore, extract_args(data_dir, tmp_path / "s"))
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "rank 0 of this run stopped before creating the store" in lines[0]
    assert time.monotonic() - began < 120  # not the 30-minute creation wait
    assert find_store(store_url(tmp_path / "s")) is None


def test_lock_heartbeat_keeps_the_file_fresh(tmp_path):
    url = str(tmp_path / "a.plain.zarr")
    with ExtractionLock(url, heartbeat_s=0.05) as lock:
        os.utime(lock.path, (0, 0))
        time.sleep(0.3)
        assert time.time() - lock.path.stat().st_mtime < 5


def test_remote_urls_are_not_locked():
    with ExtractionLock("memory://x/a.plain.zarr") as lock:
        assert lock.directory is None
    assert lock_dir("file:///tmp/s/a.plain.zarr") == Path("/tmp/s/a.plain.zarr.lock")


# ----------------------------------------------------------------------------- memory:// round trip


def test_memory_store_round_trip_into_probes(data_dir):
    from probes import make_probe
    from probes.sources import StoreSource

    root = "memory://reliability-test/stores"
    output = run_here(["extract", "--model", "tiny-random", "--dataset", "toy", "--split", "train,test", "--data-dir",
                       str(data_dir), "--out", root, "--layers", "2,4", "--no-progress"])
    assert output.count("(created: 18 sequences") == 2
    source = StoreSource(f"{root}/tiny-random/toy/train.plain.zarr")
    probe = make_probe("mms", 2).fit(source)
    assert probe.trained_on_["dataset"] == "toy" and probe.trained_on_["fingerprint"].startswith("sha256:")
    margins = probe.margins(source.test_split())
    assert margins.shape == (12,) and np.isfinite(margins).all()  # 6 examples x 2 (best, other) pairs
    fitted = CliRunner().invoke(probes_cli(), ["fit", "--method", "logreg", "--layer", "4", "--train",
                                              f"{root}/tiny-random/toy/train.plain.zarr", "--bootstrap", "0"])
    assert fitted.exit_code == 0, fitted.output
    assert "toy/test" in fitted.output


def probes_cli():
    from cli import probes

    return probes
