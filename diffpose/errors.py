"""User-facing errors: one line that names the file (or key) and the problem."""


class DiffposeError(Exception):
    """An error caused by input, configuration or environment, not by a bug.

    The CLI prints ``str(err)`` on one line and exits non-zero without a traceback, so the message
    must say which file, frame, annotation or key is wrong and what was expected.
    """


class ConfigError(DiffposeError):
    """params.yaml (or a command-line override) is invalid."""


class DataError(DiffposeError):
    """An input file is missing, unreadable or malformed."""
