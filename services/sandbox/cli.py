"""`ferry sandbox [NAME ...] [--port N] [--datasets N] [--seed S] [faults] [stand-in options]`:
run local stand-ins of the systems Ferry talks to, as real HTTP servers on 127.0.0.1
(or on --host).

NAME is hf-hub, aiod, openhexa or all (the default). Each prints one first line
saying where it listens and which credentials it accepts, then serves until Ctrl-C or
SIGTERM. Ports: hf-hub 9101, aiod 9102, openhexa 9103; with --port N, the stand-ins named
listen on N, N+1, ... in that order (--port 0: any free ports, shown in the first lines).

Faults can be set at start (below) or at run time on each stand-in:
  curl -X POST URL/_sandbox/faults -d '{"status": 429, "count": 3}'
  curl -X POST URL/_sandbox/faults -d '{"timeout": true, "fraction": 0.1, "path_prefix": "/api/"}'
  curl -X DELETE URL/_sandbox/faults
(see services/sandbox/faults.py for every key). Fractions are drawn from --seed.

examples:
  ferry sandbox                                 # every stand-in, default ports
  ferry sandbox hf-hub --datasets 100000 --hf-quota 100000
  ferry sandbox aiod --aiod-token-lifetime 5 --latency-ms 20
  python -m services.sandbox all --port 0       # the same, without the ferry command
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from services.cli.errors import CliError, UsageError
from services.sandbox import server
from services.sandbox.faults import FaultChange, FaultError, decode_changes
from services.sandbox.server import (
    SandboxError,
    SandboxOptions,
    UnknownStandIn,
    count_argument,
    stand_ins,
)
from shared.settings import BaseSettings

MAX_DATASETS = 10_000_000


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "sandbox",
        help="run local stand-ins of HF Hub, AIoD and OpenHexa",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure(parser)
    parser.set_defaults(run=run)


def configure(parser: argparse.ArgumentParser) -> None:
    known = stand_ins()
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"which: {', '.join(known)} or all (default: all)",
    )
    parser.add_argument(
        "--host",
        default=server.HOST,
        help=f"address to listen on ({server.HOST}; 0.0.0.0 in a container, where the"
        " services reach them by name)",
    )
    parser.add_argument(
        "--port",
        type=count_argument(0, 65535),
        help="port of the first one, the next ones follow (0: any free port)",
    )
    parser.add_argument(
        "--datasets",
        type=count_argument(0, MAX_DATASETS),
        default=1000,
        help="size of the generated HF catalogue (1000)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the catalogue and of fault fractions (0)"
    )
    faults = parser.add_argument_group("faults (all stand-ins)")
    faults.add_argument(
        "--latency-ms", type=count_argument(0, 600_000), metavar="MS", help="delay every request"
    )
    faults.add_argument(
        "--outage-seconds",
        type=count_argument(0, 86_400),
        metavar="S",
        help="every request fails with 503 for S seconds from the start",
    )
    faults.add_argument(
        "--fault",
        action="append",
        type=_fault_argument,
        default=[],
        metavar="JSON",
        help='a fault rule, as POST /_sandbox/faults takes it, e.g. \'{"status": 503, "fraction":'
        " 0.1}' (repeatable)",
    )
    for stand_in in known.values():
        group = parser.add_argument_group(f"{stand_in.name}: {stand_in.summary}")
        stand_in.add_arguments(group)


def _fault_argument(text: str) -> list[FaultChange]:
    try:
        return decode_changes(text)
    except FaultError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def options_of(args: argparse.Namespace) -> SandboxOptions:
    changes: list[FaultChange] = [change for given in args.fault for change in given]
    if args.latency_ms is not None:
        changes.append(FaultChange(latency_ms=args.latency_ms))
    if args.outage_seconds is not None:
        changes.append(FaultChange(outage_seconds=args.outage_seconds))
    return SandboxOptions(
        seed=args.seed, datasets=args.datasets, faults=tuple(changes), flags=vars(args)
    )


def run(settings: BaseSettings, args: argparse.Namespace) -> int:
    del settings  # the stand-ins need no broker
    try:
        return server.run(args.names, args.port, options_of(args), host=args.host)
    except UnknownStandIn as exc:
        raise UsageError(str(exc)) from None
    except SandboxError as exc:
        raise CliError(str(exc)) from None
    except ValueError as exc:  # a stand-in's own flag that does not parse
        raise UsageError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m services.sandbox`: the same command, on its own."""
    parser = argparse.ArgumentParser(
        prog="python -m services.sandbox",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure(parser)
    args = parser.parse_args(argv)
    try:
        return run(BaseSettings(), args)
    except CliError as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
