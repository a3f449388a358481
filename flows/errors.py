"""The error the CLI reports as a usage problem: one line, exit code 2, no traceback."""


class UsageError(ValueError):
    """A command line, config or environment the command cannot start with; the message says
    what is wrong and how to fix it."""
