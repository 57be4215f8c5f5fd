"""scripts/prepare_*.py on miniature archives in the official layouts (a few real images, the
official list and annotation formats), read back through jaxft.data."""
import torch  # noqa: F401, I001 - before anything that may import tensorflow

import importlib.util
import pathlib
import shutil
import subprocess
import sys
import tarfile

import numpy as np

from jaxft import data
from jaxft.data import sources

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
_spec = importlib.util.spec_from_file_location("default_config", REPO / "configs" / "default.py")
default_config = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(default_config)


def folder_config(root):
    config = default_config.get_config()
    config.dataset.name = f"folder:{root}"
    config.dataset.train_split, config.dataset.test_split = "train", "test"
    return config


def _run_script(name, source, out, *extra):
    result = subprocess.run([sys.executable, str(SCRIPTS / name), "--source", str(source),
                             "--out", str(out), *extra], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _tar(archive: pathlib.Path, folder: pathlib.Path, arcname: str):
    with tarfile.open(archive, "w:gz") as bundle:
        bundle.add(folder, arcname=arcname)
    shutil.rmtree(folder)


def _real_images(flowers_dir, count):
    return sorted((flowers_dir / "test" / "001").iterdir())[:count]


def test_prepare_fgvc_aircraft(flowers_dir, tmp_path):
    staging = tmp_path / "staging" / "data"
    (staging / "images").mkdir(parents=True)
    variants = ["A340-300", "F/A-18", "Boeing 717"]
    (staging / "variants.txt").write_text("\n".join(variants) + "\n")
    for index, image in enumerate(_real_images(flowers_dir, 6)):
        shutil.copy(image, staging / "images" / f"{1000 + index}.jpg")
    for offset, name in enumerate(("train", "val", "test")):
        lines = [f"{1000 + 2 * offset + k} {variants[(offset + k) % 3]}" for k in range(2)]
        (staging / f"images_variant_{name}.txt").write_text("\n".join(lines) + "\n")
    source = tmp_path / "downloads"
    source.mkdir()
    _tar(source / "fgvc-aircraft-2013b.tar.gz", staging.parent, "fgvc-aircraft-2013b")
    out = tmp_path / "fgvc_aircraft"
    _run_script("prepare_fgvc_aircraft.py", source, out)
    info = data.dataset_info(folder_config(out).dataset)
    assert info.class_names == ("000_A340-300", "001_F_A-18", "002_Boeing_717")  # official order
    assert info.splits == {"train": 2, "test": 2}
    assert (out / "validation" / "002_Boeing_717" / "1003.jpg").is_file()
    # The registry name finds it under the data dir.
    config = default_config.get_config()
    config.dataset.name, config.dataset.data_dir = "aircraft", str(tmp_path)
    assert data.dataset_info(config.dataset).splits["train+validation"] == 4


def test_prepare_mit_indoor67_and_caltech256(flowers_dir, tmp_path):
    images = _real_images(flowers_dir, 9)
    source = tmp_path / "indoor"
    for index, image in enumerate(images[:6]):
        category = ("bar", "kitchen")[index % 2]
        (source / "Images" / category).mkdir(parents=True, exist_ok=True)
        shutil.copy(image, source / "Images" / category / f"{category}_{index}.jpg")
    (source / "TrainImages.txt").write_text("bar/bar_0.jpg\nbar/bar_2.jpg\nkitchen/kitchen_1.jpg\n")
    (source / "TestImages.txt").write_text("bar/bar_4.jpg\nkitchen/kitchen_3.jpg\n")
    with tarfile.open(source / "indoorCVPR_09.tar", "w") as bundle:
        bundle.add(source / "Images", arcname="Images")
    shutil.rmtree(source / "Images")
    _run_script("prepare_mit_indoor67.py", source, tmp_path / "indoor_out")
    info = data.dataset_info(folder_config(tmp_path / "indoor_out").dataset)
    assert info.class_names == ("bar", "kitchen") and info.splits == {"train": 3, "test": 2}

    staging = tmp_path / "staging256"
    for category, count in (("001.ak47", 5), ("002.backpack", 4), ("257.clutter", 2)):
        (staging / category).mkdir(parents=True)
        for k in range(count):
            shutil.copy(images[k], staging / category / f"{category[:3]}_{k:04d}.jpg")
    (staging / "002.backpack" / "RENAME2").write_text("stray file")
    source = tmp_path / "caltech256"
    source.mkdir()
    with tarfile.open(source / "256_ObjectCategories.tar", "w") as bundle:
        bundle.add(staging, arcname="256_ObjectCategories")
    out = tmp_path / "caltech256_out"
    _run_script("prepare_caltech256.py", source, out, "--train-per-class", "3")
    info = data.dataset_info(folder_config(out).dataset)
    assert info.class_names == ("001.ak47", "002.backpack")  # no clutter class
    assert info.splits == {"train": 6, "test": 3}
    train_files = {p.name for p in (out / "train").rglob("*.jpg")}
    test_files = {p.name for p in (out / "test").rglob("*.jpg")}
    assert not train_files & test_files


def test_prepare_stanford_cars(flowers_dir, tmp_path):
    import scipy.io

    images = _real_images(flowers_dir, 5)
    source = tmp_path / "cars"
    for split, picks in (("train", images[:3]), ("test", images[3:])):
        (source / f"cars_{split}").mkdir(parents=True)
        for k, image in enumerate(picks):
            shutil.copy(image, source / f"cars_{split}" / f"{k + 1:05d}.jpg")
    record = np.dtype([("fname", object), ("class", np.uint8)])
    train = np.array([("00001.jpg", 2), ("00002.jpg", 1), ("00003.jpg", 2)], dtype=record)
    test = np.array([("00001.jpg", 1), ("00002.jpg", 2)], dtype=record)
    (source / "devkit").mkdir()
    names = np.array(["AM General Hummer SUV 2000", "Acura RL Sedan 2012"], dtype=object)
    scipy.io.savemat(source / "devkit" / "cars_meta.mat", {"class_names": names})
    scipy.io.savemat(source / "devkit" / "cars_train_annos.mat", {"annotations": train})
    scipy.io.savemat(source / "cars_test_annos_withlabels.mat", {"annotations": test})
    for archive, folder_name in (("car_devkit.tgz", "devkit"), ("cars_train.tgz", "cars_train"),
                                 ("cars_test.tgz", "cars_test")):
        _tar(source / archive, source / folder_name, folder_name)
    out = tmp_path / "stanford_cars"
    _run_script("prepare_stanford_cars.py", source, out)
    info = data.dataset_info(folder_config(out).dataset)
    assert info.class_names == ("000_AM_General_Hummer_SUV_2000", "001_Acura_RL_Sedan_2012")
    assert info.splits == {"train": 3, "test": 2}
    split = sources.resolve(folder_config(out).dataset).read_split("train")
    assert dict(zip([pathlib.Path(p).name for p in split.paths], split.labels)) == \
        {"00002.jpg": 0, "00001.jpg": 1, "00003.jpg": 1}
