"""Classification errors from masked batches: per-class correct/total counts that add up across
batches, devices and processes, and the paper's two numbers from them (in percent)."""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np


def per_class_counts(logits_or_predictions, labels, mask, num_classes: int):
    """(correct, total), each int32 [num_classes], of one batch: an example counts for its true
    class when its mask is > 0 (padding counts nothing). Takes logits [..., num_classes] or
    integer predictions shaped like `labels`; jit- and vmap-friendly."""
    predictions = jnp.asarray(logits_or_predictions)
    labels = jnp.asarray(labels)
    if predictions.ndim == labels.ndim + 1:
        predictions = jnp.argmax(predictions, axis=-1)
    counted = (jnp.asarray(mask) > 0).reshape(-1)
    labels, predictions = labels.reshape(-1), predictions.reshape(-1)
    hits = counted & (predictions == labels)
    correct = jnp.zeros(num_classes, jnp.int32).at[labels].add(hits.astype(jnp.int32))
    total = jnp.zeros(num_classes, jnp.int32).at[labels].add(counted.astype(jnp.int32))
    return correct, total


def errors_from_counts(correct, total) -> dict[str, float]:
    """{'top1_error', 'mean_class_error'} in percent: 100 * (1 - correct / total) over all
    examples, and the mean of the per-class errors over the classes that have examples (the
    paper reports both). NaN when nothing was counted."""
    correct = np.asarray(correct, np.float64)
    total = np.asarray(total, np.float64)
    if total.sum() == 0:
        return {"top1_error": float("nan"), "mean_class_error": float("nan")}
    present = total > 0
    class_errors = 1.0 - correct[present] / total[present]
    return {"top1_error": float(100.0 * (1.0 - correct.sum() / total.sum())),
            "mean_class_error": float(100.0 * class_errors.mean())}


@dataclasses.dataclass
class ClassificationCounts:
    """Per-class counts accumulated on the host: `update` with each batch, `merge` (or `+`)
    the counts of other shards, then read the errors (percent)."""

    correct: np.ndarray
    total: np.ndarray

    @classmethod
    def zeros(cls, num_classes: int) -> "ClassificationCounts":
        return cls(np.zeros(num_classes, np.int64), np.zeros(num_classes, np.int64))

    def update(self, logits_or_predictions, labels, mask=None) -> "ClassificationCounts":
        """Adds a batch in place (mask None: every example counts) and returns self."""
        if mask is None:
            mask = np.ones(np.shape(labels), np.float32)
        correct, total = per_class_counts(logits_or_predictions, labels, mask, self.num_classes)
        self.correct = self.correct + np.asarray(correct, np.int64)
        self.total = self.total + np.asarray(total, np.int64)
        return self

    def merge(self, other: "ClassificationCounts") -> "ClassificationCounts":
        return ClassificationCounts(self.correct + other.correct, self.total + other.total)

    __add__ = merge

    @property
    def num_classes(self) -> int:
        return int(self.correct.shape[0])

    @property
    def count(self) -> int:
        return int(self.total.sum())

    @property
    def top1_error(self) -> float:
        return errors_from_counts(self.correct, self.total)["top1_error"]

    @property
    def mean_class_error(self) -> float:
        return errors_from_counts(self.correct, self.total)["mean_class_error"]

    def errors(self) -> dict[str, float]:
        return errors_from_counts(self.correct, self.total)
