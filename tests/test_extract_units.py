"""Pure pieces of extraction: layer specs, batch planning, padding, positions, store names."""

import pytest
import torch

from actstore.engine.batching import EncodedSequence, pad_batch, plan_batches
from common import UserError
from actstore.engine.forward import continuation_positions
from actstore.store.layers import parse_layers
from actstore.store.locations import model_slug, store_location, store_name, store_url


def test_parse_layers_forms():
    assert parse_layers("all", 4) == (0, 1, 2, 3, 4)
    assert parse_layers("3,0,3", 4) == (0, 3)
    assert parse_layers("1:3", 4) == (1, 2, 3)  # inclusive
    assert parse_layers("0, 2:3 ,4", 4) == (0, 2, 3, 4)


@pytest.mark.parametrize("spec, message", [
    ("5", "layer 5 is out of range for m: layers are 0..4"),
    ("-1", "layer -1 is out of range"),
    ("3:1", "range '3:1' is empty"),
    ("ten", "'ten' is not a layer number"),
    (",", "no layers named"),
])
def test_parse_layers_errors(spec, message):
    with pytest.raises(UserError, match=message):
        parse_layers(spec, 4, model="m")


def test_plan_batches_fills_budget_longest_first():
    lengths = [5, 9, 3, 9, 7, 2]
    batches = plan_batches(lengths, batch_tokens=20)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert batches[0] == [1, 3]  # the two longest, in file order among equals
    for batch in batches:
        assert len(batch) * max(lengths[i] for i in batch) <= 20
    assert plan_batches([50, 3], batch_tokens=10) == [[0], [1]]  # too long: a batch of its own


def test_plan_batches_starts_a_new_batch_below_min_fill():
    # 10 < 0.75 x 100: the short rows are not padded to the outlier's length, although they would fit
    assert plan_batches([100, 10, 10, 80], batch_tokens=1000) == [[0, 3], [1, 2]]
    assert plan_batches([100, 10, 10, 80], batch_tokens=1000, min_fill=0.0) == [[0, 3, 1, 2]]


def test_plan_batches_counts_cached_tokens_against_the_budget_not_the_fill():
    # rows on a 100-token cache: 2 x (100 + 9) fits 250, a third would not
    lengths = [2, 9, 1, 1, 9, 3]
    batches = plan_batches(lengths, batch_tokens=250, cached=100)
    assert batches[0] == [1, 4]
    for batch in batches:
        assert len(batch) * (100 + max(lengths[i] for i in batch)) <= 250
    # the fill compares the rows' own tokens (2 < 0.75 x 3), not the cached width with them (102 > 0.75 x 103)
    assert batches == [[1, 4], [5], [0], [2, 3]]
    assert plan_batches([n + 100 for n in lengths], batch_tokens=250) == [[1, 4], [5, 0], [2, 3]]


def test_plan_batches_keeps_short_rows_together_within_min_padding():
    # 1 and 3 are far below 0.75 x 9, but padding them to 9 costs at most 8 tokens a row: one pass
    assert plan_batches([9, 1, 3], batch_tokens=1000, cached=50) == [[0], [2], [1]]
    assert plan_batches([9, 1, 3], batch_tokens=1000, cached=50, min_padding=8) == [[0, 2, 1]]
    assert plan_batches([40, 1], batch_tokens=1000, min_padding=8) == [[0], [1]]  # 39 padded tokens: apart


@pytest.mark.parametrize("side", ["right", "left"])
def test_pad_batch_positions_and_last_token(side):
    sequences = [EncodedSequence((1, 2), (3,)), EncodedSequence((1, 4, 5, 6), (7, 8))]
    batch = pad_batch(sequences, pad_id=0, side=side)
    assert batch.input_ids.shape == (2, 6)
    last = batch.last_positions
    assert batch.input_ids[torch.arange(2), last].tolist() == [3, 8]
    positions = batch.position_ids[batch.attention_mask.bool()]
    assert positions.tolist() == [0, 1, 2, 0, 1, 2, 3, 4, 5]
    rows, columns = continuation_positions(batch.offsets, batch.prompt_lengths, batch.lengths)
    assert batch.input_ids[rows, columns].tolist() == [3, 7, 8]


def test_store_names_keep_the_view_last():
    assert store_name("test", "plain") == "test.plain.zarr"
    assert store_name("train", "yes", limit=62, site="heads") == "train.limit62.heads.yes.zarr"
    url = store_url("memory://root/", "org/Model-7B", "alpaca_mmlu", "test", "yes")
    assert url == "memory://root/org--Model-7B/alpaca_mmlu/test.yes.zarr"  # the limit is not in the name
    assert model_slug("smollm2-135m") == "smollm2-135m"


def test_stores_are_named_model_dataset_split_view():
    root = "memory://root"
    assert store_location("smollm2-135m/alpaca_mmlu/train", root=root) == f"{root}/smollm2-135m/alpaca_mmlu/train.plain.zarr"
    assert store_location("smollm2-135m/alpaca_mmlu/test/yes", root=root, limit=20) == \
        f"{root}/smollm2-135m/alpaca_mmlu/test.yes.zarr"
    assert store_location("org/Model-7B/alpaca_mmlu/test/no", root=root) == f"{root}/org--Model-7B/alpaca_mmlu/test.no.zarr"
    for as_is in ("s3://bucket/x/test.plain.zarr", "/abs/path", "./rel/a/b/test", "runs/a/test.plain.zarr"):
        assert store_location(as_is, root=root) == as_is
    assert store_location("not/a-name", root=root) == "not/a-name"  # the caller reports "no store here"
