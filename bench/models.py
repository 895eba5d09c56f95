"""Benchmark of the `nlu_models` service: quality and speed, against a baseline.

Trains on the generated intent set (bench/data/intents.py: 24 intents, 1,080 training
utterances; held out: 360 phrased by templates training never saw, and 240 new ones from
the training templates) through the service over RabbitMQ, with the task tracker driving
the training, and prints:

- held-out accuracy and macro-F1 on both held-out splits, training time (TrainModel until
  the task is SUCCESS);
- Classify throughput (utterances/s) and p50/p99 latency of 100-utterance requests;
- Embed throughput; the service process's RSS;
- beside a TF-IDF + logistic regression baseline (scikit-learn) trained in the same run on
  the same split, and the ratios.

    .venv/bin/python bench/models.py [--rounds 30]

Needs RabbitMQ at FERRY_AMQP_URL (default 127.0.0.1:5672). The service runs as its own
process (`python -m services.nlu_models`), so its RSS is its own.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import fields
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.data.intents import Utterance, generate, to_hf_json
from services.nlu_models.app import NluModels
from services.nlu_models.embedding import RUNTIMES
from services.nlu_models.settings import ModelSettings
from services.task_tracker.app import TaskTracker
from services.task_tracker.settings import TrackerSettings
from shared.contracts.models import (
    IntentsDataOptions,
    ModelClassify,
    ModelClassifyReply,
    ModelEmbed,
    ModelEmbedReply,
    ModelReply,
    ModelTrain,
)
from shared.contracts.tasks import TaskGet, TaskGetReply
from shared.messaging import Requester
from shared.settings import BaseSettings
from shared.topology import Names
from tests.support.broker import delete_declared

NS, INTEGRATION = "bench", "intents"
BATCH = 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def macro_f1(truth: list[str], predicted: list[str]) -> float:
    scores = []
    for label in sorted(set(truth)):
        tp = sum(t == label and p == label for t, p in zip(truth, predicted, strict=True))
        fp = sum(t != label and p == label for t, p in zip(truth, predicted, strict=True))
        fn = sum(t == label and p != label for t, p in zip(truth, predicted, strict=True))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores)


def accuracy(truth: list[str], predicted: list[str]) -> float:
    return sum(t == p for t, p in zip(truth, predicted, strict=True)) / len(truth)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def baseline(
    train: list[Utterance], test: list[Utterance], seen: list[Utterance]
) -> dict[str, float]:
    """TF-IDF (word 1-2 grams and character 2-5 grams) + logistic regression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    started = time.perf_counter()
    model = make_pipeline(
        make_union(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True),
        ),
        LogisticRegression(C=10.0, max_iter=2000),
    )
    model.fit([u.text for u in train], [u.intent for u in train])
    trained = time.perf_counter() - started
    texts = [u.text for u in test]
    started = time.perf_counter()
    predicted = list(model.predict(texts))
    elapsed = time.perf_counter() - started
    truth = [u.intent for u in test]
    seen_truth = [u.intent for u in seen]
    seen_predicted = list(model.predict([u.text for u in seen]))
    return {
        "accuracy": accuracy(truth, predicted),
        "macro_f1": macro_f1(truth, predicted),
        "seen_accuracy": accuracy(seen_truth, seen_predicted),
        "seen_macro_f1": macro_f1(seen_truth, seen_predicted),
        "train_s": trained,
        "classify_per_s": len(texts) / elapsed,
    }


