"""Train and eval batches as numpy, from tf.data pipelines that are deterministic functions of
(config.seed, step): a run resumed at step k sees the batches an uninterrupted run sees from k on.

Global batch layout: step s of the global stream is a batch of `config.batch_size` examples, and
process p of P yields rows [p * L, (p + 1) * L) of it, L = batch_size // P. With the mesh's data
axis laid over processes in order, `jax.make_array_from_process_local_data` (see
`jaxft.mesh.global_batch`) assembles exactly that global batch.
"""
from __future__ import annotations

import math
from typing import Callable, Iterator, Sequence

import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging

from jaxft.data import folder, preprocess, sources
from jaxft.data.errors import BadImageError, DataError, tf_error_text

Normalization = tuple[Sequence[float], Sequence[float]]
# Independent random streams derived from config.seed.
SHUFFLE_STREAM, AUGMENT_STREAM = 0, 1
TFDS_SHUFFLE_BUFFER = 10_000  # examples (encoded) held for shuffling a tfds split
_ENDLESS = 2**62


# --- public API -----------------------------------------------------------------------------------
def steps_per_epoch(config: ml_collections.ConfigDict) -> int:
    """Full global batches per pass over the train split; the remainder of each epoch's
    permutation is dropped (torch DataLoader's drop_last), so no batch spans two epochs."""
    num_examples = sources.resolve(config.dataset).num_examples(config.dataset.train_split)
    steps = num_examples // config.batch_size
    if steps == 0:
        raise DataError(
            f"batch_size {config.batch_size} is larger than the {num_examples} examples of "
            f"split '{config.dataset.train_split}': lower config.batch_size.")
    return steps


def train_batches(config: ml_collections.ConfigDict, *, normalization: Normalization,
                  start_step: int = 0, process_index: int | None = None,
                  process_count: int | None = None, threads: int | None = None
                  ) -> Iterator[dict[str, np.ndarray]]:
    """Endless `{'image': float32 [L, S, S, 3], 'label': int32 [L]}` from global step
    `start_step` on. Epoch e's order is a permutation drawn from (seed, e); an example's crop,
    flip and jitter from (seed, its position in the global stream). `threads` caps tf.data's
    thread pool (default: tf.data's own choice)."""
    process_index, process_count = _process(process_index, process_count)
    local_batch = _local_batch(config.batch_size, process_count)
    _check_input_config(config)
    source = sources.resolve(config.dataset)
    layout = _Layout(config.batch_size, local_batch, process_index, steps_per_epoch(config))
    image_fn = _train_image_fn(config, normalization)
    if isinstance(source, sources.FolderSource):
        split = source.read_split(config.dataset.train_split)
        dataset = _folder_train_dataset(split, layout, image_fn, config.seed, start_step, threads)
        locate = lambda step: _folder_train_paths(split, layout, config.seed, step)  # noqa: E731
        return _explained(_numpy(dataset), locate, start_step)
    datasets = _tfds_train_datasets(source, config, layout, image_fn, start_step,
                                    process_count, threads)
    return _explained((batch for dataset in datasets for batch in _numpy(dataset)),
                      None, start_step)


