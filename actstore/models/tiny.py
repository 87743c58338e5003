"""The built-in test model: a tiny randomly initialised LLaMA with a byte-level tokenizer, built offline."""

from __future__ import annotations

import torch

from actstore.models.spec import LoadedModel

TINY_RANDOM_BLOCKS = 4


def tiny_random_llama(seed: int = 0, n_layers: int = TINY_RANDOM_BLOCKS, hidden_size: int = 64, n_heads: int = 4) -> LoadedModel:
    """A tiny randomly initialised LlamaForCausalLM with a byte-level tokenizer, built offline."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = byte_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=max(1, n_heads // 2),
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.name_or_path = "tiny-random"
    return LoadedModel(model, tokenizer, "tiny-random", f"tiny-random(seed={seed})")


def byte_tokenizer():
    """Every UTF-8 byte is one token, plus <s>, </s> and <pad>: deterministic and offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>"]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate(specials + alphabet)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", model_max_length=1024
    )
