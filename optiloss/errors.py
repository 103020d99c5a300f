"""Errors a user can cause. The CLI prints their message as one line, never a traceback."""


class OptilossError(Exception):
    """A failure the user can act on. ``exit_code`` is 1 for runtime failures."""

    exit_code = 1


class UsageError(OptilossError):
    """Bad arguments or configuration (exit code 2). Raised before anything is written."""

    exit_code = 2
