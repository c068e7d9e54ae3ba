"""The one exception type users see: a message that names the problem and the fix."""


class SelfSupError(Exception):
    """A user-facing error. The CLI prints its message on one line and exits with status 2."""


class DataError(SelfSupError, ValueError):
    """A data source could not be read: missing, corrupt, empty or inconsistent."""


class NoTestSplit(DataError):
    """The source is all training data (a flat folder, unlabelled clips): it has no test split."""


class Interrupted(SelfSupError):
    """Ctrl-C or SIGTERM stopped training between steps, after saving them (exit status 130)."""
