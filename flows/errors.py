"""Errors the CLI reports as a problem with its input (one line, exit code 2, no traceback)."""

from __future__ import annotations

import logging
import sys


class UsageError(ValueError):
    """A command line, config or environment the command cannot start with; the message says
    what is wrong and how to fix it."""


# Errors that describe bad input, by module and class, so that checking for them imports
# nothing: the config, the data (imported only once a stage reads data) and downloads.
INPUT_ERRORS = {"mmcore.config": "ConfigError", "mmcore.data.source": "DataError",
                "mmcore.data.download": "DownloadError"}


def input_error_types() -> tuple[type[BaseException], ...]:
    """UsageError and each input error class whose module is loaded."""
    return (UsageError, *(getattr(sys.modules[module], name)
                          for module, name in INPUT_ERRORS.items() if module in sys.modules))


class _WithoutInputTracebacks(logging.Formatter):
    """Formats as `inner` does, leaving out the traceback of an input error."""

    def __init__(self, inner: logging.Formatter):
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, input_error_types()):
            return self.inner.format(record)
        saved = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None  # other handlers still get them back
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text = saved


def console_without_input_tracebacks() -> None:
    """Prefect logs a task's or flow's exception with its traceback on the console. For input
    errors (a missing data file found by a stage) the message says it all: keep the line, drop
    the traceback there (the Prefect UI keeps it). Call after prefect is imported."""
    for handler in logging.getLogger().handlers:
        if type(handler).__name__ == "PrefectConsoleHandler" and not isinstance(
                handler.formatter, _WithoutInputTracebacks):
            handler.setFormatter(_WithoutInputTracebacks(handler.formatter or
                                                         logging.Formatter()))
