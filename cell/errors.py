"""One error type for everything the CLI reports as a single line and a non-zero exit."""


class CellError(Exception):
    """A user-facing failure: the message names what is wrong (and the log file, if any)."""
