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
