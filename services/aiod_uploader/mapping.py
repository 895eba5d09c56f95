"""A Hugging Face dataset as an AI-on-Demand dataset (reference A7), and whether a record
already says the same.

The mapping is the peer connector's, without its crashes: a dataset with no `createdAt`
gets no `date_published`; a licence given as a list counts by its first entry; a
description over AIoD's 65,535 characters is cut with ` [...]`; `aiod_entry` is never sent
(v2 forbids its `status`). Each parquet file of the dataset viewer becomes one
`distribution` entry.

A record "says the same" when every field the mapping manages equals what it would write,
read the way AIoD gives it back (keywords in any order, `date_published` in UTC without a
zone, defaults for what was left out): then nothing is written at all.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from shared.contracts.aiod import HubDataset, ParquetFile
from shared.contracts.base import read_instant

HUB_WEB_URL = "https://huggingface.co"
DESCRIPTION_LIMIT = 65_535  # characters of `description.plain` AIoD accepts
CUT_MARK = " [...]"
STRING_LIMIT = 256  # name, same_as, license, each keyword, a distribution's name
DISTRIBUTION_TEXT_LIMIT = 1_800  # a distribution's content_url and description

# Every field the mapping writes: a PUT is a full replace, so these are what it decides.
MANAGED_FIELDS = (
    "platform",
    "platform_resource_identifier",
    "name",
    "same_as",
    "description",
    "date_published",
    "license",
    "keyword",
    "is_accessible_for_free",
    "distribution",
)


class Distribution(msgspec.Struct, kw_only=True, omit_defaults=True):
    content_url: str
    name: str | None = None
    description: str | None = None
    content_size_kb: int | None = None


class Description(msgspec.Struct, kw_only=True, omit_defaults=True):
    plain: str


class AiodDataset(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The body of a POST or PUT of `/datasets` (only the fields the sync writes)."""

    platform: str
    platform_resource_identifier: str
    name: str
    same_as: str
    is_accessible_for_free: bool
    description: Description | None = None
    date_published: str | None = None
    license: str | None = None
    keyword: list[str] = []
    distribution: list[Distribution] = []

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = msgspec.to_builtins(self)
        return body


def to_aiod(dataset: HubDataset, platform: str, *, hub_url: str = HUB_WEB_URL) -> AiodDataset:
    """The AIoD record of a Hub dataset, keyed by its `_id` (stable across renames)."""
    return AiodDataset(
        platform=platform,
        platform_resource_identifier=dataset.object_id,
        name=dataset.repo_id[:STRING_LIMIT],
        same_as=f"{hub_url.rstrip('/')}/datasets/{dataset.repo_id}"[:STRING_LIMIT],
        is_accessible_for_free=not dataset.private,
        description=_description(dataset.description),
        date_published=_date_published(dataset.created_at),
        license=_license(dataset.license),
        keyword=_keywords(dataset.tags),
        distribution=[
            _distribution(dataset.repo_id, f)
            for f in dataset.parquet_files
            if len(f.url) <= DISTRIBUTION_TEXT_LIMIT  # a cut URL would point nowhere
        ],
    )


def _description(text: str | None) -> Description | None:
    if not text or not text.strip():
        return None
    if len(text) > DESCRIPTION_LIMIT:
        text = text[: DESCRIPTION_LIMIT - len(CUT_MARK)] + CUT_MARK
    return Description(plain=text)


def _date_published(created_at: str | None) -> str | None:
    moment = read_instant(created_at)
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def _license(value: str | list[str] | None) -> str | None:
    if isinstance(value, list):
        value = next((v for v in value if isinstance(v, str) and v.strip()), None)
    if not value or not value.strip():
        return None
    return value.strip()[:STRING_LIMIT]


def _keywords(tags: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for tag in tags:
        if tag and len(tag) <= STRING_LIMIT:
            seen.setdefault(tag)
    return list(seen)


def _distribution(repo_id: str, file: ParquetFile) -> Distribution:
    return Distribution(
        content_url=file.url,
        name=file.filename[:STRING_LIMIT],
        description=f"{repo_id}. Config: {file.config}. Split: {file.split}"[
            :DISTRIBUTION_TEXT_LIMIT
        ],
        content_size_kb=None if file.size is None else math.ceil(file.size / 1000),
    )


# -- comparing with a record as AIoD returns it ---------------------------------------------


def says_the_same(wanted: dict[str, Any], record: dict[str, Any]) -> bool:
    """Whether `record` (a GET's body) already holds every managed field as `wanted`."""
    return all(_same(name, wanted.get(name), record.get(name)) for name in MANAGED_FIELDS)


def _same(name: str, ours: Any, theirs: Any) -> bool:
    if _is_empty(ours) or _is_empty(theirs):
        return _is_empty(ours) and _is_empty(theirs)
    if name == "keyword":
        return isinstance(theirs, list) and sorted(ours) == sorted(map(str, theirs))
    if name == "date_published":
        return read_instant(ours) == read_instant(theirs)
    if name == "distribution":
        return (
            isinstance(theirs, list)
            and len(ours) == len(theirs)
            and all(_same_object(a, b) for a, b in zip(ours, theirs, strict=True))
        )
    if isinstance(ours, dict):
        return _same_object(ours, theirs)
    return bool(ours == theirs)


def _same_object(ours: dict[str, Any], theirs: Any) -> bool:
    """Every key we set has our value; keys we leave out are empty on their side too."""
    if not isinstance(theirs, dict):
        return False
    if any(ours.get(key) != theirs.get(key) for key in ours):
        return False
    return all(_is_empty(value) for key, value in theirs.items() if key not in ours)


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | dict) and not value)
