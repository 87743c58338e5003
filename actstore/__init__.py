"""actstore: run a language model once per dataset and keep its activations in Zarr stores."""

__version__ = "0.1.0"
