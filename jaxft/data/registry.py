"""The paper's target data sets: class counts, splits, and where each one comes from (a tfds
builder, or an official archive that `scripts/prepare_<name>.py` turns into an image folder)."""
from __future__ import annotations

import dataclasses
import os
import pathlib


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """One target data set as the paper uses it (Li et al., ICLR 2020, Table 1)."""

    name: str  # registry key, and the folder name of a prepared copy under the data dir
    title: str
    num_classes: int
    train_split: str
    test_split: str
    split_sizes: dict[str, int]  # the paper's train/test sizes, as a check
    homepage: str
    tfds_name: str | None = None  # the tfds builder, if tfds has one
    tfds_downloads: bool = True  # False: tfds' download is broken, use it only if prepared already
    # How to get the files by hand: what to download, and the script that makes the folder.
    manual_files: str = ""
    prepare_script: str | None = None
    aliases: tuple[str, ...] = ()


SPECS = (
    DatasetSpec(
        name="oxford_flowers102", title="Oxford Flowers-102", num_classes=102,
        train_split="train+validation", test_split="test",
        split_sizes={"train+validation": 2040, "test": 6149},
        homepage="https://www.robots.ox.ac.uk/~vgg/data/flowers/102/",
        tfds_name="oxford_flowers102", aliases=("flowers", "flowers102")),
    DatasetSpec(
        name="caltech_birds2011", title="CUB-200-2011", num_classes=200,
        train_split="train", test_split="test", split_sizes={"train": 5994, "test": 5794},
        homepage="https://www.vision.caltech.edu/datasets/cub_200_2011/",
        tfds_name="caltech_birds2011", aliases=("birds", "cub200", "cub_200_2011")),
    DatasetSpec(
        # tfds `cars196` downloads from ai.stanford.edu, which no longer serves the files.
        name="stanford_cars", title="Stanford Cars", num_classes=196,
        train_split="train", test_split="test", split_sizes={"train": 8144, "test": 8041},
        homepage="https://ai.stanford.edu/~jkrause/cars/car_dataset.html",
        manual_files="cars_train.tgz, cars_test.tgz, car_devkit.tgz and "
                     "cars_test_annos_withlabels.mat (the original site is gone; mirrors such as "
                     "the Kaggle data set 'jessicali9530/stanford-cars-dataset' carry them)",
        prepare_script="scripts/prepare_stanford_cars.py", tfds_name="cars196",
        tfds_downloads=False, aliases=("cars", "cars196")),
    DatasetSpec(
        name="fgvc_aircraft", title="FGVC-Aircraft (variants)", num_classes=100,
        train_split="train+validation", test_split="test",
        split_sizes={"train+validation": 6667, "test": 3333},
        homepage="https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/",
        manual_files="fgvc-aircraft-2013b.tar.gz from the homepage",
        prepare_script="scripts/prepare_fgvc_aircraft.py", aliases=("aircraft",)),
    DatasetSpec(
        name="stanford_dogs", title="Stanford Dogs", num_classes=120,
        train_split="train", test_split="test", split_sizes={"train": 12000, "test": 8580},
        homepage="http://vision.stanford.edu/aditya86/ImageNetDogs/",
        tfds_name="stanford_dogs", aliases=("dogs",)),
    DatasetSpec(
        name="mit_indoor67", title="MIT Indoor-67", num_classes=67,
        train_split="train", test_split="test", split_sizes={"train": 5360, "test": 1340},
        homepage="https://web.mit.edu/torralba/www/indoor.html",
        manual_files="indoorCVPR_09.tar, TrainImages.txt and TestImages.txt from the homepage",
        prepare_script="scripts/prepare_mit_indoor67.py", aliases=("indoor", "indoor67", "mit67")),
    DatasetSpec(
        name="caltech256", title="Caltech-256 (60 training images per class)", num_classes=256,
        train_split="train", test_split="test", split_sizes={"train": 15360, "test": 15189},
        homepage="https://data.caltech.edu/records/nyy15-4j048",
        manual_files="256_ObjectCategories.tar from the homepage",
        prepare_script="scripts/prepare_caltech256.py", aliases=("caltech_256",)),
    DatasetSpec(
        # tfds' version has 102 classes (it keeps BACKGROUND_Google) and 30 training images per
        # class; ../shared/data/caltech101 leaves the background class out (101 classes).
        name="caltech101", title="Caltech-101", num_classes=102,
        train_split="train", test_split="test", split_sizes={"train": 3060, "test": 6084},
        homepage="https://data.caltech.edu/records/mzrjq-6wc02",
        tfds_name="caltech101", aliases=("caltech_101",)),
)

_BY_NAME = {alias: spec for spec in SPECS for alias in (spec.name, *spec.aliases)}


def lookup(name: str) -> DatasetSpec | None:
    """The registry entry for a name or one of its aliases; None for any other name."""
    return _BY_NAME.get(name.strip().lower())


def default_data_dir(data_dir: str | None) -> pathlib.Path:
    """Where data sets live: the configured data_dir, else tfds' default (TFDS_DATA_DIR or
    ~/tensorflow_datasets). Prepared folders go in `<data dir>/<name>/<split>/<label>/`."""
    if data_dir:
        return pathlib.Path(data_dir).expanduser()
    return pathlib.Path(os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")).expanduser()


def manual_download_message(spec: DatasetSpec, data_dir: pathlib.Path) -> str:
    """The one message a missing hand-downloaded data set gets: what to fetch, how to lay it out."""
    target = data_dir / spec.name
    return (
        f"{spec.title} ('{spec.name}') was not found at {target}. tfds cannot download it, so get "
        f"it by hand: download {spec.manual_files} (see {spec.homepage}) into a folder, say "
        f"~/downloads/{spec.name}, then run\n"
        f"    python {spec.prepare_script} --source ~/downloads/{spec.name} --out {target}\n"
        f"which writes {target}/<split>/<label>/<image>. Then set "
        f"config.dataset.name='{spec.name}' with config.dataset.data_dir='{data_dir}' (or "
        f"config.dataset.name='folder:{target}').")
