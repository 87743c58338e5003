"""``python -m genies ...`` is the ``genies`` command; in several processes, one per GPU:
``torchrun --nproc_per_node N -m genies run ...`` or ``accelerate launch -m genies run ...``
(docs/several-processes.md)."""

from cli import genies

genies(prog_name="genies")