async def run(rounds: int, runtime: str) -> None:
    train, test, seen = generate()
    namespace = "bench" + uuid.uuid4().hex[:8]
    amqp_url = os.environ.get("FERRY_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    base = BaseSettings(amqp_url=amqp_url, namespace=namespace, http_host="127.0.0.1")
    common = {f.name: getattr(base, f.name) for f in fields(BaseSettings)}
    workdir = Path(tempfile.mkdtemp(prefix="ferry-bench-models-"))
    tracker = TaskTracker(
        TrackerSettings(
            **{**common, "http_port": free_port()},  # type: ignore[arg-type]
            database_url=f"sqlite:///{workdir / 'tasks.db'}",
        )
    )
    settings = ModelSettings(
        **{**common, "http_port": free_port(), "request_timeout": 60.0},  # type: ignore[arg-type]
        data_dir=str(workdir / "models"),
        embedding_runtime=runtime,
    )
    await tracker.service.app.start()
    log = (workdir / "nlu_models.log").open("ab")
    worker = subprocess.Popen(
        [sys.executable, "-m", "services.nlu_models"],
        env={**os.environ, **settings.as_environment()},
        stdout=log,
        stderr=log,
        cwd=ROOT,
    )
    try:
        async with httpx.AsyncClient() as http:
            deadline = time.monotonic() + 120
            while True:
                if worker.poll() is not None:
                    tail = (workdir / "nlu_models.log").read_text()[-2000:]
                    raise SystemExit(f"nlu_models exited:\n{tail}")
                try:
                    url = f"http://127.0.0.1:{settings.http_port}/readyz"
                    if (await http.get(url, timeout=1)).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("nlu_models did not become ready in 120 s")
                await asyncio.sleep(0.2)
        rss_idle = rss_mib(worker.pid)
        async with Requester(amqp_url, Names(namespace), default_timeout=120.0) as client:
            data = gzip.compress(json.dumps(to_hf_json(train)).encode())
            started = time.perf_counter()
            reply = await client.request(
                ModelTrain(
                    namespace=NS,
                    integration_id=INTEGRATION,
                    format_options=IntentsDataOptions(gzip_encoding=True),
                    data=data,
                ),
                ModelReply,
            )
            assert reply.model is not None and reply.model.task_id is not None
            while True:
                task = (
                    await client.request(TaskGet(task_id=reply.model.task_id), TaskGetReply)
                ).task
                if task is not None and task.status in ("SUCCESS", "ERRORED"):
                    break
                await asyncio.sleep(0.1)
            train_s = time.perf_counter() - started
            if task.status != "SUCCESS":
                raise SystemExit(f"training failed: {task.progress_message}")
            model_id = reply.model.id

            def classify(texts: list[str]) -> ModelClassify:
                return ModelClassify(
                    namespace=NS, integration_id=INTEGRATION, model_id=model_id, examples=texts
                )

            names = {f"intent-{u.intent}": u.intent for u in train}

            async def predict(texts: list[str]) -> list[str]:
                predicted: list[str] = []
                for start in range(0, len(texts), BATCH):
                    result = await client.request(
                        classify(texts[start : start + BATCH]), ModelClassifyReply
                    )
                    predicted += [
                        names[p.matches[0].id] if p.matches else "" for p in result.predictions
                    ]
                return predicted

            predicted = await predict([u.text for u in test])
            seen_predicted = await predict([u.text for u in seen])
            truth = [u.intent for u in test]
            seen_truth = [u.intent for u in seen]

            # Latency and throughput: `rounds` requests of 100 utterances, one at a time.
            pool = [u.text for u in train + test]
            latencies = []
            cpu_before = cpu_seconds(worker.pid)
            for r in range(rounds):
                batch = [pool[(r * BATCH + i) % len(pool)] for i in range(BATCH)]
                started = time.perf_counter()
                await client.request(classify(batch), ModelClassifyReply)
                latencies.append(time.perf_counter() - started)
            classify_per_s = BATCH * rounds / sum(latencies)
            # CPU time is what contention for the cores does not inflate: the service's
            # utterances per CPU-second say what its cores can do when they are its own.
            classify_per_cpu_s = BATCH * rounds / (cpu_seconds(worker.pid) - cpu_before)
            latencies.sort()
            p50 = statistics.median(latencies)
            p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]

            started = time.perf_counter()
            embed_rounds = max(3, rounds // 3)
            for r in range(embed_rounds):
                batch = [pool[(r * BATCH + i) % len(pool)] for i in range(BATCH)]
                embedded = await client.request(
                    ModelEmbed(
                        namespace=NS, integration_id=INTEGRATION, model_id=model_id, examples=batch
                    ),
                    ModelEmbedReply,
                )
            embed_per_s = BATCH * embed_rounds / (time.perf_counter() - started)
            dim = embedded.shape[1]
        rss_busy = rss_mib(worker.pid)
    finally:
        worker.terminate()
        worker.wait(30)
        await tracker.service.app.stop()
        await delete_declared(amqp_url, [tracker.service, NluModels(settings).service])
        shutil.rmtree(workdir, ignore_errors=True)

    ours = {
        "accuracy": accuracy(truth, predicted),
        "macro_f1": macro_f1(truth, predicted),
        "seen_accuracy": accuracy(seen_truth, seen_predicted),
        "seen_macro_f1": macro_f1(seen_truth, seen_predicted),
        "train_s": train_s,
        "classify_per_s": classify_per_s,
    }
    base_figures = baseline(train, test, seen)
    print(
        f"intent set: {len(train)} training utterances, {len({u.intent for u in train})} intents;"
        f" held out: {len(test)} from unseen templates, {len(seen)} from seen ones;"
        f" {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    print()
    title = f"nlu_models ({runtime} MiniLM + LR)"
    print(f"{'':34}{title:>30}{'TF-IDF + LR baseline':>24}{'ratio':>8}")
    rows = [
        ("accuracy, unseen templates", "accuracy", "{:.3f}"),
        ("macro-F1, unseen templates", "macro_f1", "{:.3f}"),
        ("accuracy, seen templates", "seen_accuracy", "{:.3f}"),
        ("macro-F1, seen templates", "seen_macro_f1", "{:.3f}"),
        ("training time, s", "train_s", "{:.2f}"),
        ("classify, utterances/s", "classify_per_s", "{:.0f}"),
    ]
    for label, key, fmt in rows:
        ratio = ours[key] / base_figures[key] if base_figures[key] else float("nan")
        print(
            f"{label:34}{fmt.format(ours[key]):>26}{fmt.format(base_figures[key]):>24}{ratio:>8.2f}"
        )
    print()
    print("nlu_models through RabbitMQ (the baseline's classify figure is in-process, no broker):")
    print(f"  Classify, {rounds} requests of {BATCH}: {classify_per_s:.0f} utterances/s,")
    print(f"    p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms per request")
    print(
        f"  service CPU time: {classify_per_cpu_s:.0f} utterances per CPU-second"
        f" (x{os.cpu_count()} cores = {classify_per_cpu_s * (os.cpu_count() or 1):.0f}/s if"
        " the cores were its own and it used them all)"
    )
    print(f"  Embed, {embed_rounds} requests of {BATCH}: {embed_per_s:.0f} utterances/s, dim {dim}")
    print(f"  service RSS: {rss_idle:.0f} MiB after start, {rss_busy:.0f} MiB after the run")
    print(f"  goal >= 500 utterances/s classified: {classify_per_s / 500:.2f} of it")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="100-utterance Classify requests")
    parser.add_argument(
        "--runtime", default="int8", choices=RUNTIMES, help="the encoder's runtime (settings)"
    )
    args = parser.parse_args()
    asyncio.run(run(args.rounds, args.runtime))


if __name__ == "__main__":
    main()
