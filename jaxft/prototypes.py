"""Class prototypes for domain similarity: a pretrained network's global-pooled features over a data
set's split, averaged per class (optionally over a per-class sample), cached as .npz."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import pathlib

import numpy as np

CACHE_FORMAT = 1  # bump when what a cache entry holds or means changes


class SimilarityError(ValueError):
    """Prototypes that cannot be computed or compared as asked; the message says what to do."""


# --------------------------------------------------------------------------------------------
# Class prototypes: one mean feature per class and the class's number of images.
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Prototypes:
    """Class-mean features of one data set's split. `counts` are the class's images in the split
    (the EMD weights); `averaged` how many of them the mean was taken over (fewer when sampled)."""

    features: np.ndarray  # float64 [classes, feature dim]
    counts: np.ndarray  # int64 [classes]
    averaged: np.ndarray  # int64 [classes]
    labels: np.ndarray  # int64 [classes]: the data set's label of each row
    key: dict = dataclasses.field(default_factory=dict)  # what they were computed from

    def weights(self) -> np.ndarray:
        """Each class's share of the split's images."""
        return self.counts / self.counts.sum()

    def save(self, path: str | os.PathLike) -> None:
        """Writes an .npz atomically (a killed run leaves no half-written cache entry)."""
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial.npz")
        np.savez(partial, features=self.features, counts=self.counts, averaged=self.averaged,
                 labels=self.labels, key=json.dumps(self.key, sort_keys=True))
        os.replace(partial, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Prototypes":
        with np.load(path, allow_pickle=False) as stored:
            return cls(features=stored["features"], counts=stored["counts"],
                       averaged=stored["averaged"], labels=stored["labels"],
                       key=json.loads(str(stored["key"])))


def class_prototypes(features: np.ndarray, labels: np.ndarray, num_classes: int, *,
                     counts: np.ndarray | None = None, key: dict | None = None) -> Prototypes:
    """Mean feature per class of per-image `features` [n, dim] with integer `labels` [n]. Classes
    without images are left out. `counts` (per label) overrides the weights when the features are
    a sample of the split; by default a class weighs as many images as it has here."""
    features = np.asarray(features, np.float64)
    labels = np.asarray(labels, np.int64)
    sums = np.zeros((num_classes, features.shape[1]), np.float64)
    np.add.at(sums, labels, features)
    averaged = np.bincount(labels, minlength=num_classes)
    return prototypes_from_sums(sums, averaged, counts=counts, key=key)


def prototypes_from_sums(sums: np.ndarray, averaged: np.ndarray, *,
                         counts: np.ndarray | None = None, key: dict | None = None) -> Prototypes:
    """Prototypes from per-class feature sums and image counts (what a streamed pass gathers)."""
    averaged = np.asarray(averaged, np.int64)
    counts = averaged if counts is None else np.asarray(counts, np.int64)
    present = np.flatnonzero(averaged > 0)
    return Prototypes(features=sums[present] / averaged[present, None],
                      counts=counts[present], averaged=averaged[present],
                      labels=present.astype(np.int64), key=dict(key or {}))


# --------------------------------------------------------------------------------------------
# Prototypes of a configured data set: computed once, cached as .npz.
# --------------------------------------------------------------------------------------------
def dataset_prototypes(config, *, split: str | None = None, images_per_class: int = 0,
                       seed: int = 0, recompute: bool = False) -> Prototypes:
    """Class prototypes of `config.dataset` (split: default its train split) from the pretrained
    `config.model` at `config.input.image_size` with eval preprocessing. Read from the cache
    under `config.cache_dir` when there; computed and written there otherwise."""
    key = prototype_key(config, split=split or config.dataset.train_split,
                        images_per_class=images_per_class, seed=seed)
    path = cache_path(config, key)
    if path.is_file() and not recompute:
        cached = Prototypes.load(path)
        if cached.key == key:
            return cached
    prototypes = compute_prototypes(config, key)
    prototypes.save(path)
    return prototypes


def prototype_key(config, *, split: str, images_per_class: int, seed: int) -> dict:
    """Everything the prototypes depend on; a change in any of them is another cache entry."""
    if not config.pretrained:
        raise SimilarityError("domain similarity needs pretrained features: set "
                              "config.pretrained (e.g. 'efficientnet_lite0')")
    return {
        "format": CACHE_FORMAT, "model": config.model, "weights": _weights_identity(config.pretrained),
        "dataset": _dataset_identity(config.dataset), "split": split,
        "image_size": int(config.input.image_size),
        "crop_fraction": float(config.input.crop_fraction),
        "images_per_class": int(images_per_class), "seed": int(seed) if images_per_class else 0,
    }


def cache_path(config, key: dict) -> pathlib.Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    dataset = key["dataset"].rstrip("/").rsplit("/", 1)[-1]
    sample = f"{key['images_per_class']}pc" if key["images_per_class"] else "all"
    readable = "--".join([key["model"], dataset, key["split"], f"{key['image_size']}px", sample])
    readable = "".join(c if c.isalnum() or c in "-_.+" else "_" for c in readable)
    return (pathlib.Path(os.path.expanduser(config.cache_dir)) / "similarity"
            / f"{readable}--{digest}.npz")


def _weights_identity(source: str) -> str:
    path = pathlib.Path(source).expanduser()
    if path.is_file():  # a changed checkpoint file must not hit stale prototypes
        stat = path.stat()
        return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return source


def _dataset_identity(dataset_config) -> str:
    name = dataset_config.name
    if name.startswith("folder:"):
        return "folder:" + str(pathlib.Path(name[len("folder:"):]).expanduser().resolve())
    data_dir = dataset_config.get("data_dir")
    return f"{name}@{data_dir}" if data_dir else name


def compute_prototypes(config, key: dict) -> Prototypes:
    """One pass of the pretrained network over the split (or its per-class sample)."""
    from jaxft import convert, models

    # Weights first: reading a torch checkpoint must not follow tensorflow's import (the data
    # module's), which crashes torchvision on some machines.
    variables = convert.pretrained_variables(
        config.pretrained, config.model, cache_dir=os.path.expanduser(config.cache_dir))
    from jaxft import data
    from jaxft.data import sources

    normalization = models.input_normalization(config.model)
    source = sources.resolve(config.dataset)
    if key["images_per_class"]:
        counts, batches = _sampled_batches(config, source, key, normalization)
    else:
        counts, batches = None, lambda batch_size: data.eval_batches(
            config, split=key["split"], normalization=normalization, batch_size=batch_size)
    sums, averaged = _feature_sums(config, variables, batches, source.num_classes)
    if not averaged.any():
        raise SimilarityError(f"split {key['split']!r} of {key['dataset']} holds no images")
    return prototypes_from_sums(sums, averaged, counts=counts, key=key)


def _feature_sums(config, variables, batches, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class sums (float64) of the global-pooled features and the images counted; padding
    rows (mask 0) count nothing."""
    from jaxft import mesh as mesh_lib

    mesh = mesh_lib.grid_mesh()
    replicated = mesh_lib.replicate(variables, mesh)
    features_fn = _features_function(config.model, _head_classes(config.model, variables))
    sums, averaged = None, np.zeros(num_classes, np.int64)
    for batch in batches(mesh_lib.eval_batch_size(config.eval_batch_size, mesh)):
        placed = mesh_lib.global_batch(batch, mesh)
        features, labels, mask = mesh_lib.fetch(
            (features_fn(replicated, placed["image"]), placed["label"], placed["mask"]))
        real = np.asarray(mask) > 0
        labels = np.asarray(labels)[real]
        if sums is None:
            sums = np.zeros((num_classes, features.shape[-1]), np.float64)
        np.add.at(sums, labels, np.asarray(features, np.float64)[real])
        averaged += np.bincount(labels, minlength=num_classes)
    return sums, averaged


