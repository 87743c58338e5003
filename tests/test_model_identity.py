"""A local model is identified by its content, not the path typed: other weights at the same path
never reuse the stores or the run directory made from the first ones."""

import shutil

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
