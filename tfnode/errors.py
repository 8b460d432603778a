"""Error types that users can cause.

Apps print ``str(err)`` (always one line naming the bad flag or value and what was
expected) and exit with status 2; they never show a traceback for these.
"""


class TfnodeError(ValueError):
    """A user-facing error with a one-line message."""


class DataError(TfnodeError):
    """A dataset could not be found, fetched or verified."""
