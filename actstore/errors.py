"""The one exception type for user mistakes: the CLI prints its message on one line, exit 2."""


class UserError(Exception):
    """Bad input from the user (a file, a name, a flag). The message names what and where."""
