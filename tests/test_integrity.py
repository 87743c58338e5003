"""A store read returns exactly what was written, or fails in one line naming the store, the array,
the block and the repair command: missing, truncated and altered chunks, damaged metadata, flags
that disagree with the completion record; `--repair` restores the store bitwise."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from common import UserError
from actstore.store import open_store
from cli import actstore, probes
from conftest import example, write_distribution
from test_bad_input import fails

EXAMPLES = [example(f"Question {i}?\n### Response:\n", {f"right {i}": 1.0, f"wrong answer {i}": 0.0}) for i in range(8)]
LAYER_ROW = {0: 0, 2: 1}  # --layers 0,2: row of each layer in the residual array


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A complete plain store of 16 sequences in 8 blocks of 2, and the command that made it."""
    root = tmp_path_factory.mktemp("integrity")
    data = write_distribution(root / "data", "good", train=EXAMPLES, test=EXAMPLES)
    args = ["extract", "--model", "tiny-random", "--dataset", "good", "--split", "train", "--data-dir", str(data),
            "--out", str(root / "s"), "--layers", "0,2", "--block-size", "2", "--no-progress"]
    result = CliRunner().invoke(actstore, args)
    assert result.exit_code == 0, result.output
    return {"url": root / "s" / "tiny-random" / "good" / "train.plain.zarr", "args": args, "root": root}


@pytest.fixture
def store(pristine, tmp_path):
    """A fresh copy of the pristine store (and its extract command, pointed at the copy)."""
    root = tmp_path / "s"
    shutil.copytree(pristine["root"] / "s", root)
    args = [str(root) if a == str(pristine["root"] / "s") else a for a in pristine["args"]]
    return {"url": root / "tiny-random" / "good" / "train.plain.zarr", "args": args, "pristine": pristine["url"]}


def chunk(url, array, *index):
    return url / array / "c" / "/".join(map(str, index))


def delete(path):
    path.unlink()


def truncate(path):
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])


def flip_byte(path):
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    path.write_bytes(bytes(raw))


def fit(url):
    return ["fit", "--method", "mms", "--layer", "2", "--train", url, "--bootstrap", "0"]


@pytest.mark.parametrize("damage", [delete, truncate, flip_byte], ids=lambda f: f.__name__)
def test_damaged_activation_chunk_fails_every_read_and_repair_restores_it(store, damage):
    url = store["url"]
    damage(chunk(url, "residual", LAYER_ROW[2], 3, 0))
    where = ("array residual layer 2 block 3 (sequences 6-7)", "repair with: actstore extract", "--repair")
    fails(probes, fit(url), str(url), *where)
    fails(actstore, ["info", url, "--verify"], *where)
    with pytest.raises(UserError, match="block 3"):
        open_store(str(url)).activations(2)
    assert open_store(str(url)).activations(0).shape == (16, 64)  # the other layer's chunks are intact

    repaired = CliRunner().invoke(actstore, store["args"] + ["--repair"])
    assert repaired.exit_code == 0, repaired.output
    assert "repair:" in repaired.output and "block 3" in repaired.output
    verified = CliRunner().invoke(actstore, ["info", str(url), "--verify"])
    assert verified.exit_code == 0 and "8 written blocks" in verified.output, verified.output
    original, fixed = open_store(str(store["pristine"])), open_store(str(url))
    for layer in (0, 2):
        assert np.array_equal(original.activations(layer), fixed.activations(layer))
    assert CliRunner().invoke(probes, fit(str(url))).exit_code == 0


@pytest.mark.parametrize("damage", [truncate, flip_byte, delete], ids=lambda f: f.__name__)
def test_one_repair_restores_every_damaged_block_of_an_array(store, damage):
    """Several chunks of one array that will not decode (or are gone): one --repair recomputes them all."""
    url = store["url"]
    for block in (1, 3, 6):
        damage(chunk(url, "residual", LAYER_ROW[2], block, 0))
    damage(chunk(url, "residual", LAYER_ROW[0], 5, 0))
    line = fails(actstore, ["info", url, "--verify"], "array residual layer 0 block 5", "and 3 more damaged blocks")
    assert "Traceback" not in line
    repaired = CliRunner().invoke(actstore, store["args"] + ["--repair"])
    assert repaired.exit_code == 0, repaired.output
    assert "(repaired: 16 sequences" in repaired.output, repaired.output
    for block in (1, 3, 6):
        assert f"layer 2 block {block}" in repaired.output
    verified = CliRunner().invoke(actstore, ["info", str(url), "--verify"])
    assert verified.exit_code == 0, verified.output
    original, fixed = open_store(str(store["pristine"])), open_store(str(url))
    for layer in (0, 2):
        assert np.array_equal(original.activations(layer), fixed.activations(layer))


