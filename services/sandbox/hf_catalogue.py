"""The HF Hub stand-in's catalogue: N generated datasets, the same for the same seed, plus the
repositories created, moved and changed while it runs.

Generated compactly: one pass with one `random.Random(seed)` draws the few columns that
listing, sorting and filtering need (`HubDataset`: ids, dates, counts, flags and small trait
codes). The bulky parts of an item (description, card data, tags, siblings, citation) are
rendered only when a page shows it, from a per-dataset generator seeded by (seed, index), so
100,000 datasets take well under a second to make and a page costs what its items cost.

The cases a sync must survive are all there, at fixed rates, and each at least once among the
first 15 datasets (so that a catalogue of 15 has them all):
- `cardData.license` as a string, as a list, or missing;
- `createdAt` missing, and `2022-03-02T23:29:04.000Z` for everything created before then;
- descriptions longer than 65,535 characters;
- private repos (some in the sandbox user's own namespaces, so its token sees them) and gated
  ones (`"auto"` / `"manual"`), a few disabled;
- renamed repos: a new `id`, the same `_id` (`former_ids` keeps the old names);
- datasets with and without parquet files (the dataset viewer's `/parquet`).

Listing order is by a sort field, always descending, ties by newest index first; a cursor is
the sort key of the last item shown, so a listing resumes correctly while repos come and go.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

# Fixed instants, so the same seed gives the same catalogue whatever day it is generated.
CATALOGUE_START = datetime(2021, 1, 1, tzinfo=UTC).timestamp()
CATALOGUE_NOW = datetime(2026, 11, 1, tzinfo=UTC).timestamp()
# The Hub shows this creation time for every repo created before it (repos of the old days).
HUB_EPOCH = datetime(2022, 3, 2, 23, 29, 4, tzinfo=UTC).timestamp()
HUB_EPOCH_TEXT = "2022-03-02T23:29:04.000Z"

SANDBOX_USER = "sandbox-user"
SANDBOX_ORG = "ferry-sandbox"
OWN_NAMESPACES = (SANDBOX_USER, SANDBOX_ORG)

SORT_FIELDS = ("lastModified", "createdAt", "downloads", "likes", "trendingScore")

# Rates of the awkward cases, in the generated part of the catalogue.
PRIVATE_RATE = 0.03
OWN_NAMESPACE_RATE = 0.01  # of all datasets, in the sandbox user's namespaces
GATED_RATE = 0.05
DISABLED_RATE = 0.002
NO_CREATED_AT_RATE = 0.01
HUGE_DESCRIPTION_RATE = 0.002
RENAMED_RATE = 0.01
PARQUET_RATE = 0.7
LICENSE_LIST_RATE = 0.15
NO_LICENSE_RATE = 0.1
HUGE_DESCRIPTION_CHARS = 70_000  # over the 65,535 that AIoD accepts

ORGS = (
    "allenai", "google", "facebook", "mozilla-foundation", "HuggingFaceFW", "nyu-mll",
    "stanfordnlp", "bigscience", "EleutherAI", "openslr", "uonlp", "wikimedia", "openai",
    "microsoft", "nvidia", "ibm", "bigcode", "Helsinki-NLP", "cardiffnlp", "tner",
)  # fmt: skip
SYLLABLES = ("ka", "lo", "mi", "ra", "te", "su", "no", "vi", "de", "ar", "en", "zo", "pa", "li")
TOPICS = (
    "squad", "imdb", "reviews", "wiki", "news", "code", "math", "dialog", "medical", "legal",
    "tweets", "qa", "summaries", "instructions", "speech", "images", "captions", "poems",
    "recipes", "patents", "emails", "chess", "climate", "finance", "sentiment", "ner",
)  # fmt: skip
SUFFIXES = ("v2", "en", "clean", "small", "large", "2023", "dedup", "multilingual", "mini", "raw")
TASKS = (
    "text-classification", "question-answering", "summarization", "translation",
    "text-generation", "token-classification", "image-classification",
    "automatic-speech-recognition", "object-detection", "tabular-classification",
)  # fmt: skip
MODALITIES = ("text", "text", "text", "text", "text", "text", "image", "audio", "image", "tabular")
LANGUAGES = ("en", "fr", "de", "es", "zh", "ar", "hi", "sw", "nl", "it", "ja", "pt")
LICENSES = ("mit", "apache-2.0", "cc-by-4.0", "cc-by-sa-4.0", "cc0-1.0", "odc-by", "other")
SIZES = ("n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M")
FORMATS = ("parquet", "json", "csv", "text", "imagefolder", "audiofolder")
SPLITS = ("train", "validation", "test")
WORDS = (
    "This dataset", "contains", "examples", "collected from", "public sources", "annotated by",
    "volunteers", "for research", "on", "language understanding", "and", "evaluation",
    "with", "careful", "deduplication", "of the", "original", "records", "in several",
    "languages", "licensed for", "reuse", "benchmarks", "models",
)  # fmt: skip


@dataclass(slots=True)
class HubDataset:
    """One dataset repository: what listing, sorting and filtering need, and no more."""

    index: int  # place in the catalogue; generated ones keep rendering from it
    object_id: str  # `_id`: 24 hex, stable across renames
    repo_id: str  # `id`: owner/name
    sha: str
    created_at: float | None  # epoch seconds; None: the Hub sends no createdAt
    last_modified: float
    private: bool = False
    gated: bool | str = False  # False, "auto" or "manual"
    disabled: bool = False
    downloads: int = 0
    downloads_all_time: int = 0
    likes: int = 0
    trending_score: float = 0.0
    has_parquet: bool = False
    generated: bool = True  # False: created at run time (no card, no data files)
    task: int = 0  # codes into TASKS, LANGUAGES, LICENSES, SIZES
    language: int = 0
    license: int = 0
    license_shape: int = 0  # 0: a string, 1: a list, 2: missing
    size: int = 0
    huge_description: bool = False
    former_ids: list[str] = field(default_factory=list)

    @property
    def author(self) -> str:
        return self.repo_id.split("/", 1)[0]

    def tags(self) -> list[str]:
        if not self.generated:
            return ["region:us"]
        tags = [
            f"task_categories:{TASKS[self.task]}",
            f"language:{LANGUAGES[self.language]}",
            f"size_categories:{SIZES[self.size]}",
            f"modality:{MODALITIES[self.task]}",
        ]
        if self.license_shape != 2:
            tags.append(f"license:{LICENSES[self.license]}")
            if self.license_shape == 1:
                tags.append(f"license:{LICENSES[(self.license + 1) % len(LICENSES)]}")
        if self.has_parquet:
            tags += ["format:parquet", "library:datasets"]
        tags.append("region:us")
        return tags

    def sort_value(self, sort: str) -> float:
        if sort == "lastModified":
            return self.last_modified
        if sort == "createdAt":
            return self.created_at if self.created_at is not None else 0.0
        if sort == "downloads":
            return self.downloads
        if sort == "likes":
            return self.likes
        if sort == "trendingScore":
            return self.trending_score
        return float(self.index)


# A listing's place: the sort value and index of the last item shown, ascending in the
# order of the listing (values negated, so that bisect works on a descending order).
ListingKey = tuple[float, int]


def listing_key(dataset: HubDataset, sort: str) -> ListingKey:
    return (-dataset.sort_value(sort), -dataset.index)


def encode_cursor(key: ListingKey) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(list(key))).decode().rstrip("=")


def decode_cursor(cursor: str) -> ListingKey | None:
    """The key a cursor holds, or None if it is not one of ours."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value, index = msgspec.json.decode(base64.urlsafe_b64decode(padded), type=tuple[float, int])
    except (ValueError, msgspec.DecodeError):
        return None
    return (value, index)


