"""Named shapes of real models, for planning (and benchmarks) without their weights: each is the model's own
published config.json, reduced to what sizes depend on. ``config_of(name)`` gives a transformers config."""

from __future__ import annotations

SHAPES: dict[str, dict] = {
    # meta-llama/Llama-2-7b-hf
    "llama-2-7b": dict(model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                       max_position_embeddings=4096, tie_word_embeddings=False),
    # meta-llama/Meta-Llama-3-8B: grouped-query attention, 128k vocabulary
    "llama-3-8b": dict(model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                       max_position_embeddings=8192, rope_theta=500000.0, tie_word_embeddings=False),
    # meta-llama/Llama-2-13b-hf
    "llama-2-13b": dict(model_type="llama", hidden_size=5120, intermediate_size=13824, num_hidden_layers=40,
                        num_attention_heads=40, num_key_value_heads=40, vocab_size=32000,
                        max_position_embeddings=4096, tie_word_embeddings=False),
    # huggyllama/llama-30b (the paper's model)
    "llama-30b": dict(model_type="llama", hidden_size=6656, intermediate_size=17920, num_hidden_layers=60,
                      num_attention_heads=52, num_key_value_heads=52, vocab_size=32000,
                      max_position_embeddings=2048, tie_word_embeddings=False),
    # meta-llama/Llama-2-70b-hf
    "llama-2-70b": dict(model_type="llama", hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                        num_attention_heads=64, num_key_value_heads=8, vocab_size=32000,
                        max_position_embeddings=4096, tie_word_embeddings=False),
}


def config_of(name: str):
    """The transformers config of the named shape (KeyError for an unknown name)."""
    from transformers import LlamaConfig

    return LlamaConfig(**{k: v for k, v in SHAPES[name].items() if k != "model_type"})
