"""Shared steps of the scripts/prepare_<name>.py scripts: unpack an official archive, write
`<out>/<split>/<label>/<image>`, and compare the counts with the paper's."""
from __future__ import annotations

import argparse
import os
import pathlib
import re
import shutil
import sys
import tarfile
import zipfile


def parser(description: str, archives: str) -> argparse.ArgumentParser:
    arguments = argparse.ArgumentParser(description=description)
    arguments.add_argument("--source", required=True, type=pathlib.Path,
                           help=f"folder with {archives} (or their unpacked contents)")
    arguments.add_argument("--out", required=True, type=pathlib.Path,
                           help="where to write <split>/<label>/<image>")
    arguments.add_argument("--link", action="store_true",
                           help="hard-link the images instead of copying them (same file system)")
    return arguments


def unpack(source: pathlib.Path, archive: str, unpacked: str) -> pathlib.Path:
    """`source/unpacked`, unpacking `source/archive` there first unless that was done before."""
    target = source / unpacked
    if target.exists():
        return target
    path = source / archive
    if not path.is_file():
        sys.exit(f"error: neither {target} nor the archive {path} exists; download {archive} "
                 f"into {source} first.")
    print(f"unpacking {path} ...", flush=True)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as bundle:
            bundle.extractall(source)
    else:
        with tarfile.open(path) as bundle:
            bundle.extractall(source, filter="data")  # no absolute paths or links out of source
    if not target.exists():
        sys.exit(f"error: {path} did not contain {unpacked}.")
    return target


def safe_label(name: str) -> str:
    """A folder name for a class name ('F/A-18' -> 'F_A-18')."""
    return re.sub(r"[^\w.+-]+", "_", name.strip()).strip("_") or "unnamed"


def numbered_labels(names: list[str]) -> dict[str, str]:
    """Class name -> '007_name': folder names that sort in the given (official) class order."""
    width = max(3, len(str(len(names) - 1)))
    return {name: f"{index:0{width}d}_{safe_label(name)}" for index, name in enumerate(names)}


def write_split(out: pathlib.Path, split: str, items: list[tuple[pathlib.Path, str]],
                link: bool = False) -> int:
    """Places each (image, label folder) as out/split/label/<image name>."""
    missing = [str(image) for image, _ in items if not image.is_file()]
    if missing:
        sys.exit(f"error: {len(missing)} image(s) named by the split lists are missing, e.g. "
                 f"{missing[:3]}; is the archive complete?")
    for image, label in items:
        target = out / split / label / image.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            continue
        if link:
            try:
                os.link(image, target)
                continue
            except OSError:  # another file system: fall back to copying
                pass
        shutil.copyfile(image, target)
    return len(items)


def report(out: pathlib.Path, counts: dict[str, int], expected: dict[str, int]) -> None:
    """Prints what was written and flags counts that differ from the paper's."""
    for split, count in counts.items():
        note = "" if expected.get(split, count) == count else \
            f"  (the paper has {expected[split]}: check the archive and lists)"
        print(f"{out / split}: {count} images{note}")
    print(f"done: use config.dataset.name='folder:{out}' (or the registry name with "
          f"config.dataset.data_dir='{out.parent}').")