def test_a_repair_that_leaves_damage_exits_non_zero_naming_it(store, monkeypatch):
    """Damage the rewrite cannot reach (here: writing is made to skip the block) is said, never called repaired."""
    from actstore.store.activation_store import ActivationStore

    url = store["url"]
    flip_byte(chunk(url, "residual", LAYER_ROW[2], 3, 0))
    write_block = ActivationStore.write_block

    def skipping_the_residual_of_block_3(self, block, **arrays):
        write_block(self, block, **arrays)
        if block == 3:
            flip_byte(chunk(url, "residual", LAYER_ROW[2], 3, 0))

    monkeypatch.setattr(ActivationStore, "write_block", skipping_the_residual_of_block_3)
    result = CliRunner().invoke(actstore, store["args"] + ["--repair"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "--repair could not repair array residual layer 2 block 3" in errors[0], result.output


def test_chunk_from_another_block_is_caught(store):
    """Bytes that decode fine but belong elsewhere: only the per-block checksum can tell."""
    url = store["url"]
    target = chunk(url, "residual", LAYER_ROW[2], 5, 0)
    shutil.copyfile(chunk(url, "residual", LAYER_ROW[2], 4, 0), target)
    fails(probes, fit(url), "array residual layer 2 block 5", "checksum")


@pytest.mark.parametrize("array,index,fragment", [
    ("score", (1,), "array score block 1"),
    ("n_tokens", (2,), "array n_tokens block 2"),
    ("loglik", (0,), "array loglik block 0"),
    ("final_norm", (4, 0), "array final_norm block 4"),
])
def test_damaged_per_sequence_arrays_fail(store, array, index, fragment):
    url = store["url"]
    delete(chunk(url, array, *index))
    fails(actstore, ["info", url, "--verify"], fragment)
    if array != "final_norm":
        fails(probes, fit(url), fragment)
    repaired = CliRunner().invoke(actstore, store["args"] + ["--repair"])
    assert repaired.exit_code == 0, repaired.output
    assert CliRunner().invoke(actstore, ["info", str(url), "--verify"]).exit_code == 0


def test_deleted_block_flag_of_a_complete_store_is_an_inconsistency(store):
    url = store["url"]
    delete(chunk(url, "block_done", 6))
    fails(probes, fit(url), "inconsistent store: marked complete, but block 6", "--repair")
    fails(actstore, ["info", url], "inconsistent store")
    assert CliRunner().invoke(actstore, store["args"] + ["--repair"]).exit_code == 0
    assert CliRunner().invoke(actstore, ["info", str(url), "--verify"]).exit_code == 0


def test_deleted_checksum_chunk_counts_as_damage(store):
    url = store["url"]
    delete(chunk(url, "block_checksums", 2, 0))
    fails(probes, fit(url), "block 2")
    assert CliRunner().invoke(actstore, store["args"] + ["--repair"]).exit_code == 0
    assert CliRunner().invoke(actstore, ["info", str(url), "--verify"]).exit_code == 0


def test_corrupt_group_metadata_is_one_line_everywhere_and_overwrite_replaces_it(store):
    url = store["url"]
    (url / "zarr.json").write_text('{"zarr_format": 3, "node_type": "gr')
    fails(actstore, ["info", url], "damaged store metadata", "--overwrite")
    fails(probes, fit(url), "damaged store metadata")
    listed = CliRunner().invoke(actstore, ["ls", str(url.parents[2])])
    assert listed.exit_code == 0 and "damaged store metadata" in listed.output, listed.output
    fails(actstore, store["args"], "damaged store metadata")
    replaced = CliRunner().invoke(actstore, store["args"] + ["--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert CliRunner().invoke(actstore, ["info", str(url), "--verify"]).exit_code == 0


def test_edited_array_shape_is_one_line(store):
    url = store["url"]
    meta_path = url / "residual" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["shape"][1] = 40
    meta_path.write_text(json.dumps(meta))
    fails(probes, fit(url), "array residual has shape (2, 40, 64)", "damaged zarr.json")
    fails(actstore, ["info", url, "--verify"], "array residual has shape")


def test_corrupt_array_metadata_is_one_line(store):
    url = store["url"]
    (url / "residual" / "zarr.json").write_text("not json")
    fails(probes, fit(url), "array residual is missing or its metadata is damaged")


def test_store_removed_under_a_reader_is_refused_not_a_traceback(store):
    """What a reader sees when `extract --overwrite` replaces the store it has open."""
    opened = open_store(str(store["url"]))
    shutil.rmtree(store["url"])
    with pytest.raises(UserError):
        opened.activations(2)


def test_repair_of_a_healthy_store_changes_nothing(store):
    before = {p.relative_to(store["url"]): p.read_bytes() for p in store["url"].rglob("*") if p.is_file()}
    result = CliRunner().invoke(actstore, store["args"] + ["--repair"])
    assert result.exit_code == 0 and "complete" in result.output, result.output
    after = {p.relative_to(store["url"]): p.read_bytes() for p in store["url"].rglob("*") if p.is_file()}
    assert before == after


def test_disk_full_is_one_line_and_the_store_resumes(tmp_path, monkeypatch):
    """The file system refuses a write in the middle of extraction (simulated where zarr writes)."""
    import errno

    import zarr.storage

    data = write_distribution(tmp_path / "data", "good", train=EXAMPLES, test=EXAMPLES)
    args = ["extract", "--model", "tiny-random", "--dataset", "good", "--split", "train", "--data-dir", str(data),
            "--out", str(tmp_path / "s"), "--layers", "0,2", "--block-size", "2", "--no-progress"]
    real_set, writes = zarr.storage.LocalStore.set, [0]

    async def set_until_full(self, key, value):
        if "/c/" in key:
            writes[0] += 1
            if writes[0] > 60:  # past the labels and texts written at creation
                raise OSError(errno.ENOSPC, "No space left on device")
        return await real_set(self, key, value)

    monkeypatch.setattr(zarr.storage.LocalStore, "set", set_until_full)
    line = fails(actstore, args, "train.plain.zarr: disk full while writing block", "free)", "blocks still to write",
                 "re-run the same command to resume")
    assert "complete" not in line
    monkeypatch.setattr(zarr.storage.LocalStore, "set", real_set)
    url = tmp_path / "s" / "tiny-random" / "good" / "train.plain.zarr"
    with pytest.raises(UserError, match="incomplete store"):
        open_store(str(url))
    resumed = CliRunner().invoke(actstore, args)
    assert resumed.exit_code == 0 and "resumed" in resumed.output, resumed.output
    assert CliRunner().invoke(actstore, ["info", str(url), "--verify"]).exit_code == 0


def test_store_replaced_under_a_reader_says_so(store):
    """`extract --overwrite` re-creates the store while a reader has it open."""
    opened = open_store(str(store["url"]))
    result = CliRunner().invoke(actstore, store["args"] + ["--overwrite", "--layers", "0:2"])
    assert result.exit_code == 0, result.output
    with pytest.raises(UserError, match="was replaced while it was read"):
        opened.activations(2)


@pytest.mark.parametrize("key,value", [("layers", [0, 1]), ("fingerprint", "sha256:" + "0" * 64), ("dataset", "other"),
                                       ("label_checksums", {"example": [0] * 8, "response": [0] * 8, "score": [0] * 8})])
def test_edited_store_attributes_are_refused(store, key, value):
    """An edit that keeps the shapes (layer 2's row relabelled layer 1) would otherwise read as other data."""
    meta_path = store["url"] / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"][key] = value
    meta_path.write_text(json.dumps(meta))
    fails(probes, fit(store["url"]), "attributes changed since it was extracted", "--overwrite")
    fails(actstore, ["info", store["url"]], "attributes changed since it was extracted")


def test_an_edited_array_dtype_is_refused_though_its_bytes_check_out(store):
    """float32 bytes read as int32 would pass a checksum of the bytes; the sealed metadata refuses them."""
    url = store["url"]
    meta_path = url / "residual" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["data_type"], meta["fill_value"] = "int32", 0
    meta_path.write_text(json.dumps(meta))
    fails(probes, fit(url), "array residual's metadata", "not what the store was made with")
    fails(actstore, ["info", url, "--verify"], "array residual's metadata")


def test_arrays_moved_in_from_another_store_with_their_checksums_are_refused(store, tmp_path):
    """Another data set's store of the same shape: its activations moved in with their checksum table
    agree with each other, but not with this store, whose block checksums start from its own id."""
    others = [example(f"Other question {i}?\n### Response:\n", {f"yes {i}": 1.0, f"no answer {i}": 0.0}) for i in range(8)]
    data = write_distribution(tmp_path / "data", "good", train=others, test=others)
    args = [a for a in store["args"]]
    args[args.index("--data-dir") + 1], args[args.index("--out") + 1] = str(data), str(tmp_path / "other")
    result = CliRunner().invoke(actstore, args)
    assert result.exit_code == 0, result.output
    moved = tmp_path / "other" / "tiny-random" / "good" / "train.plain.zarr"
    for name in ("residual", "final_norm", "loglik", "n_tokens", "last_token", "block_checksums", "block_done"):
        shutil.rmtree(store["url"] / name)  # every array a block writes, and the block records
        shutil.copytree(moved / name, store["url"] / name)
    fails(actstore, ["info", store["url"], "--verify"], "does not match the checksum")
    fails(probes, fit(store["url"]), "does not match the checksum")
