"""Image-folder data sets (`root/<split>/<label>/<image>`): listing, label order, and a cheap
up-front check that finds empty, non-image and truncated files before training starts."""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
import pathlib

import numpy as np
from absl import logging

from jaxft.data.errors import BadImageError, DataError, DatasetNotFoundError, tf_error_text

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")
MAX_LISTED_PATHS = 10  # an error lists this many bad files, then a count


@dataclasses.dataclass(frozen=True)
class FolderSplit:
    """The images of one (possibly '+'-joined) split in a fixed order: split parts in the order
    given, then label, then file name. Labels index the root's sorted class folders."""

    paths: np.ndarray  # str
    labels: np.ndarray  # int32
    skipped: tuple[tuple[str, str], ...]  # (path, reason) of files left out as bad

    def __len__(self) -> int:
        return len(self.paths)


def split_parts(split: str) -> list[str]:
    """'train+validation' -> ['train', 'validation']; tfds slices are not folder syntax."""
    parts = [part.strip() for part in split.split("+")]
    if not all(parts) or any(c in split for c in "[]%:"):
        raise DataError(
            f"Split '{split}' is not valid for an image folder: give split folder names joined "
            f"by '+', e.g. 'train+validation' (slices such as 'train[:10%]' are tfds-only).")
    return parts


@functools.lru_cache(maxsize=None)
def class_names(root: str) -> tuple[str, ...]:
    """Sorted class-folder names over every split folder of the root, so that a label means
    the same class in every split (as tfds' ImageFolder does)."""
    names = set()
    for split_dir in _split_dirs(pathlib.Path(root)):
        names.update(entry.name for entry in os.scandir(split_dir)
                     if entry.is_dir() and not entry.name.startswith("."))
    return tuple(sorted(names))


def display_names(root: str) -> tuple[str, ...]:
    """Human-readable class names from `root/class_names.txt` when it has one line per class
    (the shared Flowers folder has one); the folder names otherwise."""
    folders = class_names(root)
    names_file = pathlib.Path(root) / "class_names.txt"
    if names_file.is_file():
        lines = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
        # Lines may start with their folder name: '000 pink primrose'.
        if len(lines) == len(folders):
            return tuple(line.removeprefix(f"{name} ") for name, line in zip(folders, lines))
    return folders


def _split_dirs(root: pathlib.Path) -> list[pathlib.Path]:
    return sorted(path for path in root.iterdir()
                  if path.is_dir() and not path.name.startswith("."))


@functools.lru_cache(maxsize=None)
def read_split(root: str, split: str, skip_bad_images: bool) -> FolderSplit:
    """Lists and checks a split; bad files stop with their paths, or are left out and logged."""
    labels_by_name = {name: index for index, name in enumerate(class_names(root))}
    paths, labels, empty_classes = [], [], []
    for part in split_parts(split):
        split_dir = pathlib.Path(root) / part
        if not split_dir.is_dir():
            available = ", ".join(p.name for p in _split_dirs(pathlib.Path(root))) or "none"
            raise DatasetNotFoundError(
                f"Split '{part}' not found: {split_dir} is not a folder (splits under {root}: "
                f"{available}).")
        part_count = len(paths)
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()
                                and not p.name.startswith(".")):
            images = _image_files(class_dir)
            if not images:
                empty_classes.append(str(class_dir))
            paths.extend(images)
            labels.extend([labels_by_name[class_dir.name]] * len(images))
        if len(paths) == part_count:
            raise DataError(
                f"Split folder {split_dir} holds no images: expected {split_dir}/<label>/<image> "
                f"with {', '.join(IMAGE_EXTENSIONS)} files.")
    _check_empty_classes(empty_classes, skip_bad_images)
    bad = find_bad_images(paths)
    if bad and not skip_bad_images:
        raise BadImageError(_bad_images_message(bad), paths=tuple(bad))
    if bad:
        logging.warning("Left out %d unreadable image(s) of split '%s' in %s "
                        "(skip_bad_images=True): %s", len(bad), split, root, _list_bad(bad))
        keep = [i for i, path in enumerate(paths) if path not in bad]
        paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
    return FolderSplit(paths=np.asarray(paths, dtype=object).astype(str),
                       labels=np.asarray(labels, np.int32), skipped=tuple(bad.items()))


