import json

import numpy as np
import pytest

from common import UserError
from genies.mixing import MixedSource, choose_mixed_examples, write_mixed_distribution
from probes.labels import Labels
from probes.sources import ArraySource
from conftest import example, write_distribution


def source_of(n_examples: int, value: float, first_example: int = 0) -> ArraySource:
    example_ids = np.repeat(np.arange(first_example, first_example + n_examples), 2)
    is_best = np.tile([True, False], n_examples)
    features = np.full((2 * n_examples, 3), value, dtype=np.float32) + np.arange(2 * n_examples)[:, None]
    return ArraySource(Labels(example_ids, is_best), {"plain": {4: features, 5: features}}, meta={"name": f"d{value}"})


def test_choose_mixed_examples_is_seeded_and_bounded():
    a = choose_mixed_examples(10, 3, seed=1)
    assert list(a) == sorted(a) and len(set(a)) == 3 and (a < 10).all()
    assert list(a) == list(choose_mixed_examples(10, 3, seed=1))
    with pytest.raises(UserError, match="only 2 training examples"):
        choose_mixed_examples(2, 3, seed=0)


def test_mixed_source_appends_k_whole_target_examples():
    source, target = source_of(4, 0.0), source_of(5, 100.0)
    mixed = MixedSource(source, target, k=2, seed=0)
    x = mixed.residual("plain", 4)
    assert x.shape == (8 + 4, 3)
    assert (x[:8] < 100).all() and (x[8:] >= 100).all()
    chosen = choose_mixed_examples(5, 2, seed=0)
    assert sorted(set(((x[8:, 0] - 100) // 2).astype(int))) == list(chosen)
    # ids stay distinct and every mixed example keeps its one best response
    assert len(np.unique(mixed.labels.example)) == 6
    best, other = mixed.labels.pairs
    assert len(best) == 6 and mixed.layers("plain") == [4, 5]


def test_write_mixed_distribution(tmp_path):
    source = [example(prompt=f"s{i}\n") for i in range(5)]
    target = [example(prompt=f"t{i}\n") for i in range(6)]
    write_distribution(tmp_path, "src", source)
    write_distribution(tmp_path, "tgt", target)
    name = write_mixed_distribution(tmp_path, "src", "tgt", k=2, seed=3, out_data_dir=tmp_path / "mixed", limit=4)
    assert name == "src+2xtgt"
    train = json.loads((tmp_path / "mixed/distributions" / name / "train.json").read_text())
    assert [e["prompt"] for e in train[:4]] == [f"s{i}\n" for i in range(4)]
    assert [e["prompt"] for e in train[4:]] == [f"t{i}\n" for i in choose_mixed_examples(4, 2, seed=3)]
