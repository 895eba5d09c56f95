"""Ferry's own gRPC API (`ferry.v1`) end to end: tasks through the real task tracker;
pipelines and Hugging Face repositories through small stand-ins of the openhexa_launcher
and the hf_collector that answer their request contracts (the real services land later).
Also the failure mapping: INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, UNAVAILABLE (owner
not running) and DEADLINE_EXCEEDED (owner too slow)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import aio_pika.abc
import grpc
import grpc.aio
import msgspec
import pytest

from services.gateway.app import Gateway
from services.gateway.generated.ferry.v1 import hf_repos_pb2, pipelines_pb2, tasks_pb2
from services.gateway.rpc import Stub
from services.gateway.tls import DevelopmentCertificates
from services.task_tracker.app import TaskTracker
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
from shared.contracts.openhexa import (
    PipelineDetail,
    PipelineGet,
    PipelineGetReply,
    PipelineList,
    PipelineListReply,
    PipelineParameter,
    PipelineSummary,
    PipelineVersion,
    RunLaunch,
)
from shared.contracts.tasks import TaskUpdate
from shared.faults import AlreadyExists, NotFound
from shared.messaging import publish
from shared.service import Service
from shared.settings import BaseSettings
from shared.topology import Names, WorkQueue
from tests.conftest import Cleanup
from tests.support.gateway import (
    certificates,  # noqa: F401 (a fixture)
    client,
    gateway_settings,
    running_gateway,
    stub,
)
from tests.support.tracker import tracker_settings

QUEUED = tasks_pb2.TASK_STATUS_QUEUED
RUNNING = tasks_pb2.TASK_STATUS_RUNNING
SUCCESS = tasks_pb2.TASK_STATUS_SUCCESS


@dataclass
class Api:
    gateway: Gateway
    tracker: TaskTracker
    tasks: Stub
    pipelines: Stub
    repos: Stub


@pytest.fixture
async def api(
    base_settings: BaseSettings,
    certificates: DevelopmentCertificates,  # noqa: F811
    tmp_path: Path,
    cleanup: Cleanup,
) -> AsyncIterator[Api]:
    tracker = TaskTracker(
        tracker_settings(base_settings, "sqlite", tmp_path, sweep_interval=3600.0)
    )
    cleanup.services.append(tracker.service)
    await tracker.service.app.start()
    try:
        settings = gateway_settings(base_settings, certificates, tmp_path, request_timeout=2.0)
        async with (
            running_gateway(settings, cleanup) as gateway,
            client(gateway, certificates.client_credentials) as channel,
        ):
            yield Api(
                gateway,
                tracker,
                stub(channel, tasks_pb2, "Tasks"),
                stub(channel, pipelines_pb2, "Pipelines"),
                stub(channel, hf_repos_pb2, "HfRepos"),
            )
    finally:
        await tracker.service.app.stop()


async def listen(
    amqp: aio_pika.abc.AbstractRobustConnection, namespace: str, routing_key: str
) -> asyncio.Queue[bytes]:
    """A worker's queue for `routing_key`, as the owning service would bind it."""
    channel = await amqp.channel()
    exchange = await channel.get_exchange(Names(namespace).exchange)
    queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
    await queue.bind(exchange, routing_key)
    heard: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        heard.put_nowait(message.body)

    await queue.consume(on_message, no_ack=True)
    return heard


