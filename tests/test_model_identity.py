"""A local model is identified by its content, not the path typed: other weights at the same path
never reuse the stores or the run directory made from the first ones."""

import shutil
from pathlib import Path

import pytest

from common import UserError
from actstore.engine.extraction import ExtractConfig, extract
from actstore.models import model_fingerprint, tiny_random_llama
from conftest import TOY_EXAMPLES, write_distribution


def save(directory, seed):
    tiny = tiny_random_llama(seed=seed)
    tiny.model.save_pretrained(directory)
    tiny.tokenizer.save_pretrained(directory)
    return str(directory)


def test_the_fingerprint_follows_the_content_not_the_path(tmp_path):
    first = save(tmp_path / "a", seed=0)
    copy = shutil.copytree(first, tmp_path / "copy")
    other = save(tmp_path / "b", seed=1)
    assert model_fingerprint(first) == model_fingerprint(str(copy)) != model_fingerprint(other)
    assert model_fingerprint("tiny-random") is None and model_fingerprint("smollm2-135m") is None


def test_other_weights_at_the_same_path_do_not_reuse_its_stores(tmp_path, monkeypatch):
    data = write_distribution(tmp_path / "data", "toy", TOY_EXAMPLES, TOY_EXAMPLES)
    monkeypatch.chdir(tmp_path)
    settings = dict(model="model", datasets=("toy",), splits=("test",), data_dir=str(data), out=str(tmp_path / "s"),
                    progress=False, compute_dtype="float32", layers="1")
    save(tmp_path / "model", seed=0)
    [made] = extract(ExtractConfig(**settings))
    [again] = extract(ExtractConfig(**settings))
    assert again.status == "complete" and again.blocks_computed == 0  # the same weights: reused
    shutil.rmtree(tmp_path / "model")
    save(tmp_path / "model", seed=1)  # another checkpoint, same relative path
    with pytest.raises(UserError, match="model_fingerprint"):
        extract(ExtractConfig(**settings))
    [redone] = extract(ExtractConfig(**settings, overwrite=True))
    assert redone.blocks_computed > 0 and redone.url == made.url


def edit_between_samples(weights: Path) -> None:
    """Change bytes of ``weights`` in place, between the pieces a sampling fingerprint would read (16 pieces of
    4 KiB spread over the file, after its first 64 KiB), keeping its size and modification time."""
    import os

    state = weights.stat()
    raw = bytearray(weights.read_bytes())
    size = len(raw)
    start = size * 8 // 17 + 4096 + 64  # after the 8th piece, before the 9th
    assert start > 1 << 16 and start + 1024 < size * 9 // 17
    raw[start:start + 1024] = bytes(b ^ 0x5A for b in raw[start:start + 1024])
    weights.write_bytes(bytes(raw))
    os.utime(weights, ns=(state.st_atime_ns, state.st_mtime_ns))
    assert weights.stat().st_size == state.st_size and weights.stat().st_mtime_ns == state.st_mtime_ns


def test_every_byte_of_a_checkpoint_is_in_its_fingerprint(tmp_path, monkeypatch):
    from actstore.models import fingerprint

    monkeypatch.setenv("GENIES_HOME", str(tmp_path / "home"))
    data = write_distribution(tmp_path / "data", "toy", TOY_EXAMPLES, TOY_EXAMPLES)
    model = save(tmp_path / "model", seed=0)
    settings = dict(model=model, datasets=("toy",), splits=("test",), data_dir=str(data), out=str(tmp_path / "s"),
                    progress=False, compute_dtype="float32", layers="1")
    extract(ExtractConfig(**settings))
    first = model_fingerprint(model)
    edit_between_samples(tmp_path / "model" / "model.safetensors")
    assert model_fingerprint(model) != first
    with pytest.raises(UserError, match="model_fingerprint"):  # never reported complete from the old weights
        extract(ExtractConfig(**settings))

    hashed = []
    real = fingerprint.file_sha256
    monkeypatch.setattr(fingerprint, "file_sha256", lambda path: hashed.append(path) or real(path))
    again = model_fingerprint(model)
    assert hashed == []  # unchanged files: their digests are kept beside their state
    copy = shutil.copytree(tmp_path / "model", tmp_path / "copy")
    assert model_fingerprint(str(copy)) == again and len(hashed) == len(list(copy.iterdir()))  # a copy: read once


def test_a_run_directory_refuses_other_weights_at_the_same_path(tmp_path):
    from genies.plan import RunConfig, check_reusable
    from genies.runner import _run_settings

    model = save(tmp_path / "model", seed=0)
    config = RunConfig(model=model, out=tmp_path / "run")
    recorded = _run_settings(config, None, "now")
    check_reusable(recorded, config)
    shutil.rmtree(model)
    save(tmp_path / "model", seed=1)
    with pytest.raises(UserError, match="made with different settings: model_fingerprint"):
        check_reusable(recorded, RunConfig(model=model, out=tmp_path / "run"))


def test_a_hub_id_is_identified_by_the_revision_its_cache_resolves_to(tmp_path, monkeypatch):
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    repo = cache / "models--org--tiny"
    for revision in ("aaa111", "bbb222"):
        (repo / "snapshots" / revision).mkdir(parents=True)
        (repo / "snapshots" / revision / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("aaa111")
    assert model_fingerprint("org/tiny") == "revision:aaa111"
    (repo / "refs" / "main").write_text("bbb222")  # the cache moved on: stores of the old weights are not these
    assert model_fingerprint("org/tiny") == "revision:bbb222"
    assert model_fingerprint("org/not-cached") is None and model_fingerprint("no such/name here") is None
