"""The model service's parts on their own: the embedding runtime (real MiniLM weights from
the installed package), HumanFirst JSON training sets, the classifier, and the confined
model store (ids checked, links refused, writes atomic)."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from services.nlu_models import training
from services.nlu_models.classifier import IntentClassifier, fit
from services.nlu_models.embedding import SentenceEncoder
from services.nlu_models.storage import ModelFiles, ModelKey, ModelRecord
from shared.confined import UnsafePath
from shared.contracts.models import IntentsDataOptions
from shared.faults import InvalidArgument


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder.load_packaged()


def test_embeddings_have_the_advertised_shape_and_unit_length(encoder: SentenceEncoder) -> None:
    texts = ["a", "a much longer sentence " * 200, "", "how are you?"]
    vectors = encoder.encode(texts)
    assert vectors.shape == (4, encoder.dimensionality) == (4, 384)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert encoder.encode([]).shape == (0, 384)
    # Batching (by length, padded) changes next to nothing: int8 activations are scaled per
    # batch, so a row differs a little from the same text encoded alone.
    alone = np.stack([encoder.encode([t])[0] for t in texts])
    assert ((vectors * alone).sum(axis=1) > 0.95).all()


def test_the_onnx_graph_computes_what_the_numpy_reference_does(encoder: SentenceEncoder) -> None:
    texts = ["How do I reset my password?", "transfer 50 dollars to my sister", "hi", "ok " * 40]
    reference = SentenceEncoder.load_packaged(runtime="numpy").encode(texts)
    exact_encoder = SentenceEncoder.load_packaged(runtime="float32")
    exact = exact_encoder.encode(texts)
    assert np.allclose(exact, reference, atol=1e-4)
    # In float32, batching changes nothing: each row is as if encoded alone.
    alone = np.stack([exact_encoder.encode([t])[0] for t in texts])
    assert np.allclose(exact, alone, atol=1e-4)
    assert encoder.runtime == "int8"  # the default: close, not exact
    cosines = (encoder.encode(texts) * reference).sum(axis=1)
    assert cosines.min() > 0.97, cosines


def test_similar_sentences_embed_closer_than_unrelated_ones(encoder: SentenceEncoder) -> None:
    reset, forgot, weather, recipe = encoder.encode(
        [
            "How do I reset my password?",
            "I forgot my login password and need a new one",
            "What will the weather be like in Paris tomorrow?",
            "Add two cups of flour and stir the batter",
        ]
    )
    assert reset @ forgot > 0.6
    assert reset @ forgot > reset @ weather + 0.4
    assert reset @ forgot > reset @ recipe + 0.4


def test_training_sets_count_positives_only_and_name_the_hierarchy() -> None:
    data = {
        "intents": [
            {"id": "i-billing", "name": "billing"},
            {"id": "i-refund", "name": "refund", "parent_intent_id": "i-billing"},
            {"id": "i-greet", "name": "greeting"},
            {"id": "i-empty", "name": "never used"},
        ],
        "examples": [
            {"text": "i want my money back", "intents": [{"intent_id": "i-refund"}]},
            {"text": "hello there", "intents": [{"intent_id": "i-greet"}]},
            # A negative label is not a positive: this one teaches nothing.
            {"text": "refund please", "intents": [{"intent_id": "i-greet", "negative": True}]},
            {"text": "   ", "intents": [{"intent_id": "i-greet"}]},
            {"text": "unlabelled"},
        ],
    }
    parsed = training.parse(json.dumps(data).encode(), IntentsDataOptions())
    assert parsed.texts == ["i want my money back", "hello there"]
    assert [(i.id, i.name) for i in parsed.intents] == [
        ("i-refund", "billing/refund"),
        ("i-greet", "greeting"),
    ]
    assert parsed.labels == [[0], [1]]
    flat = training.parse(
        json.dumps(data).encode(), IntentsDataOptions(hierarchical_intent_name_disabled=True)
    )
    assert flat.intents[0].name == "refund"


def test_gzip_bombs_and_bad_formats_are_refused() -> None:
    bomb = gzip.compress(b"0" * 5_000_000)
    with pytest.raises(InvalidArgument, match="inflates past"):
        training.inflate(bomb, gzip=True, limit=1_000_000)
    assert training.inflate(gzip.compress(b"{}"), gzip=True, limit=10) == b"{}"
    with pytest.raises(InvalidArgument, match="not supported"):
        training.parse(b"{}", IntentsDataOptions(), data_format="INTENTS_FORMAT_RASA_YAML")


def test_the_classifier_learns_and_round_trips() -> None:
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(3, 16)).astype(np.float32)
    points = np.concatenate([c + 0.1 * rng.normal(size=(20, 16)) for c in centres])
    labels = [[k] for k in range(3) for _ in range(20)]
    classifier = fit(points.astype(np.float32), labels, 3, iterations=200, regularization=1e-4)
    predicted = classifier.probabilities(centres).argmax(axis=1)
    assert predicted.tolist() == [0, 1, 2]
    again = IntentClassifier.from_bytes(classifier.to_bytes())
    assert np.array_equal(again.weights, classifier.weights)
    with pytest.raises(ValueError):
        IntentClassifier.from_bytes(
            IntentClassifier(weights=classifier.weights, bias=np.zeros(5, np.float32)).to_bytes()
        )


# -- the store ---------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path: Path) -> Iterator[ModelFiles]:
    store = ModelFiles(tmp_path / "data")
    store.open()
    yield store
    store.close()


@pytest.mark.parametrize(
    ("namespace", "integration_id", "model_id", "reason"),
    [
        ("..", "i", "m", "is not an id"),
        ("ns", "a/b", "m", "path separator"),
        ("ns", "i", "/etc/passwd", "path separator"),
        ("ns", "i", "m\x00", "NUL"),
        ("ns", "i", "m" * 200, "characters long"),
        ("ns", "i", ".hidden", "is not an id"),
        ("ns", "", "m", "is empty"),
    ],
)
def test_unsafe_ids_are_refused(
    namespace: str, integration_id: str, model_id: str, reason: str
) -> None:
    with pytest.raises(InvalidArgument, match=reason):
        ModelKey(namespace, integration_id, model_id)


def test_records_are_written_atomically_and_listed(files: ModelFiles, tmp_path: Path) -> None:
    key = ModelKey("ns", "int", "model-1")
    assert files.read_record(key) is None
    files.write_record(key, ModelRecord(id="model-1", status="READY"))
    files.write_data(key, b"data")
    assert files.model_ids("ns", "int") == ["model-1"]
    assert files.read_record(key) == ModelRecord(id="model-1", status="READY")
    assert os.listdir(tmp_path / "data" / ".staging") == []  # nothing left behind
    assert files.remove(key) is True
    assert files.model_ids("ns", "int") == []
    assert files.remove(key) is False


def test_symbolic_links_are_never_followed(files: ModelFiles, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "model-1.meta.json").write_bytes(b'{"id": "stolen"}')
    (tmp_path / "data" / "ns").mkdir()
    os.symlink(outside, tmp_path / "data" / "ns" / "int")
    key = ModelKey("ns", "int", "model-1")
    with pytest.raises(UnsafePath):
        files.read_record(key)
    with pytest.raises(UnsafePath):
        files.write_record(key, ModelRecord(id="model-1"))
    assert (outside / "model-1.meta.json").read_bytes() == b'{"id": "stolen"}'
    # A link as the file itself is refused too.
    os.makedirs(tmp_path / "data" / "ns2" / "int")
    os.symlink(outside / "model-1.meta.json", tmp_path / "data" / "ns2" / "int" / "m.meta.json")
    with pytest.raises(UnsafePath):
        files.read_record(ModelKey("ns2", "int", "m"))


def test_a_bad_setting_stops_the_service_with_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {**os.environ, "FERRY_EMBEDDING_RUNTIME": "gpu", "FERRY_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "services.nlu_models"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "nlu_models: FERRY_EMBEDDING_RUNTIME: 'gpu' is not one of int8, float32, numpy"
    ]
