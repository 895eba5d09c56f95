"""Hugging Face → AI-on-Demand sync, end to end, beside the peer connector's approach.

    python bench/sync.py [--datasets 100000] [--latency-ms 20] [--uploaders 2]
                         [--collectors 1] [--sample 200] [--seed 0]

Every process as deployed: the HF Hub and AIoD stand-ins (each its own process, every call
delayed by `--latency-ms`), RabbitMQ (already running), the task tracker (SQLite), the
collector and `--uploaders` uploader processes. A sync task of mode `all` is submitted the
way `ferry sync hf-to-aiod` submits it; the clock runs from the submit until the tracker
says every discovered dataset has its outcome. Printed: datasets/s, and the peak RSS of each
process (VmHWM).

Baseline, in the same run and against the same stand-ins: the peer connector's approach
(reference A7) on `--sample` datasets of the listing: one dataset at a time, its parquet
files, then a GET by platform id, then a POST, each call paying the same latency. Its
records are forgotten before the sync starts. Printed: its datasets/s and `ratio: N`.

Goals: ratio >= 30, 100,000 datasets in <= 3 minutes on a 2-core machine, every service
under 150 MB RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.aiod_uploader.settings import UploaderSettings
from services.hf_collector.settings import CollectorSettings
from services.task_tracker.settings import TrackerSettings
from shared.contracts.hf import HfDatasetsCollect
from shared.contracts.tasks import DrivingCommand, TaskGet, TaskGetReply, TaskSubmit, TaskView
from shared.messaging import Requester, publish
from shared.settings import BaseSettings
from shared.topology import Names

HF_TOKEN = "hf_sandboxTokenForFerryLocalRuns000000"
CLIENT_ID, CLIENT_SECRET = "platform_huggingface", "sandbox-connector-secret"
PLATFORM = "huggingface"


# -- the stand-ins, each in a process of its own --------------------------------------------


def serve_stand_in(name: str, port: int, datasets: int, seed: int, latency_ms: float) -> None:
    """`--serve NAME`: one stand-in, until SIGTERM."""
    from services.sandbox import aiod, hf_hub
    from services.sandbox.faults import FaultChange
    from services.sandbox.server import serving

    faults = (FaultChange(latency_ms=latency_ms),) if latency_ms else ()
    if name == "hf-hub":
        app = hf_hub.create_app(
            hf_hub.HubOptions(datasets=datasets, seed=seed, quota=10_000_000, faults=faults)
        )
    else:
        app = aiod.create_app(
            aiod.AiodOptions(faults=faults, seed=seed, token_lifetime_seconds=3600)
        )

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        async with serving([(name, app, port)]):
            print("ready", flush=True)
            await stop.wait()

    asyncio.run(run())


# -- processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def peak_rss_mb(self) -> float | None:
        try:
            status = Path(f"/proc/{self.popen.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return None

    def cpu_seconds(self) -> float | None:
        try:
            stat = Path(f"/proc/{self.popen.pid}/stat").read_text()
        except OSError:
            return None
        parts = stat.rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()


class Fleet:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: list[Process] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Process:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                argv, env={**os.environ, **(env or {})}, stdout=out, stderr=out, cwd=ROOT
            )
        process = Process(name, popen, log)
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


def wait_http(url: str, process: Process, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            raise SystemExit(f"{process.name} exited: {process.log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code < 500:
                return
        time.sleep(0.1)
    raise SystemExit(f"{process.name} not ready at {url} after {timeout}s")


# -- the baseline: the peer connector's approach -------------------------------------------


def baseline(hub_url: str, aiod_url: str, sample: int) -> tuple[int, float]:
    """One dataset at a time: parquet files, GET by platform id, POST; datasets and seconds."""
    hub = httpx.Client(base_url=hub_url, headers={"Authorization": f"Bearer {HF_TOKEN}"})
    api = httpx.Client(base_url=aiod_url)
    token = api.post(
        "/aiod-auth/realms/aiod/protocol/openid-connect/token",
        data={
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
    ).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    items = hub.get("/api/datasets", params={"full": "true", "limit": sample}).json()
    items = [i for i in items if not i.get("private") and not i.get("disabled")][:sample]
    started = time.perf_counter()
    for item in items:
        answer = hub.get("/parquet", params={"dataset": item["id"]})
        files = answer.json().get("parquet_files", []) if answer.status_code == 200 else []
        body = {
            "platform": PLATFORM,
            "platform_resource_identifier": item["_id"],
            "name": item["id"],
            "same_as": f"https://huggingface.co/datasets/{item['id']}",
            "description": {"plain": (item.get("description") or "x")[:65_000]},
            "keyword": item.get("tags", []),
            "distribution": [
                {"content_url": f["url"], "name": f["filename"], "content_size_kb": 1}
                for f in files
            ],
        }
        found = api.get(f"/v2/platforms/{PLATFORM}/datasets/{item['_id']}")
        if found.status_code == 404:
            api.post("/v2/datasets", json=body, headers=auth).raise_for_status()
        else:
            api.put(f"/v2/datasets/{found.json()['identifier']}", json=body, headers=auth)
    elapsed = time.perf_counter() - started
    api.delete("/_sandbox/records").raise_for_status()  # the sync starts from nothing
    return len(items), elapsed


# -- the sync -------------------------------------------------------------------------------


def settings_env(settings: BaseSettings, port: int) -> dict[str, str]:
    return {**settings.as_environment(), "FERRY_HTTP_PORT": str(port)}


async def submit_and_wait(
    base: BaseSettings, task_id: str, timeout: float
) -> tuple[TaskView, float]:
    names = Names(base.namespace)
    body: dict[str, Any] = {"mode": "all"}
    HfDatasetsCollect(task_id=task_id, mode="all")
    from faststream.rabbit import RabbitBroker

    broker = RabbitBroker(base.amqp_url)
    await broker.connect()
    async with Requester(base.amqp_url, names) as requester:
        started = time.perf_counter()
        await publish(
            broker,
            names,
            TaskSubmit(
                task_id=task_id,
                kind="hf-to-aiod",
                params=body,
                command=DrivingCommand(routing_key=HfDatasetsCollect.ROUTING_KEY, body=body),
                submitted_at=datetime.now(UTC),
            ),
        )
        last = ""
        while time.perf_counter() - started < timeout:
            await asyncio.sleep(0.5)
            task = (await requester.request(TaskGet(task_id=task_id), TaskGetReply)).task
            if task is None:
                continue
            line = f"  {time.perf_counter() - started:6.1f}s {task.status.value}"
            line += f" items {task.items_total} ({task.progress_message})"
            if line[9:] != last:
                print(line, flush=True)
                last = line[9:]
            if task.status.is_terminal:
                await broker.stop()
                return task, time.perf_counter() - started
    await broker.stop()
    raise SystemExit(f"the sync did not finish within {timeout}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", type=int, default=100_000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--uploaders", type=int, default=2)
    parser.add_argument("--collectors", type=int, default=1)
    parser.add_argument(
        "--upload-concurrency", type=int, default=UploaderSettings.upload_concurrency
    )
    parser.add_argument(
        "--parquet-concurrency", type=int, default=CollectorSettings.parquet_concurrency
    )
    parser.add_argument("--sample", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--serve", choices=("hf-hub", "aiod"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_stand_in(args.serve, args.port, args.datasets, args.seed, args.latency_ms)
        return 0

    workdir = Path(tempfile.mkdtemp(prefix="ferry-bench-sync-"))
    namespace = "bench" + uuid.uuid4().hex[:8]
    base = BaseSettings.from_env()
    base = BaseSettings(
        **{
            **{f.name: getattr(base, f.name) for f in fields(BaseSettings)},
            "namespace": namespace,
            "http_host": "127.0.0.1",
            "log_level": "WARNING",
        }
    )
    common = {f.name: getattr(base, f.name) for f in fields(BaseSettings)}
    fleet = Fleet(workdir)
    task_id = f"bench-{uuid.uuid4().hex[:8]}"
    built: list[BaseSettings] = []
    try:
        ports = {"hf-hub": free_port(), "aiod": free_port()}
        stand_ins = {
            name: fleet.start(
                name,
                [
                    sys.executable,
                    __file__,
                    "--serve",
                    name,
                    "--port",
                    str(port),
                    "--datasets",
                    str(args.datasets),
                    "--seed",
                    str(args.seed),
                    "--latency-ms",
                    str(args.latency_ms),
                ],
            )
            for name, port in ports.items()
        }
        hub_url = f"http://127.0.0.1:{ports['hf-hub']}"
        aiod_url = f"http://127.0.0.1:{ports['aiod']}"
        wait_http(hub_url + "/_sandbox/catalogue", stand_ins["hf-hub"], timeout=120)
        wait_http(aiod_url + "/_sandbox/faults", stand_ins["aiod"])
        summary = httpx.get(hub_url + "/_sandbox/catalogue", timeout=30).json()
        print(
            f"stand-ins: {summary['datasets']} datasets"
            f" ({summary['listed']} public and not disabled),"
            f" {args.latency_ms:g} ms per call; work dir {workdir}",
            flush=True,
        )

        sampled, took = baseline(hub_url, aiod_url, args.sample)
        baseline_rate = sampled / took
        print(f"baseline (peer connector's approach): {sampled} datasets in {took:.1f}s,"
              f" {baseline_rate:.1f} datasets/s", flush=True)  # fmt: skip

        tracker = TrackerSettings(
            **common,
            database_url=f"sqlite:///{workdir / 'tasks.db'}",
            sweep_interval=600,
            stall_after=600,
            give_up_after=3600,
        )
        collector = CollectorSettings(
            **common,
            hf_endpoint=hub_url,
            hf_viewer_url=hub_url,
            hf_token=HF_TOKEN,
            parquet_concurrency=args.parquet_concurrency,
        )
        uploader = UploaderSettings(
            **common,
            aiod_api_url=aiod_url + "/",
            aiod_auth_url=aiod_url + "/aiod-auth/",
            aiod_client_id=CLIENT_ID,
            aiod_client_secret=CLIENT_SECRET,
            upload_concurrency=args.upload_concurrency,
        )
        built = [tracker, collector, uploader]
        services: list[Process] = []
        plan = [("task_tracker", tracker, 1), ("hf_collector", collector, args.collectors),
                ("aiod_uploader", uploader, args.uploaders)]  # fmt: skip
        for module, settings, count in plan:
            for index in range(count):
                port = free_port()
                process = fleet.start(
                    f"{module}-{index}",
                    [sys.executable, "-m", f"services.{module}"],
                    settings_env(settings, port),
                )
                wait_http(f"http://127.0.0.1:{port}/readyz", process)
                services.append(process)
        task, elapsed = asyncio.run(submit_and_wait(base, task_id, args.timeout))
        result = task.result if isinstance(task.result, dict) else {}
        discovered = int(result.get("discovered", task.items_total))
        rate = discovered / elapsed
        print(f"sync: {task.status.value}, {discovered} datasets in {elapsed:.1f}s,"
              f" {rate:.0f} datasets/s; result {result}")  # fmt: skip
        counts = httpx.get(aiod_url + "/counts/datasets?detailed=true", timeout=60).json()
        print(f"records of {PLATFORM} at AIoD afterwards: {counts.get(PLATFORM, 0)}")
        print("process            peak RSS (MB)  CPU (s)")
        for process in [*services, *stand_ins.values()]:
            rss, cpu = process.peak_rss_mb(), process.cpu_seconds()
            shown = f"{rss:13.0f}" if rss is not None else f"{'?':>13}"
            print(f"  {process.name:<18} {shown}  {cpu or 0:7.1f}")
        print(f"ratio: {rate / baseline_rate:.0f}")
        return 0
    finally:
        fleet.stop()
        if built:
            with contextlib.suppress(Exception):
                _delete_namespace(base, built, task_id)


def _delete_namespace(base: BaseSettings, built: list[BaseSettings], task_id: str) -> None:
    """Remove the run's queues and exchanges, named the way the services name them."""
    from services.aiod_uploader.app import build as build_uploader
    from services.hf_collector.app import build as build_collector
    from services.task_tracker.app import TaskTracker
    from shared.contracts.aiod import seen_queue_name
    from tests.support.broker import delete_declared

    tracker, collector, uploader = built
    services = [
        TaskTracker(tracker).service,  # type: ignore[arg-type]
        build_collector(collector).service,  # type: ignore[arg-type]
        build_uploader(uploader).service,  # type: ignore[arg-type]
    ]
    seen = Names(base.namespace)(seen_queue_name(task_id))
    asyncio.run(delete_declared(base.amqp_url, services, [seen]))


if __name__ == "__main__":
    sys.exit(main())
