"""The intent classifier: multinomial logistic regression on the sentence embeddings.

It sits on the same embeddings `Embed` returns, so Classify and Embed share one latent
space. Training is full-batch Adam on the softmax cross-entropy with an L2 penalty, on
standardised features (the embeddings are unit vectors whose coordinates differ in scale,
which slows plain gradient descent down); the standardisation is folded into the weights
afterwards, so predicting is one matrix product and a softmax.

An example labelled with several intents spreads its target evenly over them.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Matrix = npt.NDArray[np.float32]

ADAM_RATE = 0.05
ADAM_BETAS = (0.9, 0.999)


@dataclass(frozen=True)
class IntentClassifier:
    weights: Matrix  # (dimensionality, intents)
    bias: Matrix  # (intents,)

    @property
    def intents(self) -> int:
        return int(self.bias.shape[0])

    def probabilities(self, embeddings: Matrix) -> Matrix:
        """(examples, intents): each row sums to 1."""
        logits = embeddings @ self.weights + self.bias
        return _softmax(logits)

    def to_bytes(self) -> bytes:
        out = io.BytesIO()
        np.savez(out, weights=self.weights, bias=self.bias)
        return out.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> IntentClassifier:
        with np.load(io.BytesIO(data), allow_pickle=False) as stored:
            weights = np.asarray(stored["weights"], dtype=np.float32)
            bias = np.asarray(stored["bias"], dtype=np.float32)
        if weights.ndim != 2 or bias.shape != (weights.shape[1],):
            raise ValueError(f"classifier shapes do not agree: {weights.shape}, {bias.shape}")
        return cls(weights=weights, bias=bias)


def fit(
    embeddings: Matrix,
    labels: Sequence[Sequence[int]],
    intents: int,
    *,
    iterations: int,
    regularization: float,
    on_progress: Callable[[int], None] | None = None,
) -> IntentClassifier:
    """Fit on `embeddings` (examples, dim); `labels[i]` are example i's intent indices."""
    count, dim = embeddings.shape
    targets = np.zeros((count, intents), dtype=np.float32)
    for row, indices in enumerate(labels):
        for index in indices:
            targets[row, index] = 1.0 / len(indices)
    mean = embeddings.mean(axis=0)
    scale = embeddings.std(axis=0) + 1e-6
    features = ((embeddings - mean) / scale).astype(np.float32)

    weights = np.zeros((dim, intents), dtype=np.float32)
    bias = np.zeros(intents, dtype=np.float32)
    steppers = (_Adam(weights), _Adam(bias))
    for step in range(1, iterations + 1):
        error = (_softmax(features @ weights + bias) - targets) / count
        steppers[0].step(features.T @ error + regularization * weights)
        steppers[1].step(error.sum(axis=0))
        if on_progress is not None and step % 50 == 0:
            on_progress(step)
    # Fold the standardisation in: x' W + b with x' = (x - mean) / scale.
    folded = (weights / scale[:, None]).astype(np.float32)
    shifted = (bias - (mean / scale) @ weights).astype(np.float32)
    return IntentClassifier(weights=folded, bias=shifted)


class _Adam:
    """Adam's update of one parameter array, in place."""

    def __init__(self, param: Matrix) -> None:
        self.param = param
        self.moment = np.zeros_like(param)
        self.square = np.zeros_like(param)
        self.steps = 0

    def step(self, grad: Matrix) -> None:
        beta1, beta2 = ADAM_BETAS
        self.steps += 1
        self.moment *= beta1
        self.moment += (1 - beta1) * grad
        self.square *= beta2
        self.square += (1 - beta2) * grad * grad
        corrected = self.moment / (1 - beta1**self.steps)
        spread = np.sqrt(self.square / (1 - beta2**self.steps)) + 1e-8
        self.param -= (ADAM_RATE * corrected / spread).astype(np.float32)


def _softmax(logits: Matrix) -> Matrix:
    shifted = logits - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    result: Matrix = shifted.astype(np.float32, copy=False)
    return result
