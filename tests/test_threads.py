"""The thread count: the free cores by default, --threads to set it, restored afterwards, nested blocks inherit."""

import subprocess
import sys
import threading
import time

import pytest
import torch
from click.testing import CliRunner

import cli
from actstore.engine.threads import busy_cores, compute_threads, free_cores


def test_free_cores_leave_the_busy_ones_to_the_other_work():
    assert free_cores(cores=2, load=0.1) == 2
    assert free_cores(cores=2, load=1.2) == 1
    assert free_cores(cores=2, load=5.0) == 1  # never none
    assert free_cores(cores=16, load=3.4) == 13
    assert free_cores(cores=4, load=0.0) == 4


def test_busy_cores_count_other_processes_not_this_one():
    quiet = busy_cores(1.0)
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        with_other = busy_cores(1.0)
    finally:
        spinner.kill()
        spinner.wait()
    assert with_other > quiet + 0.3  # another process's core shows
    stop = threading.Event()
    own = threading.Thread(target=lambda: [None for _ in iter(stop.is_set, True)])  # this process, spinning
    own.start()
    try:
        with_own = busy_cores(1.0)
    finally:
        stop.set()
        own.join()
    assert with_own < quiet + 0.5  # this process's own work is not "other work"


def test_threads_are_set_inside_restored_after_and_inherited_by_nested_work():
    before = torch.get_num_threads()
    with compute_threads(1) as outer:
        assert outer == 1 and torch.get_num_threads() == 1
        with compute_threads(None) as inner:  # genies run's extractions take the run's count
            assert inner == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("command", [["actstore", "extract", "--dataset", "arith_easy"], ["genies", "run", "--shifts", "demo"]])
def test_threads_below_one_is_a_one_line_error(command, tmp_path):
    group, *args = command
    result = CliRunner().invoke(getattr(cli, group), [*args, "--model", "tiny-random", "--threads", "0",
                                                     "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert result.output.strip().count("\n") == 0 and "--threads must be at least 1" in result.output
    assert not (tmp_path / "out").exists()
