"""User-facing errors: the CLI prints their message on one line and exits with code 2."""


class GradLensError(Exception):
    """Bad input (file, field, option or model spec). The message is one line, shown as is."""


class DataError(GradLensError):
    """A dataset file is malformed; the message names the file, the line and the field."""
