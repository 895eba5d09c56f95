"""`ferry sync hf-to-aiod ...` and `ferry hf ...`: the operator's side of the collector.

`sync hf-to-aiod` submits a task whose driving command is `hf.datasets.collect` (the
tracker publishes it, and again if the task stalls) and prints its id; with `--watch` it
follows the task to its end and prints the result's counts. `hf whoami|create|delete|
visibility` ask the collector over request/reply.

The lead wires these into `services/cli/main.py` with `add_parser(commands)` (both), or
`add_sync_parser` / `add_hf_parser` separately.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from typing import Any, TypeVar

from services.cli import connection, publishing
from services.cli.tasks import get_task, watch
from shared.contracts.base import Contract, Reply
from shared.contracts.hf import (
    HfDatasetsCollect,
    HfRepoCreate,
    HfRepoCreateReply,
    HfRepoDelete,
    HfRepoDeleteReply,
    HfRepoVisibility,
    HfRepoVisibilityReply,
    HfWhoami,
    HfWhoamiReply,
)
from shared.contracts.tasks import TaskSubmit
from shared.settings import BaseSettings

R = TypeVar("R", bound=Reply)

SYNC_KIND = "hf-to-aiod"
# Repository calls reach the Hub, whose own retries may take a while.
REPO_REQUEST_TIMEOUT = 60.0


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    add_sync_parser(commands)
    add_hf_parser(commands)


def add_sync_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("sync", help="synchronise metadata between platforms")
    sub = parser.add_subparsers(dest="sync_command", required=True, metavar="DIRECTION")
    hf = sub.add_parser(
        "hf-to-aiod",
        help="Hugging Face datasets into AI-on-Demand (a task; prints its id)",
        description="Submit a sync of Hugging Face dataset metadata into AI-on-Demand.",
    )
    hf.add_argument("--mode", choices=("all", "id", "since"), default="all")
    hf.add_argument(
        "--value",
        metavar="V",
        help="mode id: the dataset (owner/name); mode since: an instant (2026-01-31T00:00:00Z)",
    )
    hf.add_argument("--author", help="only this owner's datasets")
    hf.add_argument("--search", help="only datasets whose id contains this")
    hf.add_argument(
        "--filter", action="append", default=[], metavar="TAG", help="only with this tag"
    )
    hf.add_argument("--limit", type=int, metavar="N", help="at most N datasets")
    hf.add_argument(
        "--prune",
        action="store_true",
        help="after a complete `all` listing, remove the AIoD records it did not see",
    )
    hf.add_argument(
        "--force-prune",
        action="store_true",
        help="prune even beyond the safety cap (10%% of the records, by default)",
    )
    hf.add_argument("--watch", action="store_true", help="follow the task until it ends")
    hf.add_argument("--timeout", type=float, metavar="SECONDS", help="with --watch: give up")
    hf.add_argument("--id", dest="task_id", help="the task id (default: a new uuid4 hex)")
    hf.set_defaults(run=run_sync)


def add_hf_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("hf", help="Hugging Face repositories (through the collector)")
    sub = parser.add_subparsers(dest="hf_command", required=True, metavar="COMMAND")

    whoami = sub.add_parser("whoami", help="the account of the collector's token")
    whoami.set_defaults(run=run_whoami)

    create = sub.add_parser("create", help="create a repository (private unless --public)")
    create.add_argument("repo_id", metavar="OWNER/NAME")
    _type_argument(create)
    create.add_argument("--public", action="store_true", help="public (default: private)")
    create.add_argument(
        "--sdk", choices=("gradio", "streamlit", "docker", "static"), help="a space's SDK"
    )
    create.set_defaults(run=run_create)

    delete = sub.add_parser("delete", help="delete a repository")
    delete.add_argument("repo_id", metavar="OWNER/NAME")
    _type_argument(delete)
    delete.set_defaults(run=run_delete)

    visibility = sub.add_parser("visibility", help="make a repository private or public")
    visibility.add_argument("repo_id", metavar="OWNER/NAME")
    visibility.add_argument("visibility", choices=("private", "public"))
    _type_argument(visibility)
    visibility.set_defaults(run=run_visibility)


def _type_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--type", choices=("dataset", "model", "space"), default="dataset")


# -- sync ----------------------------------------------------------------------------------


def run_sync(settings: BaseSettings, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"mode": args.mode}
    for name in ("value", "author", "search", "limit"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    if args.filter:
        body["filter"] = args.filter
    if args.prune or args.force_prune:
        body["prune"] = True
    if args.force_prune:
        body["force"] = True
    task_id = args.task_id or uuid.uuid4().hex
    # Checked here as the collector will check it, so a mistake is a usage error now.
    publishing.validated(HfDatasetsCollect, {**body, "task_id": task_id})
    submit = publishing.validated(
        TaskSubmit,
        {
            "task_id": task_id,
            "kind": SYNC_KIND,
            "name": f"Hugging Face to AI-on-Demand ({args.mode}"
            + (f" {args.value}" if args.value else "")
            + ")",
            "params": body,
            "command": {"routing_key": HfDatasetsCollect.ROUTING_KEY, "body": body},
        },
    )
    publishing.send_contract(settings, submit)
    print(task_id)
    if not args.watch:
        return 0
    status = asyncio.run(watch(settings, task_id, give_up_after=args.timeout))
    task = asyncio.run(get_task(settings, task_id)).task
    if task is not None and isinstance(task.result, dict):
        counts = ", ".join(f"{name} {value}" for name, value in task.result.items())
        print(f"result: {counts}")
    return status


# -- repositories --------------------------------------------------------------------------


def run_whoami(settings: BaseSettings, args: argparse.Namespace) -> int:
    del args
    reply = asyncio.run(ask(settings, HfWhoami(), HfWhoamiReply))
    orgs = f" (orgs: {', '.join(reply.orgs)})" if reply.orgs else ""
    print(f"{reply.name} [{reply.type}]{orgs}")
    return 0


def run_create(settings: BaseSettings, args: argparse.Namespace) -> int:
    fields: dict[str, Any] = {
        "repo_id": args.repo_id,
        "type": args.type,
        "private": not args.public,
    }
    if args.sdk:
        fields["space_sdk"] = args.sdk
    request = publishing.validated(HfRepoCreate, fields)
    reply = asyncio.run(ask(settings, request, HfRepoCreateReply))
    print(reply.url or f"created {args.repo_id}")
    return 0


def run_delete(settings: BaseSettings, args: argparse.Namespace) -> int:
    request = publishing.validated(HfRepoDelete, {"repo_id": args.repo_id, "type": args.type})
    asyncio.run(ask(settings, request, HfRepoDeleteReply))
    print(f"deleted {args.type} {args.repo_id}")
    return 0


def run_visibility(settings: BaseSettings, args: argparse.Namespace) -> int:
    request = publishing.validated(
        HfRepoVisibility,
        {"repo_id": args.repo_id, "type": args.type, "private": args.visibility == "private"},
    )
    asyncio.run(ask(settings, request, HfRepoVisibilityReply))
    print(f"{args.type} {args.repo_id} is now {args.visibility}")
    return 0


async def ask(settings: BaseSettings, message: Contract, reply_type: type[R]) -> R:
    async with connection.requester(settings) as client:
        return await connection.ask(
            client, message, reply_type, owner="hf_collector", timeout=REPO_REQUEST_TIMEOUT
        )
