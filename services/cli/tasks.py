"""`ferry tasks ...`: submit, list, show, watch and cancel tasks of the task tracker.

Queries are request/reply over RabbitMQ (`tasks.get`, `tasks.list`); `watch` follows the
`tasks.changed` events on a private queue; `submit` and `cancel` publish commands.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar, get_args

import aio_pika
import aio_pika.abc
import msgspec

from services.cli import connection, publishing
from services.cli.errors import CliError, UsageError
from services.cli.progress import ProgressDisplay, status_note
from shared.contracts import (
    Contract,
    TaskCancel,
    TaskGet,
    TaskGetReply,
    TaskList,
    TaskListReply,
    TaskStatus,
    TaskSubmit,
    TaskView,
)
from shared.contracts.tasks import StatusInput
from shared.messaging import Requester
from shared.settings import BaseSettings
from shared.task_events import NoTaskExchange, follow_task
from shared.topology import Names

R = TypeVar("R", bound=Contract)

REQUEST_TIMEOUT = 10.0
SUCCESSFUL = (TaskStatus.SUCCESS, TaskStatus.SKIPPED)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("tasks", help="submit, list, show, watch and cancel tasks")
    sub = parser.add_subparsers(dest="tasks_command", required=True, metavar="COMMAND")

    listing = sub.add_parser("list", help="list tasks, most recently updated first")
    listing.add_argument(
        "--status",
        dest="statuses",
        action="extend",
        nargs="+",
        default=[],
        type=str.upper,
        choices=get_args(StatusInput),
        metavar="S",
        help="only these statuses (repeatable)",
    )
    listing.add_argument("--kind", help="only tasks of this kind")
    listing.add_argument("--limit", type=int, default=50, help="tasks per page (1-500)")
    listing.add_argument("--all", action="store_true", help="follow the pages to the end")
    listing.set_defaults(run=run_list)

    show = sub.add_parser("show", help="one task in full")
    show.add_argument("task_id", metavar="ID")
    show.add_argument("--items", action="store_true", help="also the per-item outcomes")
    show.add_argument("--json", action="store_true", help="the tracker's reply as JSON")
    show.set_defaults(run=run_show)

    watch = sub.add_parser("watch", help="follow a task's progress until it ends")
    watch.add_argument("task_id", metavar="ID")
    watch.add_argument("--timeout", type=float, metavar="SECONDS", help="give up after this")
    watch.set_defaults(run=run_watch)

    submit = sub.add_parser("submit", help="submit a task (prints its id)")
    submit.add_argument("kind", metavar="KIND")
    submit.add_argument("--name", default="")
    submit.add_argument("--params", default="{}", metavar="JSON", help="a JSON object")
    submit.add_argument("--command-key", metavar="RK", help="routing key of the driving command")
    submit.add_argument("--command-body", default="{}", metavar="JSON", help="its body")
    submit.add_argument("--id", dest="task_id", help="the task id (default: a new uuid4 hex)")
    submit.set_defaults(run=run_submit)

    cancel = sub.add_parser("cancel", help="ask for a task to be killed")
    cancel.add_argument("task_id", metavar="ID")
    cancel.add_argument("--reason")
    cancel.set_defaults(run=run_cancel)


# -- submit / cancel -------------------------------------------------------------------


def run_submit(settings: BaseSettings, args: argparse.Namespace) -> int:
    fields: dict[str, Any] = {
        "task_id": args.task_id or uuid.uuid4().hex,
        "kind": args.kind,
        "name": args.name,
        "params": json_object("--params", args.params),
    }
    if args.command_key:
        fields["command"] = {
            "routing_key": args.command_key,
            "body": json_object("--command-body", args.command_body),
        }
    message = publishing.validated(TaskSubmit, fields)
    publishing.send_contract(settings, message)
    print(fields["task_id"])  # alone on its line: `id=$(ferry tasks submit ...)`
    return 0


def run_cancel(settings: BaseSettings, args: argparse.Namespace) -> int:
    message = publishing.validated(TaskCancel, {"task_id": args.task_id, "reason": args.reason})
    # Asked first: a cancel of an unknown id would leave the tracker an orphan record.
    task = asyncio.run(get_task(settings, args.task_id)).task
    assert task is not None  # ask() turned a missing task into an error
    if task.status.is_terminal:
        print(f"task {args.task_id} already ended ({task.status.value}): nothing to cancel")
        return 0
    publishing.send_contract(settings, message)
    print(f"cancellation of task {args.task_id} requested")
    return 0


def json_object(option: str, text: str) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise UsageError(f"{option}: not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError(f"{option}: expected a JSON object")
    return value


# -- queries ---------------------------------------------------------------------------


async def ask(client: Requester, message: Contract, reply_type: type[R]) -> R:
    """One request/reply; an error reply becomes a `CliError` (`no such task: ID` when
    the tracker does not know the task asked for)."""
    try:
        reply = await connection.ask(
            client, message, reply_type, owner="task_tracker", timeout=REQUEST_TIMEOUT
        )
    except connection.Answered as exc:
        raise answered_error(message, str(exc)) from None
    error = getattr(reply, "error", None)
    if error:  # a Requester that does not raise RemoteError itself
        raise answered_error(message, str(error))
    return reply


def answered_error(message: Contract, error: str) -> CliError:
    task_id = getattr(message, "task_id", None)
    if task_id is not None and ("no such task" in error or "not found" in error):
        return CliError(f"no such task: {task_id}")
    return CliError(error)


def run_list(settings: BaseSettings, args: argparse.Namespace) -> int:
    query = publishing.validated(
        TaskList, {"statuses": args.statuses, "kind": args.kind, "limit": args.limit}
    )
    tasks, more = asyncio.run(list_tasks(settings, query, follow=args.all))
    print_table(tasks)
    if more:
        print("(more tasks: --all lists them all)", file=sys.stderr)
    return 0


async def list_tasks(
    settings: BaseSettings, query: TaskList, *, follow: bool
) -> tuple[list[TaskView], bool]:
    """The first page, or every page when `follow`; and whether pages were left unread."""
    found: list[TaskView] = []
    async with connection.requester(settings) as client:
        while True:
            reply = await ask(client, query, TaskListReply)
            found.extend(reply.tasks)
            if reply.next_cursor is None or not follow:
                return found, reply.next_cursor is not None
            query = msgspec.structs.replace(query, cursor=reply.next_cursor)


def print_table(tasks: Sequence[TaskView]) -> None:
    header = ("ID", "KIND", "STATUS", "PROGRESS", "ITEMS OK/FAILED", "UPDATED", "NOTE")
    rows = [
        (
            t.id,
            t.kind or "-",
            t.status.value,
            f"{t.progress_value}/{t.end_value}",
            f"{t.items_succeeded}/{t.items_failed}",
            timestamp(t.updated_at),
            status_note(t) or "",
        )
        for t in tasks
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def timestamp(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment is not None else "-"


def run_show(settings: BaseSettings, args: argparse.Namespace) -> int:
    reply = asyncio.run(get_task(settings, args.task_id, items=args.items))
    if args.json:
        print(msgspec.json.format(msgspec.json.encode(reply)).decode())
        return 0
    assert reply.task is not None  # ask() turned a missing task into an error
    remark = status_note(reply.task)
    if remark:
        print(f"{'state:':<18} {reply.task.status.value}, {remark}")
    for name, value in msgspec.structs.asdict(reply.task).items():
        shown = timestamp(value) if isinstance(value, datetime) else value
        if isinstance(shown, dict | list):
            shown = msgspec.json.encode(shown).decode()
        print(f"{name + ':':<18} {shown}")
    if args.items:
        print(f"items ({len(reply.items)}):")
        for item in reply.items:
            note = f"  {item.message}" if item.message else ""
            print(f"  {item.outcome:<8} {item.item_key}{note}")
    return 0


async def get_task(settings: BaseSettings, task_id: str, *, items: bool = False) -> TaskGetReply:
    query = publishing.validated(TaskGet, {"task_id": task_id, "include_items": items})
    async with connection.requester(settings) as client:
        return await ask(client, query, TaskGetReply)


# -- watch -----------------------------------------------------------------------------


def run_watch(settings: BaseSettings, args: argparse.Namespace) -> int:
    return asyncio.run(watch(settings, args.task_id, give_up_after=args.timeout))


async def watch(settings: BaseSettings, task_id: str, *, give_up_after: float | None = None) -> int:
    """Draw the task's progress until it ends: 0 for SUCCESS/SKIPPED, 1 for ERRORED/KILLED."""
    loop = asyncio.get_running_loop()
    deadline = None if give_up_after is None else loop.time() + give_up_after
    async with connection.connection(settings) as conn:
        changes = await follow_changes(conn, Names(settings.namespace), task_id)
        # Subscribed first, asked second: a change after the answer is already queued for
        # us, so nothing between the two can be missed.
        task = (await get_task(settings, task_id)).task
        assert task is not None
        display = ProgressDisplay(sys.stdout)
        try:
            display.show(task)
            while not task.status.is_terminal:
                remaining = None if deadline is None else max(deadline - loop.time(), 0)
                try:
                    newer = await asyncio.wait_for(changes.get(), remaining)
                except TimeoutError:
                    raise CliError(
                        f"task {task_id} is still {task.status.value} after {give_up_after:g}s"
                    ) from None
                # Events may overtake the reply: never step back to an older state.
                if newer.updated_at >= task.updated_at:
                    task = newer
                    display.show(task)
        finally:
            display.finish()
    message = f": {task.progress_message}" if task.progress_message else ""
    print(f"task {task_id} {task.status.value}{message}")
    return 0 if task.status in SUCCESSFUL else 1


async def follow_changes(
    conn: aio_pika.abc.AbstractConnection, names: Names, task_id: str
) -> asyncio.Queue[TaskView]:
    """Where the changes of `task_id` arrive (see `shared.task_events.follow_task`)."""
    try:
        return await follow_task(await conn.channel(), names.exchange, task_id)
    except NoTaskExchange:
        raise connection.missing_exchange(names) from None
