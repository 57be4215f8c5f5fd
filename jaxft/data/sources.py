"""Where a data set's encoded images come from: an image folder (random access by file index) or
a tfds builder (sequential records), chosen from `config.dataset`; and `dataset_info`."""
from __future__ import annotations

import dataclasses
import functools
import pathlib

import ml_collections

from jaxft.data import folder, registry
from jaxft.data.errors import DataError, DatasetNotFoundError

FOLDER_PREFIX = "folder:"


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What training needs to know about a data set before reading it."""

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    splits: dict[str, int]  # split -> number of examples, for the configured splits and parts
    source: str = ""  # where the examples come from: 'folder:<root>' or 'tfds:<name>/<version>'


class FolderSource:
    """`root/<split>/<label>/<image>`; labels are the sorted class-folder names."""

    def __init__(self, root: pathlib.Path, skip_bad_images: bool):
        self.root = str(root)
        self.skip_bad_images = skip_bad_images

    @property
    def class_names(self) -> tuple[str, ...]:
        return folder.display_names(self.root)

    @property
    def num_classes(self) -> int:
        return len(folder.class_names(self.root))

    def read_split(self, split: str) -> folder.FolderSplit:
        return folder.read_split(self.root, split, self.skip_bad_images)

    def num_examples(self, split: str) -> int:
        return len(self.read_split(split))

    def describe(self) -> str:
        return f"{FOLDER_PREFIX}{self.root}"


class TfdsSource:
    """A prepared tfds builder; images are read encoded and decoded by our own pipeline."""

    def __init__(self, builder):
        self.builder = builder
        keys = builder.info.supervised_keys or ("image", "label")
        self.image_key, self.label_key = keys[0], keys[1]

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.builder.info.features[self.label_key].names)

    @property
    def num_classes(self) -> int:
        return int(self.builder.info.features[self.label_key].num_classes)

    def num_examples(self, split) -> int:
        try:
            return int(self.builder.info.splits[split].num_examples)
        except (KeyError, ValueError) as error:
            available = ", ".join(self.builder.info.splits) or "none recorded"
            raise DatasetNotFoundError(
                f"Split '{split}' not found in tfds '{self.builder.name}' (its splits: "
                f"{available}): {error}") from None

    def split_names(self) -> list[str]:
        return list(self.builder.info.splits)

    def as_dataset(self, split, *, shuffle_seed: int | None = None):
        """{'image': encoded bytes, 'label': int64} records; shuffled files when seeded."""
        import tensorflow_datasets as tfds

        decoders = tfds.decode.PartialDecoding(
            {self.image_key: True, self.label_key: True},
            decoders={self.image_key: tfds.decode.SkipDecoding()})
        read_config = tfds.ReadConfig(shuffle_seed=shuffle_seed, try_autocache=False)
        dataset = self.builder.as_dataset(
            split=split, shuffle_files=shuffle_seed is not None, decoders=decoders,
            read_config=read_config)
        return dataset.map(lambda example: {"image": example[self.image_key],
                                            "label": example[self.label_key]})

    def describe(self) -> str:
        return f"tfds:{self.builder.name}/{self.builder.version}"


def resolve(dataset_config: ml_collections.ConfigDict) -> FolderSource | TfdsSource:
    """The source `config.dataset` names (resolved once per process)."""
    return _resolve(dataset_config.name, dataset_config.get("data_dir"),
                    bool(dataset_config.get("skip_bad_images", False)),
                    dataset_config.get("train_split", "train"))


@functools.lru_cache(maxsize=None)
def _resolve(name: str, data_dir: str | None, skip_bad_images: bool, train_split: str):
    if name.startswith(FOLDER_PREFIX):
        return _folder_source(pathlib.Path(name[len(FOLDER_PREFIX):]).expanduser(), skip_bad_images)
    spec = registry.lookup(name)
    if spec is None:
        return _tfds_source(name, data_dir, download=True)
    # A prepared image folder under the data dir wins; then tfds; else how to get the files.
    prepared = registry.default_data_dir(data_dir) / spec.name
    if (prepared / folder.split_parts(train_split)[0]).is_dir():
        return _folder_source(prepared, skip_bad_images)
    if spec.tfds_name:
        return _tfds_source(spec.tfds_name, data_dir, download=spec.tfds_downloads)
    raise DatasetNotFoundError(registry.manual_download_message(spec, prepared.parent))


def _folder_source(root: pathlib.Path, skip_bad_images: bool) -> FolderSource:
    root = root.resolve()
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"Image folder {root} does not exist. A folder data set is laid out as "
            f"<root>/<split>/<label>/<image> (e.g. {root}/train/daisy/0001.jpg) and named "
            f"config.dataset.name='folder:<root>'.")
    if not folder.class_names(str(root)):
        raise DataError(f"Image folder {root} holds no <split>/<label>/ folders.")
    return FolderSource(root, skip_bad_images)


def _tfds_source(name: str, data_dir: str | None, *, download: bool) -> TfdsSource:
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # tfds raises several types for an unknown or broken name
        known = ", ".join(spec.name for spec in registry.SPECS)
        raise DatasetNotFoundError(
            f"Unknown data set '{name}': not one of the paper's ({known}), and tfds cannot load "
            f"it ({_first_line(error)}). For an image folder use "
            f"config.dataset.name='folder:/path/to/root'.") from None
    if builder.is_prepared():
        return TfdsSource(builder)
    target = registry.default_data_dir(data_dir)
    if not download:
        spec = registry.lookup(name)
        raise DatasetNotFoundError(registry.manual_download_message(spec, target))
    try:
        builder.download_and_prepare()
    except ModuleNotFoundError as error:  # tfds imports some download helpers lazily
        raise DatasetNotFoundError(
            f"tfds needs the Python package '{error.name}' to download and prepare '{name}': "
            f"pip install {error.name.replace('_', '-')}") from None
    except Exception as error:  # network, manual-download or disk errors: one message for all
        instructions = getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None) or ""
        raise DatasetNotFoundError(" ".join([
            f"tfds could not download and prepare '{name}' into {target}: {_first_line(error)}.",
            f"On a machine with network access run `tfds build {name} --data_dir {target}` and "
            f"copy {target}/{name} here, or point config.dataset.data_dir at a folder that holds "
            f"it.", instructions.strip()]).strip()) from None
    return TfdsSource(builder)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def dataset_info(dataset_config: ml_collections.ConfigDict) -> DatasetInfo:
    """Name, classes and split sizes of the configured data set (its train and test splits and
    their '+' parts; a tfds source also lists its other splits)."""
    source = resolve(dataset_config)
    splits = {}
    if isinstance(source, TfdsSource):
        splits.update({name: source.num_examples(name) for name in source.split_names()})
    for split in (dataset_config.train_split, dataset_config.test_split):
        for part in [*split.split("+"), split]:
            splits[part] = source.num_examples(part.strip())
    return DatasetInfo(name=dataset_config.name, num_classes=source.num_classes,
                       class_names=tuple(source.class_names), splits=splits,
                       source=source.describe())
