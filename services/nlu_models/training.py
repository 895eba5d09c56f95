"""Training sets from HumanFirst JSON, and training a classifier on one.

What counts: each intent (its `id`, `name` and `parent_intent_id`: the hierarchy names a
child "Parent/Child"), and each example's positive labels (`intents[]` entries whose
`negative` is false). Negative labels are never taken as positives. Intents with no
positive example are left out (HumanFirst is asked for `skip_empty_intents` anyway).

Every reason a training set is refused is an `InvalidArgument` that says what is wrong,
so HumanFirst's user sees it.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import numpy as np

from services.nlu_models.classifier import IntentClassifier, fit
from services.nlu_models.embedding import SentenceEncoder
from shared.contracts.models import HF_JSON, IntentsDataOptions
from shared.faults import InvalidArgument

DEFAULT_DELIMITER = "/"
MAX_HIERARCHY_DEPTH = 64
INFLATE_STEP = 1024 * 1024
EMBED_STEP = 256  # examples embedded between two progress reports


class _Shape(msgspec.Struct, forbid_unknown_fields=False, kw_only=True):
    pass


class _Intent(_Shape):
    name: str
    id: str | None = None
    parent_intent_id: str | None = None


class _ExampleIntent(_Shape):
    intent_id: str
    negative: bool = False


class _Example(_Shape):
    text: str
    intents: list[_ExampleIntent] | None = None


class _Workspace(_Shape):
    intents: list[_Intent] | None = None
    examples: list[_Example] | None = None


@dataclass(frozen=True)
class Intent:
    id: str
    name: str  # as matches report it
    parent_id: str | None


@dataclass(frozen=True)
class TrainingSet:
    intents: list[Intent]  # the classes, in the classifier's column order
    texts: list[str]
    labels: list[list[int]]  # per text, indices into `intents`


def inflate(data: bytes, *, gzip: bool, limit: int) -> bytes:
    """The HumanFirst JSON bytes of a request's `data`, gunzipped when `gzip`; a bomb that
    inflates past `limit` bytes is refused before it is all in memory."""
    if not gzip:
        return data
    inflater = zlib.decompressobj(wbits=31)
    parts: list[bytes] = []
    size = 0
    pending = data
    try:
        while pending:
            part = inflater.decompress(pending, INFLATE_STEP)
            size += len(part)
            if size > limit:
                raise InvalidArgument(f"the training data inflates past {limit} bytes")
            parts.append(part)
            pending = inflater.unconsumed_tail
        parts.append(inflater.flush())
    except zlib.error as exc:
        raise InvalidArgument(
            f"the training data is not gzip-compressed as format_options.gzip_encoding says: {exc}"
        ) from None
    return b"".join(parts)


def parse(data: bytes, options: IntentsDataOptions, *, data_format: str = HF_JSON) -> TrainingSet:
    """The training set in HumanFirst JSON `data` (already inflated)."""
    if data_format != HF_JSON:
        raise InvalidArgument(f"data_format {data_format} is not supported; send {HF_JSON}")
    if not data.strip():
        raise InvalidArgument("the training data is empty")
    try:
        workspace = msgspec.json.decode(data, type=_Workspace)
    except msgspec.DecodeError as exc:
        raise InvalidArgument(f"the training data is not HumanFirst JSON: {exc}") from None
    declared: dict[str, _Intent] = {}
    for intent in workspace.intents or []:
        declared[intent.id or intent.name] = intent
    delimiter = options.hierarchical_delimiter or DEFAULT_DELIMITER

    def full_name(intent_id: str) -> str:
        names: list[str] = []
        current: str | None = intent_id
        while current is not None and current in declared and len(names) < MAX_HIERARCHY_DEPTH:
            names.append(declared[current].name)
            current = declared[current].parent_intent_id
        return delimiter.join(reversed(names))

    columns: dict[str, int] = {}
    texts: list[str] = []
    labels: list[list[int]] = []
    for number, example in enumerate(workspace.examples or []):
        text = example.text.strip()
        positive = [label.intent_id for label in example.intents or [] if not label.negative]
        if not text or not positive:
            continue  # unlabelled (or only negative) examples teach the classifier nothing
        indices = []
        for intent_id in dict.fromkeys(positive):
            if intent_id not in declared:
                raise InvalidArgument(
                    f"example {number} ({text[:60]!r}) is labelled with intent {intent_id!r},"
                    " which the training data does not define"
                )
            indices.append(columns.setdefault(intent_id, len(columns)))
        texts.append(text)
        labels.append(indices)
    if not texts:
        raise InvalidArgument(
            f"the training data has no labelled examples ({len(declared)} intents,"
            f" {len(workspace.examples or [])} examples, none with a positive intent label)"
        )
    if len(columns) < 2:
        raise InvalidArgument(
            "the training data has examples for only one intent; a classifier needs at least two"
        )
    intents = [
        Intent(
            id=intent_id,
            name=declared[intent_id].name
            if options.hierarchical_intent_name_disabled
            else full_name(intent_id),
            parent_id=declared[intent_id].parent_intent_id,
        )
        for intent_id in columns
    ]
    return TrainingSet(intents=intents, texts=texts, labels=labels)


Progress = Callable[[int, str], None]  # (percent done, what is being done)


def train(
    encoder: SentenceEncoder,
    training_set: TrainingSet,
    *,
    iterations: int,
    regularization: float,
    on_progress: Progress,
) -> IntentClassifier:
    """Embed every example (90% of the progress), then fit the classifier (the rest)."""
    texts = training_set.texts
    parts = []
    for start in range(0, len(texts), EMBED_STEP):
        parts.append(encoder.encode(texts[start : start + EMBED_STEP]))
        done = min(start + EMBED_STEP, len(texts))
        on_progress(done * 90 // len(texts), f"embedded {done} of {len(texts)} examples")
    embeddings = np.concatenate(parts)
    return fit(
        embeddings,
        training_set.labels,
        len(training_set.intents),
        iterations=iterations,
        regularization=regularization,
        on_progress=lambda step: on_progress(
            90 + step * 9 // iterations, f"fitting the classifier, step {step} of {iterations}"
        ),
    )
