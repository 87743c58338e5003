from distributions.data import load_split
from distributions.demo_data import DISTRIBUTIONS, N_TEST, N_TRAIN, ensure_demo_data, write_demo_data
from distributions.inventory import validate_all
from manifests import load_manifest


def test_demo_data_is_valid_deterministic_and_covers_manifest(tmp_path):
    first = write_demo_data(tmp_path / "a")
    second = write_demo_data(tmp_path / "b")
    assert validate_all(first).problems == []
    for name in DISTRIBUTIONS:
        for split in ("train", "test"):
            a = (first / f"distributions/{name}/{split}.json").read_bytes()
            assert a == (second / f"distributions/{name}/{split}.json").read_bytes()
    for shift in load_manifest("demo"):
        assert {shift.source, shift.target, shift.reference} <= set(DISTRIBUTIONS)
    train = load_split(first, "arith_easy", "train")
    assert len(train.examples) == N_TRAIN and len(load_split(first, "arith_easy", "test").examples) == N_TEST
    assert {len(e.responses) for e in train.examples} == {3}


def test_length_cue_flips_between_source_and_target(tmp_path):
    root = write_demo_data(tmp_path)

    def best_is_longer(name):
        split = load_split(root, name, "test")
        return sum(len(e.responses[e.best]) > max(len(r) for i, r in enumerate(e.responses) if i != e.best)
                   for e in split.examples) / len(split.examples)

    assert best_is_longer("compare_long_right") == 1.0
    assert best_is_longer("compare_long_wrong") == 0.0


def test_preferred_position_is_not_constant(tmp_path):
    root = write_demo_data(tmp_path)
    bests = {e.best for e in load_split(root, "arith_easy", "train").examples}
    assert len(bests) == 3


def test_ensure_demo_data_writes_once(tmp_path):
    root = ensure_demo_data(tmp_path)
    stamp = (root / "VERSION").stat().st_mtime_ns
    assert ensure_demo_data(tmp_path) == root and (root / "VERSION").stat().st_mtime_ns == stamp