async def status_of(awaitable: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await awaitable  # type: ignore[misc]
    return failure.value.code(), failure.value.details() or ""


async def get(api: Api, task_id: str) -> tasks_pb2.Task:
    reply = await api.tasks.unary("GetTask")(tasks_pb2.GetTaskRequest(task_id=task_id), timeout=10)
    assert isinstance(reply, tasks_pb2.GetTaskResponse)
    return reply.task


# -- tasks, through the real tracker -------------------------------------------------------


async def test_submit_hf_sync_makes_a_task_driven_by_hf_datasets_collect(
    api: Api, amqp: aio_pika.abc.AbstractRobustConnection, namespace: str
) -> None:
    collects = await listen(amqp, namespace, HfDatasetsCollect.ROUTING_KEY)
    reply = await api.tasks.unary("SubmitHfSync")(
        tasks_pb2.SubmitHfSyncRequest(
            task_id="sync-1",
            mode=tasks_pb2.HF_SYNC_MODE_SINCE,
            value="2026-01-01T00:00:00Z",
            author="acme",
            filter=["language:en"],
            limit=100,
            prune=True,
        ),
        timeout=10,
    )
    assert reply.task_id == "sync-1"
    command = HfDatasetsCollect.decode(await asyncio.wait_for(collects.get(), 10))
    assert command == HfDatasetsCollect(
        task_id="sync-1",
        mode="since",
        value="2026-01-01T00:00:00Z",
        author="acme",
        filter=["language:en"],
        limit=100,
        prune=True,
    )
    task = await get(api, "sync-1")
    assert (task.kind, task.status) == ("hf-to-aiod", QUEUED)
    assert msgspec.json.decode(task.params_json)["mode"] == "since"


async def test_a_bad_sync_is_invalid_argument_and_submits_nothing(api: Api) -> None:
    for request, expected in [
        (tasks_pb2.SubmitHfSyncRequest(mode=tasks_pb2.HF_SYNC_MODE_ID), "needs a value"),
        (tasks_pb2.SubmitHfSyncRequest(), "mode"),
        (
            tasks_pb2.SubmitHfSyncRequest(mode=tasks_pb2.HF_SYNC_MODE_SINCE, value="yesterday"),
            "RFC 3339",
        ),
        (
            tasks_pb2.SubmitHfSyncRequest(mode=tasks_pb2.HF_SYNC_MODE_ALL, force=True),
            "only applies with `prune`",
        ),
        (
            tasks_pb2.SubmitHfSyncRequest(task_id="../x", mode=tasks_pb2.HF_SYNC_MODE_ALL),
            "task_id",
        ),
    ]:
        code, details = await status_of(api.tasks.unary("SubmitHfSync")(request, timeout=10))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, details
        assert expected in details


async def test_launch_pipeline_makes_a_task_driven_by_openhexa_runs_launch(
    api: Api, amqp: aio_pika.abc.AbstractRobustConnection, namespace: str
) -> None:
    launches = await listen(amqp, namespace, RunLaunch.ROUTING_KEY)
    reply = await api.tasks.unary("LaunchPipeline")(
        tasks_pb2.LaunchPipelineRequest(pipeline_code="etl", config_json='{"year": 2026}'),
        timeout=10,
    )
    launch = RunLaunch.decode(await asyncio.wait_for(launches.get(), 10))
    assert (launch.task_id, launch.pipeline_code, launch.config) == (
        reply.task_id,
        "etl",
        {"year": 2026},
    )
    code, details = await status_of(
        api.tasks.unary("LaunchPipeline")(
            tasks_pb2.LaunchPipelineRequest(pipeline_code="etl", config_json="[1]"), timeout=10
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "JSON object" in details


async def test_watch_task_streams_every_change_until_it_ends(
    api: Api, amqp: aio_pika.abc.AbstractRobustConnection, namespace: str
) -> None:
    await listen(amqp, namespace, HfDatasetsCollect.ROUTING_KEY)
    await api.tasks.unary("SubmitHfSync")(
        tasks_pb2.SubmitHfSyncRequest(task_id="watched", mode=tasks_pb2.HF_SYNC_MODE_ALL),
        timeout=10,
    )
    seen: list[tasks_pb2.Task] = []

    async def watch() -> None:
        stream = api.tasks.stream("WatchTask")(
            tasks_pb2.WatchTaskRequest(task_id="watched"), timeout=30
        )
        async for task in stream:
            seen.append(task)

    watching = asyncio.create_task(watch())
    while not seen:  # the first message: the task as it is now
        await asyncio.sleep(0.02)
    broker, names = api.gateway.service.broker, api.gateway.service.names
    steps = [(RUNNING, 1), (RUNNING, 2), (RUNNING, 3), (SUCCESS, 3)]
    for status, progress in steps:
        update = TaskUpdate.now(
            task_id="watched",
            status=tasks_pb2.TaskStatus.Name(status).removeprefix("TASK_STATUS_"),
            progress_value=progress,
            end_value=3,
        )
        await publish(broker, names, update)
        # One at a time, so each is its own commit (and its own event).
        while not any(t.status == status and t.progress_value == progress for t in seen):
            await asyncio.sleep(0.02)
    await asyncio.wait_for(watching, 10)  # the stream ends with the task
    assert seen[0].status == QUEUED
    assert [(t.status, t.progress_value) for t in seen[1:]] == steps
    assert seen[-1].ended_at.seconds > 0


async def test_list_get_and_cancel(
    api: Api, amqp: aio_pika.abc.AbstractRobustConnection, namespace: str
) -> None:
    await listen(amqp, namespace, HfDatasetsCollect.ROUTING_KEY)
    for task_id in ("a-1", "a-2"):
        await api.tasks.unary("SubmitHfSync")(
            tasks_pb2.SubmitHfSyncRequest(task_id=task_id, mode=tasks_pb2.HF_SYNC_MODE_ALL),
            timeout=10,
        )

    async def listed() -> list[str]:
        reply = await api.tasks.unary("ListTasks")(
            tasks_pb2.ListTasksRequest(statuses=[QUEUED], kind="hf-to-aiod"), timeout=10
        )
        return sorted(t.id for t in reply.tasks)

    for _ in range(100):
        if await listed() == ["a-1", "a-2"]:
            break
        await asyncio.sleep(0.05)
    assert await listed() == ["a-1", "a-2"]

    cancelled = await api.tasks.unary("CancelTask")(
        tasks_pb2.CancelTaskRequest(task_id="a-1", reason="not needed"), timeout=10
    )
    assert not cancelled.already_ended
    for _ in range(100):
        task = await get(api, "a-1")
        if task.should_be_killed:
            break
        await asyncio.sleep(0.05)
    assert task.should_be_killed and task.cancelling

    await publish(
        api.gateway.service.broker,
        api.gateway.service.names,
        TaskUpdate.now(task_id="a-2", status="SUCCESS"),
    )
    for _ in range(100):
        if (await get(api, "a-2")).status == SUCCESS:
            break
        await asyncio.sleep(0.05)
    again = await api.tasks.unary("CancelTask")(
        tasks_pb2.CancelTaskRequest(task_id="a-2"), timeout=10
    )
    assert again.already_ended and again.status == SUCCESS

    code, details = await status_of(
        api.tasks.unary("GetTask")(tasks_pb2.GetTaskRequest(task_id="ghost"), timeout=10)
    )
    assert code == grpc.StatusCode.NOT_FOUND and "ghost" in details
    code, _ = await status_of(
        api.tasks.unary("CancelTask")(tasks_pb2.CancelTaskRequest(task_id="ghost"), timeout=10)
    )
    assert code == grpc.StatusCode.NOT_FOUND


# -- pipelines and repositories, through stand-ins ------------------------------------------


class StandIns:
    """The request contracts of the openhexa_launcher and the hf_collector, answered."""

    def __init__(self, settings: BaseSettings) -> None:
        self.launcher = Service("openhexa_launcher", settings)
        self.collector = Service("hf_collector", settings)
        self.repos: dict[str, bool] = {"acme/existing": True}  # repo id -> private
        self.slow = False

        def request(service: str, purpose: str, key: str) -> WorkQueue:
            return WorkQueue(service, purpose, key, kind="request", message_ttl_ms=10_000)

        pipeline = PipelineDetail(
            id="p-1",
            code="etl",
            name="ETL",
            version=PipelineVersion(
                id="v-3",
                number=3,
                parameters=[PipelineParameter(code="year", type="int", default=2026)],
            ),
        )

        @self.launcher.handles(
            request("openhexa_launcher", "list", PipelineList.ROUTING_KEY), PipelineList
        )
        async def list_pipelines(body: PipelineList) -> PipelineListReply:
            return PipelineListReply(
                pipelines=[
                    PipelineSummary(id="p-1", code="etl", name="ETL", current_version_number=3)
                ]
            )

        @self.launcher.handles(
            request("openhexa_launcher", "get", PipelineGet.ROUTING_KEY), PipelineGet
        )
        async def get_pipeline(body: PipelineGet) -> PipelineGetReply:
            if body.pipeline_code != "etl":
                raise NotFound(f"no pipeline {body.pipeline_code or body.pipeline_id}")
            return PipelineGetReply(pipeline=pipeline)

        @self.collector.handles(request("hf_collector", "whoami", HfWhoami.ROUTING_KEY), HfWhoami)
        async def whoami(body: HfWhoami) -> HfWhoamiReply:
            if self.slow:
                await asyncio.sleep(2.5)
            return HfWhoamiReply(name="ferry-bot", type="user", orgs=["acme"])

        @self.collector.handles(
            request("hf_collector", "create", HfRepoCreate.ROUTING_KEY), HfRepoCreate
        )
        async def create(body: HfRepoCreate) -> HfRepoCreateReply:
            if body.repo_id in self.repos:
                raise AlreadyExists(f"{body.repo_id} already exists")
            self.repos[body.repo_id] = body.private
            return HfRepoCreateReply(url=f"https://huggingface.co/datasets/{body.repo_id}")

        @self.collector.handles(
            request("hf_collector", "delete", HfRepoDelete.ROUTING_KEY), HfRepoDelete
        )
        async def delete(body: HfRepoDelete) -> HfRepoDeleteReply:
            if self.repos.pop(body.repo_id, None) is None:
                raise NotFound(f"no repository {body.repo_id}")
            return HfRepoDeleteReply()

        @self.collector.handles(
            request("hf_collector", "visibility", HfRepoVisibility.ROUTING_KEY),
            HfRepoVisibility,
        )
        async def visibility(body: HfRepoVisibility) -> HfRepoVisibilityReply:
            if body.repo_id not in self.repos:
                raise NotFound(f"no repository {body.repo_id}")
            self.repos[body.repo_id] = body.private
            return HfRepoVisibilityReply()


@pytest.fixture
async def stand_ins(
    api: Api, base_settings: BaseSettings, cleanup: Cleanup
) -> AsyncIterator[StandIns]:
    stand_ins = StandIns(base_settings)
    for service in (stand_ins.launcher, stand_ins.collector):
        cleanup.services.append(service)
        await service.app.start()
    yield stand_ins
    for service in (stand_ins.launcher, stand_ins.collector):
        await service.app.stop()


async def test_pipelines_are_listed_and_described(api: Api, stand_ins: StandIns) -> None:
    listed = await api.pipelines.unary("ListPipelines")(
        pipelines_pb2.ListPipelinesRequest(), timeout=10
    )
    assert [(p.code, p.current_version_number) for p in listed.pipelines] == [("etl", 3)]
    pipeline = await api.pipelines.unary("GetPipeline")(
        pipelines_pb2.GetPipelineRequest(pipeline_code="etl"), timeout=10
    )
    assert pipeline.version.number == 3
    (parameter,) = pipeline.version.parameters
    assert (parameter.code, parameter.type, parameter.default_json) == ("year", "int", "2026")
    code, _ = await status_of(
        api.pipelines.unary("GetPipeline")(
            pipelines_pb2.GetPipelineRequest(pipeline_code="nope"), timeout=10
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND
    code, details = await status_of(
        api.pipelines.unary("GetPipeline")(pipelines_pb2.GetPipelineRequest(), timeout=10)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "exactly one" in details


async def test_repositories_are_managed_through_the_collector(
    api: Api, stand_ins: StandIns
) -> None:
    repos = api.repos
    me = await repos.unary("Whoami")(hf_repos_pb2.WhoamiRequest(), timeout=10)
    assert (me.name, list(me.orgs)) == ("ferry-bot", ["acme"])
    dataset = hf_repos_pb2.REPO_TYPE_DATASET
    created = await repos.unary("CreateRepo")(
        hf_repos_pb2.CreateRepoRequest(repo_id="acme/new", type=dataset, private=True),
        timeout=10,
    )
    assert created.url.endswith("/datasets/acme/new")
    code, details = await status_of(
        repos.unary("CreateRepo")(
            hf_repos_pb2.CreateRepoRequest(repo_id="acme/new", type=dataset), timeout=10
        )
    )
    assert code == grpc.StatusCode.ALREADY_EXISTS and "acme/new" in details
    await repos.unary("UpdateRepoVisibility")(
        hf_repos_pb2.UpdateRepoVisibilityRequest(repo_id="acme/new", type=dataset, private=False),
        timeout=10,
    )
    assert stand_ins.repos["acme/new"] is False
    await repos.unary("DeleteRepo")(
        hf_repos_pb2.DeleteRepoRequest(repo_id="acme/new", type=dataset), timeout=10
    )
    code, _ = await status_of(
        repos.unary("DeleteRepo")(
            hf_repos_pb2.DeleteRepoRequest(repo_id="acme/new", type=dataset), timeout=10
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND
    for request in (
        hf_repos_pb2.CreateRepoRequest(repo_id="no-slash", type=dataset),
        hf_repos_pb2.CreateRepoRequest(repo_id="acme/x"),
        hf_repos_pb2.CreateRepoRequest(repo_id="acme/x", type=hf_repos_pb2.REPO_TYPE_SPACE),
    ):
        code, _ = await status_of(repos.unary("CreateRepo")(request, timeout=10))
        assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_slow_owner_is_deadline_exceeded_and_a_missing_one_unavailable(
    api: Api, base_settings: BaseSettings, cleanup: Cleanup
) -> None:
    code, details = await status_of(
        api.repos.unary("Whoami")(hf_repos_pb2.WhoamiRequest(), timeout=10)
    )
    assert code == grpc.StatusCode.UNAVAILABLE and "hf_collector is not running" in details

    stand_ins = StandIns(base_settings)
    stand_ins.slow = True
    cleanup.services.append(stand_ins.collector)
    await stand_ins.collector.app.start()
    try:
        code, details = await status_of(
            api.repos.unary("Whoami")(hf_repos_pb2.WhoamiRequest(), timeout=1.0)
        )
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
        # With no deadline of the client's, the gateway's own (FERRY_REQUEST_TIMEOUT) holds.
        code, details = await status_of(
            api.repos.unary("Whoami")(hf_repos_pb2.WhoamiRequest(), timeout=30)
        )
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED and "did not answer" in details
    finally:
        await stand_ins.collector.app.stop()
