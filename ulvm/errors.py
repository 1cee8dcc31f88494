"""User-facing errors. The CLI prints these as one clear line (no traceback); anything else is a bug."""


class UlvmError(Exception):
    """Base class: the message says what is wrong and, where there is one, which file."""


class DataError(UlvmError):
    """A raw or prepared dataset is unusable (names the file and the problem)."""


class BackendUnavailable(UlvmError):
    """A selective-scan backend was asked for where it cannot run (says why)."""


class RunError(UlvmError):
    """A training or evaluation run cannot proceed (finished run, bad checkpoint, NaN loss...)."""
