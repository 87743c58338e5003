"""``python -m finetune ...`` and ``accelerate launch -m finetune train ...``: the finetune CLI."""

from cli import finetune

finetune(prog_name="finetune")
