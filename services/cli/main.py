"""`ferry`: the entry point. Parses the command line, reads the settings, runs one command.

Expected failures (no broker, nothing bound, no reply, invalid input) end as one line on
stderr and a non-zero exit: 2 for usage and validation errors, 1 for the rest.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence

from services.cli import dlq, docs, publishing, tasks, up
from services.cli.errors import CliError
from shared.settings import BaseSettings, SettingsError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ferry", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--amqp-url", help="RabbitMQ URL (default: FERRY_AMQP_URL, AMQP_URL, or the local one)"
    )
    parser.add_argument("--namespace", help="name prefix of exchanges and queues (FERRY_NAMESPACE)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (publishing, tasks, dlq, up, docs):
        module.add_parser(commands)
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
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on bad usage, as argparse does
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