@dataclass(frozen=True)
class ListingQuery:
    """What narrows a listing: `author`, `search` (all must match), `filter` tags, `gated`."""

    sort: str = ""  # "" : the catalogue's own order, newest first
    author: str | None = None
    search: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    gated: bool | None = None

    def admits(self, dataset: HubDataset) -> bool:
        if self.author is not None and dataset.author != self.author:
            return False
        repo_id = dataset.repo_id.lower()
        if any(term.lower() not in repo_id for term in self.search):
            return False
        if self.gated is not None and bool(dataset.gated) != self.gated:
            return False
        if self.tags:
            tags = dataset.tags()
            if any(tag not in tags for tag in self.tags):
                return False
        return True


@dataclass
class _Listing:
    keys: list[ListingKey]
    indexes: list[int]


class Catalogue:
    """Every dataset repository of the stand-in, and the views that listing pages cut from."""

    def __init__(self, size: int, seed: int = 0) -> None:
        self.seed = seed
        self.datasets: list[HubDataset | None] = []
        self.by_repo_id: dict[str, int] = {}
        self.other_repos: dict[tuple[str, str], bool] = {}  # (type, id) -> private: models, spaces
        self._generation = 0  # bumped on every change, which drops the cached listings
        self._listings: dict[tuple[Any, ...], _Listing] = {}
        self._created = 0
        self._generate(size)

    # -- reading ----------------------------------------------------------------------------

    def get(self, repo_id: str) -> HubDataset | None:
        index = self.by_repo_id.get(repo_id)
        return None if index is None else self.datasets[index]

    def __len__(self) -> int:
        return len(self.by_repo_id)

    def page(
        self,
        query: ListingQuery,
        namespaces: frozenset[str],
        after: ListingKey | None,
        limit: int,
    ) -> tuple[list[HubDataset], ListingKey | None]:
        """Up to `limit` datasets after `after`, and the cursor key of the next page if any.

        `namespaces`: whose private repos the caller may see (none for anonymous callers)."""
        listing = self._listing(query, namespaces)
        start = 0 if after is None else bisect.bisect_right(listing.keys, after)
        chosen = listing.indexes[start : start + limit]
        items = [d for d in (self.datasets[i] for i in chosen) if d is not None]
        more = start + limit < len(listing.indexes)
        return items, (listing.keys[start + limit - 1] if more and chosen else None)

    def _listing(self, query: ListingQuery, namespaces: frozenset[str]) -> _Listing:
        cache_key = (self._generation, query, namespaces)
        cached = self._listings.get(cache_key)
        if cached is not None:
            return cached
        if len(self._listings) > 32 or any(k[0] != self._generation for k in self._listings):
            self._listings.clear()
        base = self._sorted(query.sort)
        if query == ListingQuery(sort=query.sort):
            chosen = [
                i
                for i in base.indexes
                if (d := self.datasets[i]) is not None and (not d.private or d.author in namespaces)
            ]
        else:
            chosen = [
                i
                for i in base.indexes
                if (d := self.datasets[i]) is not None
                and (not d.private or d.author in namespaces)
                and query.admits(d)
            ]
        listing = _Listing(
            [listing_key(self.datasets[i], query.sort) for i in chosen],  # type: ignore[arg-type]
            chosen,
        )
        self._listings[cache_key] = listing
        return listing

    def _sorted(self, sort: str) -> _Listing:
        cache_key = (self._generation, "sorted", sort)
        cached = self._listings.get(cache_key)
        if cached is not None:
            return cached
        pairs = sorted((listing_key(d, sort), d.index) for d in self.datasets if d is not None)
        listing = _Listing([key for key, _ in pairs], [index for _, index in pairs])
        self._listings[cache_key] = listing
        return listing

    # -- changing ---------------------------------------------------------------------------

    def create(self, repo_id: str, *, private: bool, now: float) -> HubDataset:
        self._created += 1
        index = len(self.datasets)
        digest = hashlib.sha1(f"{self.seed}:{index}:{repo_id}".encode()).hexdigest()
        dataset = HubDataset(
            index=index,
            object_id=f"{int(now):08x}"[-8:] + digest[:16],
            repo_id=repo_id,
            sha=digest,
            created_at=now,
            last_modified=now,
            private=private,
            generated=False,
        )
        self.datasets.append(dataset)
        self.by_repo_id[repo_id] = index
        self.changed()
        return dataset

    def delete(self, repo_id: str) -> None:
        index = self.by_repo_id.pop(repo_id)
        self.datasets[index] = None
        self.changed()

    def move(self, dataset: HubDataset, new_repo_id: str, *, now: float) -> None:
        """Rename (or transfer): a new `id`, the same `_id`."""
        del self.by_repo_id[dataset.repo_id]
        dataset.former_ids.append(dataset.repo_id)
        dataset.repo_id = new_repo_id
        dataset.last_modified = now
        self.by_repo_id[new_repo_id] = dataset.index
        self.changed()

    def rename_some(self, count: int, *, now: float) -> list[HubDataset]:
        """Rename `count` public datasets picked by the seed (for tests of the `_id` key)."""
        rng = random.Random(f"{self.seed}:renames:{sum(len(d.former_ids) for d in self.renamed())}")
        candidates = [d for d in self.datasets if d is not None and not d.private]
        picked = rng.sample(candidates, min(count, len(candidates)))
        for dataset in picked:
            name = dataset.repo_id.split("/", 1)[1]
            owner = rng.choice(ORGS)
            new_id = f"{owner}/{name}-renamed"
            while new_id in self.by_repo_id:
                new_id += "-x"
            self.move(dataset, new_id, now=now)
        return picked

    def renamed(self) -> Iterable[HubDataset]:
        return (d for d in self.datasets if d is not None and d.former_ids)

    def changed(self) -> None:
        self._generation += 1

    # -- generating -------------------------------------------------------------------------

    def _generate(self, size: int) -> None:
        rng = random.Random(self.seed)
        users = [
            "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))) + str(n)
            for n in range(max(50, size // 50))
        ]
        span = CATALOGUE_NOW - CATALOGUE_START
        for index in range(size):
            draw = rng.random
            if draw() < OWN_NAMESPACE_RATE:
                author = OWN_NAMESPACES[index % 2]
            elif draw() < 0.3:
                author = ORGS[int(draw() * len(ORGS))]
            else:
                author = users[int(draw() * draw() * len(users))]  # a few users own many
            name = f"{TOPICS[index % len(TOPICS)]}-{SUFFIXES[int(draw() * len(SUFFIXES))]}"
            created = CATALOGUE_START + draw() * span
            modified = created + draw() * (CATALOGUE_NOW - created)
            downloads = int(10 ** (draw() * 6)) - 1
            own = author in OWN_NAMESPACES
            private = draw() < (0.3 if own else PRIVATE_RATE)
            gated_draw = draw()
            gated: bool | str = (
                ("auto" if gated_draw < GATED_RATE / 2 else "manual")
                if gated_draw < GATED_RATE
                else False
            )
            shape_draw = draw()
            dataset = HubDataset(
                index=index,
                object_id=f"{int(created):08x}{rng.getrandbits(64):016x}",
                repo_id=f"{author}/{name}-{index}",
                sha=f"{rng.getrandbits(160):040x}",
                created_at=None if draw() < NO_CREATED_AT_RATE else created,
                last_modified=modified,
                private=private,
                gated=gated,
                disabled=draw() < DISABLED_RATE,
                downloads=downloads,
                downloads_all_time=downloads * (1 + int(draw() * 20)),
                likes=int(10 ** (draw() * 3.5)) - 1,
                trending_score=round(draw() * 50, 1),
                has_parquet=draw() < PARQUET_RATE,
                task=int(draw() * len(TASKS)),
                language=int(draw() * len(LANGUAGES)),
                license=int(draw() * len(LICENSES)),
                license_shape=(
                    2
                    if shape_draw < NO_LICENSE_RATE
                    else 1
                    if shape_draw < NO_LICENSE_RATE + LICENSE_LIST_RATE
                    else 0
                ),
                size=int(draw() * len(SIZES)),
                huge_description=draw() < HUGE_DESCRIPTION_RATE,
            )
            if draw() < RENAMED_RATE:
                # Renamed before the catalogue was taken: the old name is gone, `_id` stays.
                dataset.former_ids.append(f"{users[index % len(users)]}/{name}-{index}")
            _make_awkward(dataset, index)
            self.datasets.append(dataset)
            self.by_repo_id[dataset.repo_id] = index


def _make_awkward(dataset: HubDataset, index: int) -> None:
    """Give the first datasets one awkward case each, so that even a small catalogue has all."""
    if index == 1:
        dataset.created_at = None
    elif index == 2:
        dataset.huge_description = True
    elif index == 3:
        dataset.license_shape = 1
    elif index == 4:
        dataset.license_shape = 2
    elif index in (5, 6):
        name = dataset.repo_id.split("/", 1)[1]
        dataset.repo_id = f"{OWN_NAMESPACES[index - 5]}/{name}"
        dataset.private = True
    elif index == 7:
        dataset.private = True
        dataset.repo_id = f"{ORGS[0]}/{dataset.repo_id.split('/', 1)[1]}"
    elif index == 8:
        dataset.gated = "auto"
    elif index == 9:
        dataset.gated = "manual"
    elif index == 10:
        dataset.former_ids.append(f"{ORGS[1]}/{dataset.repo_id.split('/', 1)[1]}")
    elif index == 11:
        dataset.disabled = True
    elif index == 12:
        dataset.created_at = CATALOGUE_START + 3600.0  # shown as the Hub's epoch
    elif index == 13:
        dataset.has_parquet = False
    elif index == 14:
        dataset.has_parquet = True
    if index <= 14 and index not in (5, 6, 7):
        dataset.private = False
    if index <= 14 and index != 11:
        dataset.disabled = False


# -- rendering ------------------------------------------------------------------------------


def iso(timestamp: float) -> str:
    """The Hub's date format: `2024-01-02T03:04:05.678Z` (a `+00:00` offset breaks clients)."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def created_text(dataset: HubDataset) -> str | None:
    if dataset.created_at is None:
        return None
    return HUB_EPOCH_TEXT if dataset.created_at < HUB_EPOCH else iso(dataset.created_at)


def _rng(seed: int, dataset: HubDataset) -> random.Random:
    return random.Random(seed * 1_000_003 + dataset.index)


def description(seed: int, dataset: HubDataset) -> str:
    if not dataset.generated:
        return ""
    rng = _rng(seed, dataset)
    words = [rng.choice(WORDS) for _ in range(rng.randint(8, 40))]
    text = " ".join(words) + "."
    if dataset.huge_description:
        text = (text + " ") * math.ceil(HUGE_DESCRIPTION_CHARS / (len(text) + 1))
    return text


def card_data(dataset: HubDataset) -> dict[str, Any] | None:
    if not dataset.generated:
        return None
    card: dict[str, Any] = {
        "language": [LANGUAGES[dataset.language]],
        "task_categories": [TASKS[dataset.task]],
        "size_categories": [SIZES[dataset.size]],
        "pretty_name": dataset.repo_id.split("/", 1)[1].replace("-", " ").title(),
    }
    if dataset.license_shape == 0:
        card["license"] = LICENSES[dataset.license]
    elif dataset.license_shape == 1:
        card["license"] = [
            LICENSES[dataset.license],
            LICENSES[(dataset.license + 1) % len(LICENSES)],
        ]
    if dataset.has_parquet:
        card["configs"] = [
            {
                "config_name": name,
                "data_files": [{"split": s, "path": f"{name}/{s}-*"} for s in splits],
            }
            for name, splits in parquet_layout(dataset)
        ]
    return card


def parquet_layout(dataset: HubDataset) -> list[tuple[str, Sequence[str]]]:
    """(config, splits) of a dataset that has parquet files."""
    configs = ["default"] if dataset.index % 3 else ["default", LANGUAGES[dataset.language]]
    splits = SPLITS[: 1 + dataset.index % len(SPLITS)]
    return [(config, splits) for config in configs]


def file_size(dataset: HubDataset, config: str, split: str) -> int:
    digest = hashlib.blake2b(f"{dataset.object_id}/{config}/{split}".encode(), digest_size=4)
    return 1_000 + int.from_bytes(digest.digest()) % 500_000_000


def siblings(dataset: HubDataset, *, blobs: bool = False) -> list[dict[str, Any]]:
    names = [".gitattributes"]
    if dataset.generated:
        names.append("README.md")
    for config, splits in parquet_layout(dataset) if dataset.has_parquet else []:
        names += [f"{config}/{split}-00000-of-00001.parquet" for split in splits]
    if not blobs:
        return [{"rfilename": name} for name in names]
    out = []
    for name in names:
        size = 2_000 if not name.endswith(".parquet") else file_size(dataset, *name.split("/", 1))
        blob = hashlib.sha1(f"{dataset.sha}/{name}".encode()).hexdigest()
        entry: dict[str, Any] = {"rfilename": name, "size": size, "blobId": blob}
        if name.endswith(".parquet"):
            lfs_sha = hashlib.sha256(blob.encode()).hexdigest()
            entry["lfs"] = {"size": size, "sha256": lfs_sha, "pointerSize": 134}
        out.append(entry)
    return out


def citation(dataset: HubDataset) -> str | None:
    if not dataset.generated or dataset.index % 4:
        return None
    key = dataset.repo_id.replace("/", "_").replace("-", "_")
    year = datetime.fromtimestamp(dataset.created_at or HUB_EPOCH, UTC).year
    return f"@misc{{{key},\n  title = {{{dataset.repo_id}}},\n  year = {{{year}}}\n}}"


def used_storage(dataset: HubDataset) -> int:
    if not dataset.has_parquet:
        return 4_000
    return sum(
        file_size(dataset, config, split)
        for config, splits in parquet_layout(dataset)
        for split in splits
    )
