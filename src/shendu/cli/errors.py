"""The CLI's one error type."""


class CLIError(Exception):
    """A problem the user can fix: reported as one line, without a traceback."""