def _head_classes(model_name: str, variables) -> int:
    from jaxft import models

    return int(variables["params"][models.head_name(model_name)]["kernel"].shape[-1])


@functools.lru_cache(maxsize=None)
def _features_function(model_name: str, num_classes: int):
    """Jitted (variables, images) -> float32 features; one per network, so repeated passes
    with the same batch shape compile once."""
    import jax
    import jax.numpy as jnp

    from jaxft import models

    model = models.get_model(model_name, num_classes)

    def features(variables, images):
        # Full float32 matmuls on accelerators too: the cached prototypes should not depend on
        # which machine computed them.
        with jax.default_matmul_precision("float32"):
            pooled = model.apply(variables, images, train=False, return_features=True)
        return pooled.astype(jnp.float32)

    return jax.jit(features)


# --------------------------------------------------------------------------------------------
# A per-class sample: N images of each class, read and preprocessed as eval_batches does.
# --------------------------------------------------------------------------------------------
def _sampled_batches(config, source, key: dict, normalization):
    """(images per class in the whole split, batches(batch_size) over the sample). A folder
    takes a seeded random sample; a tfds split (sequential records) the first N of each class
    in its (seed-shuffled) file order."""
    import tensorflow as tf

    from jaxft.data import sources

    per_class, seed = key["images_per_class"], key["seed"]
    if isinstance(source, sources.FolderSource):
        split = source.read_split(key["split"])
        counts = np.bincount(split.labels, minlength=source.num_classes)
        chosen = sample_per_class(split.labels, per_class, seed)
        records = tf.data.Dataset.from_tensor_slices(
            {"image": split.paths[chosen], "label": split.labels[chosen]})
        records = records.map(lambda r: {"image": tf.io.read_file(r["image"]),
                                         "label": r["label"]})
    else:
        counts = _tfds_label_counts(source, key["split"], source.num_classes)
        records = first_per_class(source.as_dataset(key["split"], shuffle_seed=seed),
                                  per_class, source.num_classes)
    total = int(np.minimum(counts, per_class).sum())
    mean, std = normalization

    def example(record):
        from jaxft.data import preprocess

        image = preprocess.eval_image(
            record["image"], image_size=config.input.image_size,
            crop_fraction=config.input.crop_fraction, mean=mean, std=std)
        return {"image": image, "label": tf.cast(record["label"], tf.int32)}

    images = records.take(total).map(example, num_parallel_calls=tf.data.AUTOTUNE,
                                     deterministic=True)
    return counts, lambda batch_size: _padded_local_batches(images, total, batch_size,
                                                            config.input.image_size)


