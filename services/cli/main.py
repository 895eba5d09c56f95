"""`ferry`: the entry point. Parses the command line, reads the settings, runs one command.

Expected failures (no broker, nothing bound, no reply, invalid input) end as one line on
stderr and a non-zero exit: 2 for usage and validation errors, 1 for the rest. A reader
that goes away (`ferry dlq list | head`) ends the command quietly.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Sequence

from services.cli import dlq, docs, publishing, tasks, up
from services.cli.errors import CliError
from services.gateway import cli as gateway
from services.hf_collector import cli as hf_sync
from services.openhexa_launcher import cli as openhexa
from services.sandbox import cli as sandbox
from shared.settings import BaseSettings, SettingsError

DESCRIPTION = """\
ferry: the operator's command line for Ferry, the services that move metadata and jobs
between AI and data platforms over RabbitMQ. It talks to the running services the way they
talk to each other: by publishing to the `ferry` exchange and asking over request/reply.
"""

EPILOG = """\
settings:
  Read from the environment, as the services read them: FERRY_AMQP_URL (or AMQP_URL;
  default amqp://guest:guest@127.0.0.1:5672/) and FERRY_NAMESPACE (default none). Any of
  them may be given as FERRY_<NAME>_FILE, a file holding the value. --amqp-url and
  --namespace override them for one command.

examples:
  ferry up                                      # run every service locally
  ferry tasks submit demo --id demo-1           # submit a task
  ferry publish tasks.update '{"task_id": "demo-1", "status": "RUNNING"}'
  ferry tasks watch demo-1                      # follow it until it ends
  ferry dlq list task_tracker | less            # what failed for good, and why
  ferry docs --serve                            # the queues and messages, in a browser

`ferry COMMAND -h` tells more about each command.
"""

# Exit status of a command whose reader went away: what a process killed by SIGPIPE has.
EXIT_BROKEN_PIPE = 128 + 13


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ferry",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--amqp-url", help="RabbitMQ URL (default: FERRY_AMQP_URL, AMQP_URL, or the local one)"
    )
    parser.add_argument("--namespace", help="name prefix of exchanges and queues (FERRY_NAMESPACE)")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", title="commands"
    )
    for module in (publishing, tasks, dlq, up, docs, gateway):
        module.add_parser(commands)  # gateway: ferry certs, ferry workspaces
    openhexa.add_parser(commands)  # ferry pipelines ...
    openhexa.add_run_parser(commands)  # ferry run PIPELINE ...
    sandbox.add_parser(commands)  # ferry sandbox hf-hub|aiod|openhexa|all
    hf_sync.add_parser(commands)  # ferry sync hf-to-aiod, ferry hf ...
    return parser


def settings_of(args: argparse.Namespace) -> BaseSettings:
    """The environment's settings with the command line's overrides applied, checked again."""
    settings = BaseSettings.from_env()
    overrides = {
        name: value
        for name, value in (("amqp_url", args.amqp_url), ("namespace", args.namespace))
        if value is not None
    }
    settings = dataclasses.replace(settings, **overrides)
    settings.check()
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = run(argv)
        sys.stdout.flush()  # inside the try: a pipe closed early fails here, not at exit
    except BrokenPipeError:
        quiet_stdout()
        return EXIT_BROKEN_PIPE
    return code


def quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's own flush at exit does not fail on
    the closed pipe again (and print a traceback after all)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor (a test's captured stdout)
        pass


def run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)  # exits 2 on bad usage, as argparse does
    except SystemExit as done:  # --help, or bad usage (argparse printed why)
        return int(done.code or 0)
    # aiormq logs a failed connection attempt itself; we report it once, in our own words.
    logging.getLogger("aiormq").setLevel(logging.CRITICAL)
    try:
        return int(args.run(settings_of(args), args))
    except SettingsError as exc:
        print(f"ferry: {exc}", file=sys.stderr)
        return 2
    except CliError as exc:
        print(f"ferry: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("ferry: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
