"""The OpenHexa launcher end to end: a real RabbitMQ, the task tracker in-process (SQLite),
the OpenHexa stand-in on 127.0.0.1, and the launcher in-process (or as a process, to be
SIGKILLed mid-watch). Runs last about a second, polls are 1 s apart."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from services.openhexa_launcher.app import Launcher, build
from services.openhexa_launcher.client import OpenHexaClient
from services.openhexa_launcher.runs import RESULT_KEY
from services.openhexa_launcher.settings import LauncherSettings
from services.sandbox import faults
from services.sandbox.openhexa import DEFAULT_TOKEN, Knobs, OpenHexaOptions, create_app
from services.sandbox.server import Listening, serving
from services.task_tracker.app import TaskTracker
from shared.contracts.openhexa import (
    PipelineGet,
    PipelineGetReply,
    PipelineList,
    PipelineListReply,
    RunLaunch,
)
from shared.contracts.tasks import DrivingCommand, TaskGet, TaskGetReply, TaskSubmit, TaskView
from shared.messaging import RemoteError, Requester, publish
from shared.settings import BaseSettings
from tests.conftest import Cleanup
from tests.support.tracker import free_port, tracker_settings
from tests.support.waiting import eventually

TERMINAL = ("SUCCESS", "ERRORED", "KILLED", "SKIPPED")


@dataclasses.dataclass
class World:
    sandbox: Listening
    knobs: Knobs
    tracker: TaskTracker
    launcher: Launcher
    client: Requester
    openhexa: OpenHexaClient
    settings: LauncherSettings

    async def submit(self, task_id: str, **launch: Any) -> None:
        await publish(
            self.tracker.service.broker,
            self.tracker.service.names,
            TaskSubmit.now(
                task_id=task_id,
                kind="openhexa.run",
                command=DrivingCommand(routing_key=RunLaunch.ROUTING_KEY, body=launch),
            ),
        )

    async def task(self, task_id: str) -> TaskView | None:
        try:
            reply = await self.client.request(TaskGet(task_id=task_id), TaskGetReply)
        except RemoteError:
            return None
        return reply.task

    async def ended(self, task_id: str, timeout: float = 20) -> TaskView:
        async def check() -> TaskView | None:
            task = await self.task(task_id)
            return task if task is not None and task.status in TERMINAL else None

        result: TaskView = await eventually(check, timeout=timeout, interval=0.1)
        return result

    async def runs_of(self, code: str) -> list[Any]:
        pipeline = await self.openhexa.pipeline(code=code)
        return [run async for run in self.openhexa.runs(pipeline.id)]

    async def sandbox_post(self, path: str, body: Any) -> None:
        async with httpx.AsyncClient() as http:
            (await http.post(self.sandbox.url + path, json=body, timeout=5)).raise_for_status()


def launcher_settings(base: BaseSettings, url: str, **overrides: Any) -> LauncherSettings:
    common = {f.name: getattr(base, f.name) for f in dataclasses.fields(BaseSettings)}
    values = {
        **common,
        "openhexa_url": url,
        "openhexa_token": DEFAULT_TOKEN,
        "openhexa_workspace": "ferry",
        "page_size": 4,  # several pages, even for a small workspace
        "poll_interval": 1.0,
        "poll_max_interval": 2.0,
        "runs_limit_delay": 1.0,
        "runs_limit_max_delay": 2.0,
        "http_timeout": 2.0,
        "retry_budget": 3.0,
        **overrides,
    }
    return LauncherSettings(**values)


@contextlib.asynccontextmanager
async def world(
    base: BaseSettings, cleanup: Cleanup, tmp_path: Path, **overrides: Any
) -> AsyncIterator[World]:
    knobs = Knobs(queue_seconds=0.3, run_seconds=1.0, stop_seconds=0.3, heartbeat_seconds=0.5)
    app: web.Application = create_app(OpenHexaOptions(), knobs, faults.Faults())
    async with serving([("openhexa", app, 0)]) as [sandbox]:
        tracker = TaskTracker(tracker_settings(base, "sqlite", tmp_path, sweep_interval=3600.0))
        settings = launcher_settings(base, sandbox.url, **overrides)
        launcher = build(settings)
        cleanup.services.extend([tracker.service, launcher.service])
        names = launcher.service.names
        cleanup.queues.extend(names.delay_queue(s) for s in (1, 5, 30, 300, 1800))
        await tracker.service.app.start()
        await launcher.service.app.start()
        try:
            async with (
                Requester(base.amqp_url, names) as client,
                OpenHexaClient(launcher_settings(base, sandbox.url)) as openhexa,
            ):
                yield World(sandbox, knobs, tracker, launcher, client, openhexa, settings)
        finally:
            await launcher.service.app.stop()
            await tracker.service.app.stop()


@pytest.fixture
async def w(base_settings: BaseSettings, cleanup: Cleanup, tmp_path: Path) -> AsyncIterator[World]:
    async with world(base_settings, cleanup, tmp_path) as it:
        yield it


def run_id_of(task: TaskView) -> str:
    return str(task.result[RESULT_KEY]["run_id"])


# -- pipelines -------------------------------------------------------------------------------


async def test_every_pipeline_is_listed_not_only_the_first_ten(w: World) -> None:
    reply = await w.client.request(PipelineList(), PipelineListReply, timeout=10)
    codes = [p.code for p in reply.pipelines]
    assert len(codes) == 14 and len(set(codes)) == 14  # four pages of four
    assert "extract-07" in codes


async def test_a_pipeline_comes_with_its_current_parameters(w: World) -> None:
    reply = await w.client.request(
        PipelineGet(pipeline_code="all-types"), PipelineGetReply, timeout=10
    )
    assert reply.pipeline is not None and reply.pipeline.version is not None
    types = {p.type for p in reply.pipeline.version.parameters}
    assert types >= {"str", "int", "float", "bool", "secret", "dataset", "file", "dhis2"}


async def test_a_bad_token_is_named_as_such(
    base_settings: BaseSettings, cleanup: Cleanup, tmp_path: Path
) -> None:
    async with world(base_settings, cleanup, tmp_path, openhexa_token="wrong") as bad:
        with pytest.raises(RemoteError, match="did not accept the token"):
            await bad.client.request(PipelineList(), PipelineListReply, timeout=10)
        await bad.submit("bad-token", pipeline_code="untagged", config={"region": "x"})
        task = await bad.ended("bad-token")
        assert task.status == "ERRORED"
        assert "did not accept the token" in (task.progress_message or "")
        assert "wrong" not in str(task.result) + (task.progress_message or "")


# -- launch ------------------------------------------------------------------------------------


async def test_two_parallel_launches_each_follow_their_own_run(w: World) -> None:
    await w.submit("par-1", pipeline_code="ferry-tasked", config={"countries": ["BE"]})
    await w.submit("par-2", pipeline_code="ferry-tasked", config={"countries": ["CD"]})
    first, second = await w.ended("par-1"), await w.ended("par-2")
    assert first.status == second.status == "SUCCESS"
    assert run_id_of(first) != run_id_of(second)
    runs = {run.id: run for run in await w.runs_of("ferry-tasked")}
    assert runs[run_id_of(first)].config["task_id"] == "par-1"
    assert runs[run_id_of(second)].config["countries"] == ["CD"]
    assert first.result["outputs"][0]["genericName"] == "report"
    assert first.progress_value == 100


async def test_an_invalid_config_errs_with_every_problem_and_launches_nothing(w: World) -> None:
    config = {"country": "FR", "year": 1.0, "threshold": "high", "extra": 1}
    await w.submit("invalid", pipeline_code="all-types", config=config)
    task = await w.ended("invalid")
    assert task.status == "ERRORED"
    assert task.result["errors"] == [
        "The provided value for country is not included in the provided choices.",
        "Invalid type for value 1.0 (expected <class 'int'>, got <class 'float'>)",
        "Invalid type for value high (expected <class 'float'>, got <class 'str'>)",
        "The provided config contains invalid key(s): extra",
    ]
    assert await w.runs_of("all-types") == []


async def test_task_id_is_injected_only_where_declared(w: World) -> None:
    await w.submit("plain", pipeline_code="untagged", config={"region": "north"})
    task = await w.ended("plain")
    assert task.status == "SUCCESS"  # no "invalid key(s): task_id", as Iaso gets
    (run,) = await w.runs_of("untagged")
    assert run.config == {"region": "north"}


async def test_a_launch_redelivered_after_a_crash_starts_no_second_run(w: World) -> None:
    # The crash fell between runPipeline and the record: the run exists, the task names none.
    pipeline = await w.openhexa.pipeline(code="ferry-tasked")
    orphan = await w.openhexa.run_pipeline(
        pipeline.id, None, {"task_id": "crashed", "countries": ["BE"], "year": 2026}
    )
    assert orphan.run is not None
    await w.submit("crashed", pipeline_code="ferry-tasked", config={"countries": ["BE"]})
    task = await w.ended("crashed")
    assert task.status == "SUCCESS" and run_id_of(task) == orphan.run.id
    # ... and the same launch delivered again later changes nothing either.
    await publish(
        w.tracker.service.broker,
        w.tracker.service.names,
        RunLaunch(task_id="crashed", pipeline_code="ferry-tasked", config={"countries": ["BE"]}),
    )
    launches = [r for r in await w.runs_of("ferry-tasked") if r.config.get("task_id") == "crashed"]
    assert [r.id for r in launches] == [orphan.run.id]


async def test_the_runs_limit_parks_the_launch_instead_of_failing_it(w: World) -> None:
    await w.sandbox_post("/_sandbox/openhexa", {"runs_limit": 1, "run_seconds": 1.5})
    await w.submit("slot-1", pipeline_code="extract-01")
    await eventually(lambda: w.runs_of("extract-01"), timeout=10)
    await w.submit("slot-2", pipeline_code="extract-02")

    async def waiting() -> bool:
        task = await w.task("slot-2")
        return task is not None and "runs limit" in (task.progress_message or "")

    await eventually(waiting, timeout=10)
    first, second = await w.ended("slot-1"), await w.ended("slot-2", timeout=30)
    assert first.status == second.status == "SUCCESS"


async def test_a_run_lost_to_its_heartbeat_errs_with_the_servers_message(w: World) -> None:
    await w.submit("heartbeat", pipeline_code="heartbeat-lost")
    task = await w.ended("heartbeat")
    assert task.status == "ERRORED"
    assert "Killed due to heartbeat timeout" in (task.progress_message or "")


async def test_a_failed_run_errs_with_its_messages(w: World) -> None:
    await w.submit("fails", pipeline_code="always-fails")
    task = await w.ended("fails")
    assert task.status == "ERRORED" and task.result["status"] == "failed"
    assert any(m["priority"] == "ERROR" for m in task.result["messages"])


# -- stop ----------------------------------------------------------------------------------------


async def cancel(w: World, task_id: str) -> None:
    from shared.contracts.tasks import TaskCancel

    await publish(
        w.tracker.service.broker, w.tracker.service.names, TaskCancel.now(task_id=task_id)
    )


async def test_stop_while_queued(w: World) -> None:
    await w.sandbox_post("/_sandbox/openhexa", {"queue_seconds": 30})
    await w.submit("stop-queued", pipeline_code="extract-03")

    async def launched() -> bool:
        task = await w.task("stop-queued")
        return task is not None and isinstance(task.result, dict) and "run_id" in str(task.result)

    await eventually(launched, timeout=10)
    await cancel(w, "stop-queued")
    task = await w.ended("stop-queued")
    assert task.status == "KILLED"
    (run,) = await w.runs_of("extract-03")
    assert run.status == "stopped"


async def test_stop_while_running(w: World) -> None:
    await w.sandbox_post("/_sandbox/openhexa", {"run_seconds": 30})
    await w.submit("stop-running", pipeline_code="extract-04")

    async def running() -> bool:
        runs = await w.runs_of("extract-04")
        task = await w.task("stop-running")
        return bool(runs) and runs[0].status == "running" and "run_id" in str(task and task.result)

    await eventually(running, timeout=10)
    await cancel(w, "stop-running")
    task = await w.ended("stop-running")
    assert task.status == "KILLED"
    (run,) = await w.runs_of("extract-04")
    assert run.status == "stopped"


async def test_stop_of_a_run_that_already_ended_reports_how_it_ended(w: World) -> None:
    # The task's run ended (success) but its watch has not reported it yet: the cancel
    # finds it completed (PIPELINE_ALREADY_COMPLETED) and the task ends as the run did.
    pipeline = await w.openhexa.pipeline(code="extract-05")
    ended = await w.openhexa.run_pipeline(pipeline.id, None, {"task_id": "late-cancel"})
    assert ended.run is not None
    await eventually(
        lambda: _status_is(w.openhexa, ended.run.id, "success"),
        timeout=10,  # type: ignore[union-attr]
    )
    stopped = await w.openhexa.stop_pipeline(ended.run.id)
    assert stopped.errors == ["PIPELINE_ALREADY_COMPLETED"]
    await w.submit("late-cancel", pipeline_code="extract-05")

    async def adopted() -> bool:
        task = await w.task("late-cancel")
        return task is not None and ended.run is not None and ended.run.id in str(task.result)

    await eventually(adopted, timeout=10)
    await cancel(w, "late-cancel")
    task = await w.ended("late-cancel")
    assert task.status == "SUCCESS"  # as the run ended, not KILLED: nothing was stopped
    runs = await w.runs_of("extract-05")
    assert [r.id for r in runs] == [ended.run.id]  # adopted, never launched again


async def _status_is(client: OpenHexaClient, run_id: str, status: str) -> bool:
    run = await client.run(run_id)
    return run is not None and run.status == status


# -- a crash mid-watch -------------------------------------------------------------------------


async def test_a_launcher_killed_mid_watch_resumes_the_watch(
    base_settings: BaseSettings, cleanup: Cleanup, tmp_path: Path
) -> None:
    knobs = Knobs(queue_seconds=0.2, run_seconds=4.0)
    app = create_app(OpenHexaOptions(), knobs, faults.Faults())
    async with serving([("openhexa", app, 0)]) as [sandbox]:
        tracker = TaskTracker(
            tracker_settings(base_settings, "sqlite", tmp_path, sweep_interval=3600.0)
        )
        settings = launcher_settings(base_settings, sandbox.url, http_port=free_port())
        cleanup.services.extend([tracker.service, build(settings).service])
        cleanup.queues.extend(tracker.service.names.delay_queue(s) for s in (1, 5, 30, 300, 1800))
        await tracker.service.app.start()
        log = tmp_path / "launcher.log"
        processes: list[subprocess.Popen[bytes]] = []

        async def start() -> subprocess.Popen[bytes]:
            with log.open("ab") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", "services.openhexa_launcher"],
                    env={**os.environ, **settings.as_environment()},
                    stdout=out,
                    stderr=out,
                )
            processes.append(process)

            async def ready() -> bool:
                assert process.poll() is None, log.read_text()[-2000:]
                try:
                    async with httpx.AsyncClient() as http:
                        url = f"http://127.0.0.1:{settings.http_port}/readyz"
                        return (await http.get(url, timeout=1)).status_code == 200
                except httpx.HTTPError:
                    return False

            await eventually(ready, timeout=30, interval=0.1)
            return process

        try:
            first = await start()
            async with Requester(base_settings.amqp_url, tracker.service.names) as client:
                w = World(sandbox, knobs, tracker, None, client, None, settings)  # type: ignore[arg-type]
                task_id = "killed-" + uuid.uuid4().hex[:6]
                await w.submit(task_id, pipeline_code="extract-06")

                async def watched() -> bool:
                    task = await w.task(task_id)
                    return (
                        task is not None
                        and task.status == "RUNNING"
                        and ("run_id" in str(task.result))
                    )

                await eventually(watched, timeout=15)
                first.send_signal(signal.SIGKILL)
                first.wait(10)
                await start()
                task = await w.ended(task_id, timeout=30)
                assert task.status == "SUCCESS", task.progress_message
        finally:
            for process in processes:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
                    process.wait(20)
            await tracker.service.app.stop()
