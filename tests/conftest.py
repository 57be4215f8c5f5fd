"""Shared test fixtures. torch must be imported before tensorflow (importing them the other way
round segfaults on these machines), so it is imported here, first, when it is installed."""
import os
import pathlib

try:  # noqa: SIM105 - the import order is the point
    import torch  # noqa: F401
    import torchvision  # noqa: F401
except ImportError:  # the [torch] extra is optional; tests that need it skip
    pass

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("JAXFT_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """The real image folders (../shared/data); tests that need them skip where they are absent."""
    if not (SHARED_DATA / "oxford_flowers102").is_dir():
        pytest.skip(f"real image data not found at {SHARED_DATA} (set JAXFT_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def flowers_dir(shared_data) -> pathlib.Path:
    return shared_data / "oxford_flowers102"


@pytest.fixture(scope="session")
def caltech_dir(shared_data) -> pathlib.Path:
    path = shared_data / "caltech101"
    if not path.is_dir():
        pytest.skip(f"Caltech-101 images not found at {path}")
    return path


def make_image_folder(source: pathlib.Path, target: pathlib.Path, *, classes: int,
                      per_split: dict[str, int]) -> pathlib.Path:
    """A small `<split>/<label>/<image>` folder of real images copied from `source` (a data set
    in ../shared/data) into a temporary directory: the first `classes` labels, the first
    images of each."""
    import shutil

    labels = sorted(p.name for p in (source / "test").iterdir())[:classes]
    source_split = {"train": "train", "test": "test", "validation": "test"}
    used: dict[str, int] = {label: 0 for label in labels}
    for split, count in per_split.items():
        for label in labels:
            images = sorted((source / source_split[split] / label).iterdir())
            start = used[label] if source_split[split] == "test" else 0
            chosen = images[start:start + count]
            if source_split[split] == "test":
                used[label] += count
            (target / split / label).mkdir(parents=True, exist_ok=True)
            for image in chosen:
                shutil.copy(image, target / split / label / image.name)
    return target


@pytest.fixture(scope="session")
def tiny_flowers(flowers_dir, tmp_path_factory) -> pathlib.Path:
    """5 Flowers classes: 8 train and 5 test images each (real images, 144 px)."""
    return make_image_folder(flowers_dir, tmp_path_factory.mktemp("tiny_flowers"), classes=5,
                             per_split={"train": 8, "test": 5})
