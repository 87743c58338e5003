"""The time split of an extraction: every stage measured, nothing counted twice."""

import time

from actstore import open_store
from actstore.engine.extraction import extract
from actstore.engine.stage_clock import StageClock
from test_extract import config, data_dir  # noqa: F401, F811  (data_dir is a fixture)


def test_stage_clock_accumulates_per_stage_and_synchronizes_at_boundaries():
    syncs = []
    clock = StageClock(synchronize=lambda: syncs.append(1))
    for _ in range(2):
        with clock.stage("forward"):
            time.sleep(0.01)
    assert 0.02 <= clock.seconds["forward"] < 0.5 and clock.seconds["write"] == 0.0
    assert len(syncs) == 4  # before and after each stage
    assert set(clock.totals()) == {"tokenize_s", "forward_s", "gather_s", "write_s"}


def test_extraction_reports_its_time_split(tiny_model, data_dir, tmp_path):
    [result] = extract(config(data_dir, tmp_path / "s"), loaded=tiny_model)
    split = result.timings
    assert min(split.tokenize_s, split.forward_s, split.gather_s, split.write_background_s) > 0
    stages = split.tokenize_s + split.forward_s + split.gather_s + split.write_s
    assert stages <= result.seconds * 1.01 + 1e-3  # stages never overlap in the main thread
    assert split.forward_s > split.tokenize_s
    recorded = open_store(result.url).meta["completion"]["timings"]
    assert set(recorded) == {"tokenize_s", "forward_s", "gather_s", "write_s", "write_background_s"}