def sample_per_class(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random sample of `per_class` images of each label (all of a
    class's images when it has fewer)."""
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        chosen.append(members if len(members) <= per_class
                      else rng.choice(members, per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def first_per_class(records, per_class: int, num_classes: int):
    """The records of a tf.data stream whose label has been seen fewer than `per_class` times
    before (decided on the label alone, so skipped images are never decoded)."""
    import tensorflow as tf

    def seen_before(seen, record):
        label = tf.cast(record["label"], tf.int32)
        return (tf.tensor_scatter_nd_add(seen, [[label]], [1]),
                (record, seen[label] < per_class))

    kept = records.scan(tf.zeros([num_classes], tf.int64), seen_before)
    return kept.filter(lambda record, keep: keep).map(lambda record, keep: record)


def _tfds_label_counts(source, split: str, num_classes: int) -> np.ndarray:
    labels = source.as_dataset(split).map(lambda record: record["label"]).batch(4096)
    counts = np.zeros(num_classes, np.int64)
    for chunk in labels.as_numpy_iterator():
        counts += np.bincount(chunk, minlength=num_classes)
    return counts


def _padded_local_batches(images, total: int, batch_size: int, image_size: int):
    """This process's share of `images` as {'image', 'label', 'mask'} batches of
    batch_size // process_count rows; the last padded with mask 0, and every process yields
    the same number of batches (global arrays need every process in every step)."""
    import jax
    import tensorflow as tf

    from jaxft.data.errors import DataError, tf_error_text

    process_count, process_index = jax.process_count(), jax.process_index()
    local_batch = batch_size // process_count
    num_batches = math.ceil(math.ceil(total / process_count) / local_batch)
    produced = 0
    batches = images.shard(process_count, process_index).batch(local_batch).as_numpy_iterator()
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            break
        except tf.errors.OpError as error:  # one line, as data.eval_batches reports it
            raise DataError(f"reading the per-class sample failed: {tf_error_text(error)} "
                            f"(config.dataset.skip_bad_images=True leaves bad files out)") from None
        yield _padded(batch, local_batch)
        produced += 1
    nothing = {"image": np.zeros((0, image_size, image_size, 3), np.float32),
               "label": np.zeros(0, np.int32)}
    for _ in range(num_batches - produced):
        yield _padded(nothing, local_batch)


def _padded(batch: dict, rows: int) -> dict:
    missing = rows - len(batch["label"])
    mask = np.concatenate([np.ones(len(batch["label"]), np.float32), np.zeros(missing, np.float32)])
    return {"image": np.concatenate([batch["image"],
                                     np.zeros((missing, *batch["image"].shape[1:]), np.float32)]),
            "label": np.concatenate([batch["label"], np.zeros(missing, np.int32)]),
            "mask": mask}
