"""The models: what is loaded. A model specification (name, devices, placement, dtype, quantization,
attention implementation), its loader and caches, the families the toolkit reads, and the devices a
process computes on.

Nothing here reads or writes a store or runs an extraction: the models import neither
``actstore.store`` nor ``actstore.engine`` (the import-linter contract in pyproject.toml).
"""

from actstore.models.devices import default_device, execution_device
from actstore.models.fingerprint import model_fingerprint
from actstore.models.loading import (DEFAULT_MODEL, ModelOnDemand, check_family, load_model, load_tokenizer,
                                     model_n_blocks)
from actstore.models.spec import LoadedModel, ModelSpec, parse_max_memory
from actstore.models.tiny import byte_tokenizer, tiny_random_llama
from common.model_names import model_aliases

__all__ = ["DEFAULT_MODEL", "LoadedModel", "ModelOnDemand", "ModelSpec", "byte_tokenizer", "check_family",
           "default_device", "execution_device", "load_model", "load_tokenizer", "model_aliases", "model_fingerprint",
           "model_n_blocks", "parse_max_memory", "tiny_random_llama"]
