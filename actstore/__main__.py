"""``python -m actstore ...`` is the ``actstore`` command; with accelerate, one process per GPU:
``accelerate launch --num_processes N -m actstore extract ...`` (see docs/several-processes.md)."""

from cli import actstore

actstore(prog_name="actstore")