def _image_files(class_dir: pathlib.Path) -> list[str]:
    return sorted(entry.path for entry in os.scandir(class_dir)
                  if entry.is_file() and not entry.name.startswith(".")
                  and entry.name.lower().endswith(IMAGE_EXTENSIONS))


def _check_empty_classes(empty_classes: list[str], skip_bad_images: bool) -> None:
    if not empty_classes:
        return
    shown = ", ".join(empty_classes[:MAX_LISTED_PATHS])
    if skip_bad_images:
        logging.warning("%d class folder(s) hold no images (their classes keep their labels but "
                        "have no examples here): %s", len(empty_classes), shown)
        return
    raise DataError(
        f"{len(empty_classes)} class folder(s) hold no images: {shown}. Add images or remove "
        f"the folders (set config.dataset.skip_bad_images=True to go on without them).")


# --- the cheap check -------------------------------------------------------------------------
_SIGNATURES = {  # leading bytes -> format
    b"\xff\xd8\xff": "jpeg", b"\x89PNG\r\n\x1a\n": "png", b"GIF87a": "gif", b"GIF89a": "gif",
    b"BM": "bmp",
}
_TAIL_BYTES = 64


def find_bad_images(paths: list[str]) -> dict[str, str]:
    """{path: reason} for files that cannot be decoded. Every file gets a cheap look (its first
    and last bytes: empty, not an image, or cut short); only the suspects are decoded in full,
    so a large folder costs a directory walk and two small reads per file."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        verdicts = list(pool.map(_cheap_look, paths, chunksize=64))
    bad = {}
    for path, verdict in zip(paths, verdicts):
        if verdict == "suspect":
            verdict = decode_failure(path)
        if verdict:
            bad[path] = verdict
    return bad


def _cheap_look(path: str) -> str | None:
    """None (looks fine), a reason (certainly bad) or 'suspect' (decode it to be sure)."""
    try:
        with open(path, "rb") as file:
            head = file.read(16)
            if not head:
                return "empty file"
            file.seek(0, os.SEEK_END)
            size = file.tell()
            file.seek(max(0, size - _TAIL_BYTES))
            tail = file.read().rstrip(b"\x00\r\n ")
    except OSError as error:
        return f"cannot be read ({error.strerror or error})"
    kind = next((k for sig, k in _SIGNATURES.items() if head.startswith(sig)), None)
    if kind is None and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        kind = "webp"
    if kind is None:
        return "not a JPEG, PNG, GIF, BMP or WebP image"
    # A download cut short lacks the end marker; some valid files carry trailing bytes after it,
    # so a missing marker only makes the file a suspect.
    if kind == "jpeg" and not tail.endswith(b"\xff\xd9"):
        return "suspect"
    if kind == "png" and b"IEND" not in tail:
        return "suspect"
    return None


def decode_failure(path: str) -> str | None:
    """Decodes a file as the input pipeline does; the decoder's complaint, or None if it works."""
    import tensorflow as tf

    from jaxft.data import preprocess

    try:
        preprocess.decode_rgb(tf.io.read_file(path))
    except (tf.errors.OpError, ValueError) as error:
        return f"cannot be decoded ({tf_error_text(error)})"
    return None


def _list_bad(bad: dict[str, str]) -> str:
    items = [f"{path} ({reason})" for path, reason in list(bad.items())[:MAX_LISTED_PATHS]]
    more = f" and {len(bad) - MAX_LISTED_PATHS} more" if len(bad) > MAX_LISTED_PATHS else ""
    return "; ".join(items) + more


def _bad_images_message(bad: dict[str, str]) -> str:
    return (f"{len(bad)} image file(s) cannot be decoded: {_list_bad(bad)}. Replace or delete "
            f"them, or set config.dataset.skip_bad_images=True to leave them out.")