def eval_batches(config: ml_collections.ConfigDict, *, split: str | None = None,
                 normalization: Normalization, batch_size: int | None = None,
                 process_index: int | None = None, process_count: int | None = None,
                 threads: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """One pass over `split` (default: config.dataset.test_split) in a fixed order, as
    `{'image', 'label', 'mask'}` local batches of `batch_size // process_count` rows (global
    `batch_size` defaults to config.eval_batch_size). The last batches are padded to full size
    with mask 0.0, every process yields the same number of batches, and every image appears
    once across processes with mask 1.0."""
    process_index, process_count = _process(process_index, process_count)
    batch_size = batch_size or config.eval_batch_size
    local_batch = _local_batch(batch_size, process_count)
    _check_input_config(config)
    split = split or config.dataset.test_split
    source = sources.resolve(config.dataset)
    image_fn = _eval_image_fn(config, normalization)
    if isinstance(source, sources.FolderSource):
        split_files = source.read_split(split)
        positions, total_rows = _folder_eval_positions(len(split_files), batch_size,
                                                       local_batch, process_index)
        dataset = _folder_eval_dataset(split_files, positions, total_rows, image_fn, local_batch,
                                       config.input.image_size, threads)
        locate = lambda step: list(  # noqa: E731
            split_files.paths[positions[step * local_batch:(step + 1) * local_batch]])
        return _explained(_numpy(dataset), locate, 0)
    dataset = _tfds_eval_dataset(source, split, image_fn, local_batch, process_index,
                                 process_count, config.input.image_size, threads)
    return _explained(_numpy(dataset), None, 0)


# --- where each example goes ----------------------------------------------------------------------
class _Layout:
    """Global batch size B, local rows L, this process's index p and steps per epoch."""

    def __init__(self, batch_size: int, local_batch: int, process_index: int, steps: int):
        self.batch_size, self.local_batch = batch_size, local_batch
        self.process_index, self.steps_per_epoch = process_index, steps

    def place(self, counter):
        """This process's `counter`-th example of the stream -> (step, epoch, position in the
        epoch's permutation, serial number in the global stream)."""
        step = counter // self.local_batch
        row = self.process_index * self.local_batch + counter % self.local_batch
        position = (step % self.steps_per_epoch) * self.batch_size + row
        return step, step // self.steps_per_epoch, position, step * self.batch_size + row


def _shuffled_index(position, epoch, seed: int, num_examples: int):
    """The file index at `position` of epoch `epoch`'s permutation (a stateless bijection)."""
    key = tf.random.experimental.stateless_fold_in(
        tf.constant([seed, SHUFFLE_STREAM], tf.int64), tf.cast(epoch, tf.int64))
    return tf.random.experimental.index_shuffle(
        tf.cast(position, tf.int64), key, tf.constant(num_examples - 1, tf.int64))


def _augment_key(seed: int, serial) -> tf.Tensor:
    return tf.random.experimental.stateless_fold_in(
        tf.constant([seed, AUGMENT_STREAM], tf.int64), tf.cast(serial, tf.int64))


def _folder_train_dataset(split: folder.FolderSplit, layout: _Layout, image_fn: Callable,
                          seed: int, start_step: int, threads: int | None) -> tf.data.Dataset:
    paths, labels = tf.constant(split.paths), tf.constant(split.labels)

    def example(counter):
        _, epoch, position, serial = layout.place(counter)
        index = _shuffled_index(position, epoch, seed, len(split))
        encoded = tf.io.read_file(tf.gather(paths, index))
        return {"image": image_fn(encoded, _augment_key(seed, serial)),
                "label": tf.gather(labels, index)}

    counters = tf.data.Dataset.range(start_step * layout.local_batch, _ENDLESS)
    dataset = counters.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return _finish(dataset.batch(layout.local_batch, drop_remainder=True), threads)


def _folder_train_paths(split: folder.FolderSplit, layout: _Layout, seed: int,
                        step: int) -> list[str]:
    """The files of this process's batch at `step` (to name a file that fails to decode)."""
    counters = np.arange(step * layout.local_batch, (step + 1) * layout.local_batch)
    _, epochs, positions, _ = layout.place(counters)
    indices = _shuffled_index(positions, epochs[0], seed, len(split)).numpy()
    return list(split.paths[indices])


def _tfds_train_datasets(source: sources.TfdsSource, config, layout: _Layout,
                         image_fn: Callable, start_step: int, process_count: int,
                         threads: int | None) -> Iterator[tf.data.Dataset]:
    """One pipeline per epoch: tfds records are sequential, so epoch e's order comes from
    shuffled files plus a shuffle buffer, both seeded from (seed, e), and resuming skips the
    epoch's consumed records before decoding them. Each process reads its own
    `tfds.split_for_jax_process` share (so here the global batch depends on process_count)."""
    import tensorflow_datasets as tfds

    local_split = tfds.split_for_jax_process(
        config.dataset.train_split, process_index=layout.process_index,
        process_count=process_count, drop_remainder=True)
    local_examples = source.num_examples(local_split)
    per_epoch = layout.steps_per_epoch * layout.local_batch
    epoch = start_step // layout.steps_per_epoch
    skip = (start_step % layout.steps_per_epoch) * layout.local_batch
    while True:
        shuffle_seed = int(np.random.SeedSequence([config.seed, epoch]).generate_state(1)[0])
        records = source.as_dataset(local_split, shuffle_seed=shuffle_seed)
        records = records.shuffle(min(local_examples, TFDS_SHUFFLE_BUFFER), seed=shuffle_seed,
                                  reshuffle_each_iteration=False)
        records = records.take(per_epoch).enumerate().skip(skip)

        def example(offset, record, epoch=epoch):
            step = epoch * layout.steps_per_epoch + offset // layout.local_batch
            serial = (step * layout.batch_size + layout.process_index * layout.local_batch
                      + offset % layout.local_batch)
            return {"image": image_fn(record["image"], _augment_key(config.seed, serial)),
                    "label": tf.cast(record["label"], tf.int32)}

        dataset = records.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        yield _finish(dataset.batch(layout.local_batch, drop_remainder=True), threads)
        epoch, skip = epoch + 1, 0


def _folder_eval_positions(num_examples: int, batch_size: int, local_batch: int,
                           process_index: int) -> tuple[np.ndarray, int]:
    """This process's rows of every global eval batch, in order, as (the real positions, the
    number of rows with padding). Positions increase, so the real ones come first."""
    num_batches = math.ceil(num_examples / batch_size)
    rows = np.arange(local_batch) + process_index * local_batch
    positions = (np.arange(num_batches)[:, None] * batch_size + rows).reshape(-1)
    return positions[positions < num_examples], positions.size


def _folder_eval_dataset(split: folder.FolderSplit, positions: np.ndarray, total_rows: int,
                         image_fn: Callable, local_batch: int, image_size: int,
                         threads: int | None) -> tf.data.Dataset:
    paths, labels = tf.constant(split.paths), tf.constant(split.labels)

    def example(index):
        return {"image": image_fn(tf.io.read_file(tf.gather(paths, index))),
                "label": tf.gather(labels, index), "mask": tf.constant(1.0)}

    real = tf.data.Dataset.from_tensor_slices(positions.astype(np.int64))
    real = real.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return _pad_and_batch(real, total_rows - len(positions), local_batch, image_size, threads)


def _tfds_eval_dataset(source: sources.TfdsSource, split: str, image_fn: Callable,
                       local_batch: int, process_index: int, process_count: int,
                       image_size: int, threads: int | None) -> tf.data.Dataset:
    """Process p reads its `tfds.split_for_jax_process` share; every process pads to the
    number of batches the largest share needs."""
    import tensorflow_datasets as tfds

    shares = [tfds.split_for_jax_process(split, process_index=index, process_count=process_count,
                                         drop_remainder=False) for index in range(process_count)]
    sizes = [source.num_examples(share) for share in shares]
    total_rows = math.ceil(max(sizes) / local_batch) * local_batch
    # take(): the padding count relies on the recorded sizes, so never read past them.
    real = source.as_dataset(shares[process_index]).take(sizes[process_index]).map(
        lambda record: {"image": image_fn(record["image"]),
                        "label": tf.cast(record["label"], tf.int32), "mask": tf.constant(1.0)},
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return _pad_and_batch(real, total_rows - sizes[process_index], local_batch, image_size,
                          threads)


def _pad_and_batch(real: tf.data.Dataset, padding_rows: int, local_batch: int, image_size: int,
                   threads: int | None) -> tf.data.Dataset:
    padding = tf.data.Dataset.from_tensors({
        "image": tf.zeros([image_size, image_size, 3], tf.float32),
        "label": tf.constant(0, tf.int32), "mask": tf.constant(0.0)}).repeat(padding_rows)
    return _finish(real.concatenate(padding).batch(local_batch), threads)


# --- preprocessing from the config ----------------------------------------------------------------
def _train_image_fn(config, normalization: Normalization) -> Callable:
    """(encoded, key) -> image; `input.augment=False` gives eval preprocessing (parity tests)."""
    if not config.input.augment:
        eval_fn = _eval_image_fn(config, normalization)
        return lambda encoded, key: eval_fn(encoded)
    mean, std = normalization
    return lambda encoded, key: preprocess.train_image(
        encoded, key, image_size=config.input.image_size, scale=tuple(config.input.scale),
        ratio=tuple(config.input.ratio), flip=config.input.flip,
        color_jitter_strength=config.input.color_jitter, mean=mean, std=std)


def _eval_image_fn(config, normalization: Normalization) -> Callable:
    mean, std = normalization
    return lambda encoded: preprocess.eval_image(
        encoded, image_size=config.input.image_size, crop_fraction=config.input.crop_fraction,
        mean=mean, std=std)


def _check_input_config(config) -> None:
    given = config.input
    scale, ratio = tuple(given.scale), tuple(given.ratio)
    problems = []
    if given.image_size <= 0:
        problems.append(f"input.image_size must be positive, not {given.image_size}")
    if not 0 < given.crop_fraction <= 1:
        problems.append(f"input.crop_fraction must be in (0, 1], not {given.crop_fraction}")
    if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
        problems.append(f"input.scale must be (low, high) with 0 < low <= high, not {scale}")
    if len(ratio) != 2 or not 0 < ratio[0] <= ratio[1]:
        problems.append(f"input.ratio must be (low, high) with 0 < low <= high, not {ratio}")
    if given.color_jitter < 0:
        problems.append(f"input.color_jitter must be >= 0, not {given.color_jitter}")
    if problems:
        raise DataError("; ".join(problems) + ".")


# --- plumbing -------------------------------------------------------------------------------------
def _process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise DataError(f"process_index {process_index} is not in [0, {process_count}).")
    return process_index, process_count


def _local_batch(batch_size: int, process_count: int) -> int:
    if batch_size <= 0 or batch_size % process_count:
        raise DataError(f"Batch size {batch_size} must be a positive multiple of the number of "
                        f"processes ({process_count}).")
    return batch_size // process_count


def _finish(dataset: tf.data.Dataset, threads: int | None) -> tf.data.Dataset:
    options = tf.data.Options()
    options.deterministic = True
    if threads:
        options.threading.private_threadpool_size = threads
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)


def _numpy(dataset: tf.data.Dataset) -> Iterator[dict[str, np.ndarray]]:
    return dataset.as_numpy_iterator()


def _explained(batches: Iterator[dict], locate: Callable[[int], list[str]] | None,
               first_step: int) -> Iterator[dict]:
    """Passes batches through; a TensorFlow error becomes one message, naming the file that
    cannot be decoded when it can be found among the failing batch's files."""
    step = first_step
    batches = iter(batches)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except tf.errors.OpError as error:
            candidates = locate(step) if locate else []
            raise _explanation(error, candidates, step) from None
        yield batch
        step += 1


def _explanation(error: tf.errors.OpError, candidates: list[str], step: int) -> DataError:
    for path in candidates:
        reason = folder.decode_failure(path)
        if reason:
            logging.error("Image %s %s.", path, reason)
            return BadImageError(
                f"Image {path} {reason}. It passed the quick check made at start-up, so it was "
                f"not left out; replace or delete it and start again.", paths=(path,))
    return DataError(f"The input pipeline failed at batch {step}: {tf_error_text(error)}")
