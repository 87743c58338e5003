import pytest
import torch

from common import UserError
from actstore.models import load_model, tiny_random_llama


def test_tiny_model_is_deterministic_llama():
    a, b = tiny_random_llama(seed=3), tiny_random_llama(seed=3)
    assert type(a.model).__name__ == "LlamaForCausalLM"
    ids = a.tokenizer("hello", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(a.model(ids).logits, b.model(ids).logits)
    assert a.tokenizer.decode(a.tokenizer("héllo wörld").input_ids) == "héllo wörld"


def test_alias_resolves_tiny_model():
    loaded = load_model("tiny-random")
    assert loaded.n_layers == 4 and loaded.hidden_size == 64 and loaded.tokenizer.pad_token is not None


def test_unknown_model_is_a_clear_error():
    with pytest.raises(UserError, match="cannot resolve model 'no-such-org/no-such-model'.*not an alias"):
        load_model("no-such-org/no-such-model")


def test_local_path_loads(tmp_path):
    tiny = tiny_random_llama()
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path))
    assert loaded.n_layers == 4 and str(tmp_path) in loaded.model_id


@pytest.mark.bundled
def test_bundled_model_loads(bundled_model):
    assert bundled_model.n_layers == 30 and bundled_model.hidden_size == 576
    assert bundled_model.model.config.num_attention_heads == 9
    ids = bundled_model.tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        next_token = bundled_model.model(ids).logits[0, -1].argmax()
    assert bundled_model.tokenizer.decode(next_token).strip() == "Paris"


@pytest.mark.bundled
def test_damaged_bundled_model_cache_is_rebuilt_not_loaded(bundled_model, tmp_path, monkeypatch, capsys):
    """The dequantized GGUF cache is sealed: a damaged weights file is rebuilt from the package."""
    import shutil

    from actstore.models import ModelSpec, load_model
    from common import default_model_cache

    reference = load_model(ModelSpec("smollm2-135m", compute_dtype="bfloat16"))
    for name in ("smollm2-135m", "smollm2-135m.bfloat16"):
        shutil.copytree(default_model_cache() / name, tmp_path / "models" / name)
    weights = tmp_path / "models" / "smollm2-135m.bfloat16" / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[len(raw) // 2] ^= 0x10  # one bit of one weight
    weights.write_bytes(bytes(raw))
    monkeypatch.setenv("GENIES_HOME", str(tmp_path))
    loaded = load_model(ModelSpec("smollm2-135m", compute_dtype="bfloat16"))
    assert "rebuilding the model cache" in capsys.readouterr().err
    for (name, mine), theirs in zip(loaded.model.state_dict().items(), reference.model.state_dict().values()):
        assert torch.equal(mine, theirs), name
