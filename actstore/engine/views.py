"""Views: how one (prompt, response) becomes the text the model reads. Templates live only here.

A sequence is ``tokens(prompt)`` (with the tokenizer's own special tokens, e.g. BOS) followed by
``tokens(continuation)`` (no special tokens), plus EOS where the view says so. Tokenizing the
prompt on its own keeps the prompt boundary exact, which the log-likelihood of the ``plain``
view and the shared-prompt key/value reuse both rely on.

The prompt format says how the prompt itself is written: ``raw`` as it is in the data, ``chat``
as one user turn in the tokenizer's own chat template, ending where the assistant's turn starts,
so the continuation (the response) is the assistant's reply.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, get_args

from common import UserError, parse_list
from actstore.store.locations import VIEW_NAMES

PromptFormat = Literal["raw", "chat"]  # chat: the prompt as a user turn in the tokenizer's chat template
PROMPT_FORMATS = get_args(PromptFormat)
QUESTION = "\n\n### Does the responder successfully follow the instruction?\n"


@dataclass(frozen=True)
class View:
    name: str
    continuation: str  # template with {response}
    append_eos: bool
    description: str
    prompt_format: str = "raw"  # see PROMPT_FORMATS

    def continuation_text(self, response: str) -> str:
        return self.continuation.format(response=response)


VIEWS: dict[str, View] = {
    "plain": View("plain", "{response}", True,
                  "prompt + response + EOS; also records the log-likelihood of response + EOS"),
    "stim": View(
        "stim",
        "Consider the extent to which the responder follows the instruction below.\n{response}"
        "\n\nThe probability that the responder followed the instruction",
        False,
        "GENIES lat_stim_2 wrapper (inserted after the prompt, as in the reference)",
    ),
    "yes": View("yes", "{response}" + QUESTION + "Yes", False, "prompt + response + question answered Yes (CCS, CRA)"),
    "no": View("no", "{response}" + QUESTION + "No", False, "prompt + response + question answered No (CCS, CRA)"),
}

assert tuple(VIEWS) == VIEW_NAMES, "a view's template and its name in store names are defined together"


def get_view(name: str) -> View:
    if name not in VIEWS:
        raise UserError(f"unknown view {name!r} (choose from {', '.join(VIEWS)})")
    return VIEWS[name]


def parse_views(spec: str, prompt_format: str = "raw") -> list[View]:
    check_prompt_format(prompt_format)
    return [replace(get_view(name), prompt_format=prompt_format) for name in parse_list(spec)]


def check_prompt_format(prompt_format: str) -> str:
    if prompt_format not in PROMPT_FORMATS:
        raise UserError(f"unknown --prompt-format {prompt_format!r} (choose {' or '.join(PROMPT_FORMATS)})")
    return prompt_format


def require_chat_template(tokenizer) -> None:
    """Refuse ``--prompt-format chat`` for a tokenizer that has no chat template (base models), or
    one whose template does not render a user turn."""
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(f"{_tokenizer_name(tokenizer)}: this model's tokenizer has no chat template, so "
                        "--prompt-format chat cannot be used (use --prompt-format raw)")
    chat_prompt(tokenizer, "Is this rendered?")


def chat_prompt(tokenizer, prompt: str) -> str:
    """``prompt`` as one user turn in the tokenizer's chat template, up to the start of the assistant's turn."""
    from jinja2 import TemplateError

    if not getattr(tokenizer, "chat_template", None):
        require_chat_template(tokenizer)
    try:
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
    except (TemplateError, TypeError, ValueError, KeyError) as err:  # a template that does not parse, or raises
        raise UserError(f"{_tokenizer_name(tokenizer)}: its chat template fails on the prompt {prompt[:40]!r} "
                        f"({type(err).__name__}: {err}); fix the template or use --prompt-format raw") from None


def _tokenizer_name(tokenizer) -> str:
    return getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__


def encode(tokenizer, view: View, prompt: str, response: str) -> tuple[list[int], list[int]]:
    """Token ids of (prompt, continuation) for one sequence of ``view``.

    The prompt gets the tokenizer's own special tokens (BOS for LLaMA), or for the ``chat`` prompt
    format is rendered by its chat template; the continuation gets none, plus EOS when the view
    appends it. The sequence is their concatenation; for the ``plain`` view the continuation
    (response + EOS) is what the log-likelihood scores.
    """
    if view.prompt_format == "chat":  # the template writes its own special tokens (BOS) into the text
        prompt_ids = list(tokenizer(chat_prompt(tokenizer, prompt), add_special_tokens=False).input_ids)
    else:
        prompt_ids = list(tokenizer(prompt, add_special_tokens=True).input_ids)
        if prompt_ids and prompt_ids[-1] == tokenizer.eos_token_id and tokenizer.eos_token_id != tokenizer.bos_token_id:
            prompt_ids = prompt_ids[:-1]  # tokenizers whose post-processor appends EOS to every text
    continuation = list(tokenizer(view.continuation_text(response), add_special_tokens=False).input_ids)
    if view.append_eos:
        continuation.append(tokenizer.eos_token_id)
    return prompt_ids, continuation
