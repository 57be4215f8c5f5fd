"""Input data: image-folder and tfds sources, torchvision-equivalent preprocessing in tf.data,
deterministic resumable train batches and padded, masked eval batches (see pipeline.py)."""
import tensorflow as tf

# tf.data runs on the host; keep TensorFlow off the accelerators JAX uses.
try:
    tf.config.set_visible_devices([], "GPU")
except (RuntimeError, ValueError):  # already initialised, or no such device type
    pass

from jaxft.data.errors import BadImageError, DataError, DatasetNotFoundError  # noqa: E402
from jaxft.data.pipeline import (  # noqa: E402
    eval_batches, steps_per_epoch, train_batches)
from jaxft.data.registry import SPECS, DatasetSpec  # noqa: E402
from jaxft.data.sources import DatasetInfo, dataset_info  # noqa: E402

__all__ = [
    "BadImageError", "DataError", "DatasetInfo", "DatasetNotFoundError", "DatasetSpec", "SPECS",
    "dataset_info", "eval_batches", "steps_per_epoch", "train_batches",
]
