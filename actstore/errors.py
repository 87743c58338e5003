"""The one exception type for user mistakes: the CLI prints its message on one line, exit 2."""


class UserError(Exception):
    """Bad input from the user (a file, a name, a flag). The message names what and where."""


def describe(err: BaseException) -> str:
    """``Type: first line of the message``, for a one-line error that names what went wrong underneath."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__
