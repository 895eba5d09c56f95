"""The failures a command reports as one line on stderr instead of a traceback."""

from __future__ import annotations

# Exit codes: argparse already uses 2 for bad usage; validation failures join it.
EXIT_RUNTIME = 1
EXIT_USAGE = 2


class CliError(Exception):
    """An expected failure at run time (no broker, no queue bound, no reply)."""

    exit_code = EXIT_RUNTIME


class UsageError(CliError):
    """The command line or the message given is wrong; running again unchanged won't help."""

    exit_code = EXIT_USAGE
