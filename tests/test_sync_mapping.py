"""The HF → AIoD mapping (reference A7) without the peer connector's crashes, and the
comparison that decides whether a record needs writing at all."""

from __future__ import annotations

from typing import Any

from services.aiod_uploader.mapping import DESCRIPTION_LIMIT, says_the_same, to_aiod
from shared.contracts.aiod import HubDataset, ParquetFile

DATASET = HubDataset(
    object_id="0123456789abcdef01234567",
    repo_id="owner/name",
    created_at="2024-01-02T03:04:05.678Z",
    description="A dataset.",
    license="mit",
    tags=["language:en", "task_categories:text-classification"],
    parquet_files=[
        ParquetFile(
            config="default",
            split="train",
            url="https://huggingface.co/datasets/owner/name/resolve/x/0000.parquet",
            filename="0000.parquet",
            size=12_345,
        )
    ],
)


def mapped(**changes: Any) -> dict[str, Any]:
    fields = {name: getattr(DATASET, name) for name in DATASET.__struct_fields__}
    return to_aiod(HubDataset(**{**fields, **changes}), "huggingface").as_json()


def test_the_fields_of_a7_including_distribution() -> None:
    body = mapped()
    assert body == {
        "platform": "huggingface",
        "platform_resource_identifier": DATASET.object_id,  # _id, stable across renames
        "name": "owner/name",
        "same_as": "https://huggingface.co/datasets/owner/name",
        "is_accessible_for_free": True,
        "description": {"plain": "A dataset."},
        "date_published": "2024-01-02T03:04:05.678000Z",
        "license": "mit",
        "keyword": ["language:en", "task_categories:text-classification"],
        "distribution": [
            {
                "content_url": DATASET.parquet_files[0].url,
                "name": "0000.parquet",
                "description": "owner/name. Config: default. Split: train",
                "content_size_kb": 13,
            }
        ],
    }
    assert "aiod_entry" not in body  # v2 forbids its status


def test_the_peer_connectors_crashes_are_not_ours() -> None:
    assert "date_published" not in mapped(created_at=None)
    assert mapped(license=["apache-2.0", "mit"])["license"] == "apache-2.0"
    assert "license" not in mapped(license=[])
    huge = mapped(description="word " * 20_000)["description"]["plain"]
    assert len(huge) == DESCRIPTION_LIMIT and huge.endswith(" [...]")
    assert "description" not in mapped(description="")
    assert mapped(private=True)["is_accessible_for_free"] is False
    assert mapped(tags=["x" * 300, "ok", "ok"])["keyword"] == ["ok"]


def test_a_record_as_aiod_returns_it_says_the_same() -> None:
    body = mapped()
    record = {
        **body,
        "identifier": "data_abcdefghijklmnopqrstuvwx",
        "keyword": list(reversed(body["keyword"])),  # AIoD does not keep the order
        "date_published": "2024-01-02T03:04:05.678000",  # UTC, no zone
        "description": {"plain": "A dataset.", "html": None},
        "distribution": [{**body["distribution"][0], "checksum": None}],
        "version": None,
        "citation": [],
        "aiod_entry": {"status": "published"},
    }
    assert says_the_same(body, record)
    assert not says_the_same(body, {**record, "name": "old/name"})  # a rename
    assert not says_the_same(body, {**record, "license": None})
    assert not says_the_same(mapped(license=None), record)  # a licence removed on the Hub
    assert not says_the_same(body, {**record, "distribution": []})
