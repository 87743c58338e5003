"""Checks that need the tokenizer but must fail before a store is created or a block computed.

A sequence longer than the model's context is refused (never skipped: the store's sequence
list is fixed by the data file, and dropping a response silently would change the pairs a
probe is judged on). Tokenizing the whole split twice would cost time, so only sequences that
could be too long are tokenized here: a byte-level or byte-fallback tokenizer never makes more
tokens than the text has UTF-8 bytes, plus a few special tokens.
"""

from __future__ import annotations

from actstore.models.quiet import transformers_errors_only
from actstore.engine.sequence_table import SequenceTable, encode_rows
from actstore.engine.views import View, chat_prompt, require_chat_template

SPECIAL_TOKEN_ALLOWANCE = 8


def check_context(table: SequenceTable, tokenizer, view: View, *, max_tokens: int | None, source: str) -> None:
    """Raise the UserError of ``encode_rows`` for the first sequence the model cannot read (and refuse
    the ``chat`` prompt format for a tokenizer without a chat template)."""
    if view.prompt_format == "chat":
        require_chat_template(tokenizer)
    if max_tokens is None:
        return
    template_bytes = len(view.continuation.encode("utf-8"))
    if view.prompt_format == "chat":
        template_bytes += len(chat_prompt(tokenizer, "").encode("utf-8"))
    budget = max_tokens - SPECIAL_TOKEN_ALLOWANCE - template_bytes
    # the tokenizer's own "longer than the maximum" warning would precede our error
    with transformers_errors_only():
        for i in range(len(table)):
            n_bytes = len(table.prompts[i].encode("utf-8")) + len(table.responses[i].encode("utf-8"))
            if n_bytes > budget:
                encode_rows(table, i, i + 1, tokenizer, view, max_tokens=max_tokens, source=source)
