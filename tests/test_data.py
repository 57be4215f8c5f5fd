"""jaxft.data on the real image folders: splits and labels, preprocessing against torchvision,
augmentation statistics, determinism and resume, padded eval, bad input, tfds offline; and
jaxft.metrics against hand-computed errors."""
import torch  # noqa: I001 - before anything that may import tensorflow
import torchvision.transforms.v2.functional as TF
from torchvision import transforms as T

import importlib.util
import logging
import pathlib
import shutil

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from jaxft import data, metrics
from jaxft.data import preprocess, sources

_DEFAULT_CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "default.py"
_spec = importlib.util.spec_from_file_location("default_config", _DEFAULT_CONFIG)
default_config = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(default_config)

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
ONE_LEVEL = 1 / 255 / min(IMAGENET[1])  # one 8-bit pixel level in normalised units


def make_config(root, *, image_size=64, batch_size=8, eval_batch_size=8, **input_fields):
    config = default_config.get_config()
    config.dataset.name = f"folder:{root}"
    config.dataset.train_split, config.dataset.test_split = "train", "test"
    config.input.image_size = image_size
    config.batch_size, config.eval_batch_size = batch_size, eval_batch_size
    for key, value in input_fields.items():
        setattr(config.input, key, value)
    return config


def copy_images(source: pathlib.Path, target: pathlib.Path, *, classes: int,
                per_split: dict[str, int]) -> pathlib.Path:
    """A small `<split>/<label>/<image>` folder of real images (the first images of the first
    `classes` labels of each source split)."""
    for split, count in per_split.items():
        for label in sorted(p.name for p in (source / split).iterdir())[:classes]:
            (target / split / label).mkdir(parents=True, exist_ok=True)
            for image in sorted((source / split / label).iterdir())[:count]:
                shutil.copy(image, target / split / label / image.name)
    return target


@pytest.fixture(scope="module")
def small_flowers(flowers_dir, tmp_path_factory):
    """5 classes; train 8 per class (40), test 5 per class (25: not a multiple of 8)."""
    return copy_images(flowers_dir, tmp_path_factory.mktemp("small_flowers"), classes=5,
                       per_split={"train": 8, "test": 5})


def take(iterator, count):
    return [next(iterator) for _ in range(count)]


def torchvision_eval(path, image_size, crop_fraction=0.875):
    transform = T.Compose([T.Resize(int(image_size / crop_fraction)), T.CenterCrop(image_size),
                           T.ToTensor(), T.Normalize(*IMAGENET)])
    return transform(Image.open(path).convert("RGB")).permute(1, 2, 0).numpy()


# --- splits, labels, sources -------------------------------------------------------------------
def test_flowers_folder_split_sizes_and_labels(flowers_dir):
    config = make_config(flowers_dir)
    config.dataset.train_split = "train+validation"
    info = data.dataset_info(config.dataset)
    assert info.num_classes == 102 and len(info.class_names) == 102
    assert info.class_names[0] == "pink primrose"  # from class_names.txt
    assert info.splits == {"train": 1020, "validation": 1020, "train+validation": 2040,
                           "test": 6149}
    source = sources.resolve(config.dataset)
    merged = source.read_split("train+validation")
    train, validation = source.read_split("train"), source.read_split("validation")
    assert list(merged.paths) == list(train.paths) + list(validation.paths)
    # Flowers folders 000..101 are the labels themselves.
    assert all(int(pathlib.Path(path).parent.name) == label
               for path, label in zip(merged.paths, merged.labels))
    assert np.bincount(merged.labels).tolist() == [20] * 102


def test_caltech_labels_follow_sorted_folder_names(caltech_dir):
    config = make_config(caltech_dir)
    info = data.dataset_info(config.dataset)
    folders = sorted(p.name for p in (caltech_dir / "train").iterdir())
    assert info.num_classes == 101 and list(info.class_names) == folders
    assert info.splits == {"train": 3030, "test": 5647}
    test = sources.resolve(config.dataset).read_split("test")
    assert all(folders[label] == pathlib.Path(path).parent.name
               for path, label in zip(test.paths[::97], test.labels[::97]))


def test_registry_name_reads_a_prepared_folder_under_data_dir(shared_data):
    config = default_config.get_config()  # oxford_flowers102, train+validation / test
    config.dataset.data_dir = str(shared_data)
    info = data.dataset_info(config.dataset)
    assert info.source == f"folder:{(shared_data / 'oxford_flowers102').resolve()}"
    assert info.splits["train+validation"] == 2040 and info.splits["test"] == 6149


# --- preprocessing against torchvision ------------------------------------------------------------
@pytest.mark.parametrize("image_size", [112, 224])
def test_eval_preprocessing_matches_torchvision(flowers_dir, tmp_path, image_size):
    root = copy_images(flowers_dir, tmp_path, classes=8, per_split={"test": 3})
    config = make_config(root, image_size=image_size, eval_batch_size=8)
    images = np.concatenate([batch["image"] for batch in data.eval_batches(
        config, normalization=IMAGENET, process_index=0, process_count=1)])
    paths = sources.resolve(config.dataset).read_split("test").paths
    expected = np.stack([torchvision_eval(path, image_size) for path in paths])
    difference = np.abs(images - expected)
    # Measured: 0.0012 (112 px, downscaling 144 -> 128) and 0.0002 (224 px, upscaling); almost
    # every value is equal or one pixel level apart (PIL's fixed-point arithmetic).
    assert difference.mean() < 0.0025
    assert np.mean(difference > 1.01 * ONE_LEVEL) < 0.002
    assert difference.max() < 3.01 * ONE_LEVEL


def test_crop_boxes_follow_torchvision_random_resized_crop():
    height, width, count = 144, 216, 3000
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    boxes = _crop_boxes(height, width, scale, ratio, count)
    top, left, box_h, box_w = boxes.T
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + box_h <= height).all() and (left + box_w <= width).all()
    area, aspect = box_h * box_w / (height * width), box_w / box_h
    # Integer rounding of each side moves area and aspect slightly past the ranges.
    assert area.min() >= scale[0] * 0.95 and area.max() <= scale[1]
    assert (aspect >= ratio[0] * 0.97).all() and (aspect <= ratio[1] * 1.03).all()
    torch.manual_seed(0)
    image = torch.zeros(3, height, width)
    reference = np.array([T.RandomResizedCrop.get_params(image, list(scale), list(ratio))
                          for _ in range(count)])
    ref_area = reference[:, 2] * reference[:, 3] / (height * width)
    ref_aspect = reference[:, 3] / reference[:, 2]
    # Same distribution: means within ~4 standard errors of torchvision's.
    assert abs(area.mean() - ref_area.mean()) < 4 * area.std() / np.sqrt(count / 2)
    assert abs(np.log(aspect).mean() - np.log(ref_aspect).mean()) < \
        4 * np.log(aspect).std() / np.sqrt(count / 2)
    # Crop positions are uniform over where the box fits: the box centre averages the image's.
    assert abs((top + box_h / 2).mean() - height / 2) < 3
    assert abs((left + box_w / 2).mean() - width / 2) < 4


def test_crop_boxes_in_custom_ranges_and_the_fallback():
    boxes = _crop_boxes(144, 216, (0.5, 0.6), (1.0, 1.5), 500)
    area = boxes[:, 2] * boxes[:, 3] / (144 * 216)
    aspect = boxes[:, 3] / boxes[:, 2]
    assert area.min() > 0.49 and area.max() < 0.61 and area.max() - area.min() > 0.08
    assert aspect.min() > 0.98 and aspect.max() < 1.52
    # No box of a 20 x 400 strip fits these ranges: torchvision then takes the central box
    # with the largest allowed aspect ratio.
    fallback = _crop_boxes(20, 400, (0.08, 1.0), (3 / 4, 4 / 3), 5)
    expected = T.RandomResizedCrop.get_params(torch.zeros(3, 20, 400), [0.08, 1.0], [3 / 4, 4 / 3])
    assert (fallback == np.array(expected)).all()


def _crop_boxes(height, width, scale, ratio, count):
    seeds = tf.data.Dataset.range(count).map(
        lambda i: preprocess.random_resized_crop_box(
            height, width, tf.stack([tf.constant(7, tf.int64), i]), scale, ratio))
    return np.stack(list(seeds.as_numpy_iterator()))


def test_flips_are_about_half_and_crops_cover_whole_square_images(flowers_dir, tmp_path):
    # Square images with scale (1, 1) and ratio (1, 1): the crop is the whole image, so every
    # training image must be the eval image (crop_fraction 1) or its mirror.
    for index, path in enumerate(sorted((flowers_dir / "train" / "000").iterdir())[:8]):
        image = Image.open(path)
        side = min(image.size)
        (tmp_path / "train" / "a").mkdir(parents=True, exist_ok=True)
        image.crop((0, 0, side, side)).save(tmp_path / "train" / "a" / f"{index}.jpg")
    shutil.copytree(tmp_path / "train", tmp_path / "test")
    config = make_config(tmp_path, batch_size=8, scale=(1.0, 1.0), ratio=(1.0, 1.0),
                         color_jitter=0.0, crop_fraction=1.0)
    plain = next(data.eval_batches(config, normalization=IMAGENET, process_index=0,
                                   process_count=1))["image"]
    flips = 0
    for batch in take(data.train_batches(config, normalization=IMAGENET, process_index=0,
                                         process_count=1), 12):
        for image in batch["image"]:
            same = np.abs(image - plain).mean(axis=(1, 2, 3))
            mirrored = np.abs(image - plain[:, :, ::-1]).mean(axis=(1, 2, 3))
            assert min(same.min(), mirrored.min()) < 1e-6
            flips += mirrored.min() < same.min()
    assert 24 <= flips <= 72  # of 96 (binomial sd 4.9); every third image rounds the same way
    seeds = tf.data.Dataset.range(2000).map(lambda i: preprocess.random_flip(
        tf.constant([[0.0, 1.0]])[..., None], tf.stack([tf.constant(3, tf.int64), i]))[0, 0, 0])
    assert 900 <= sum(seeds.as_numpy_iterator()) <= 1100


def test_color_jitter_factors_and_operations_match_torchvision():
    gray = tf.fill([4, 4, 3], 0.5)  # contrast and saturation leave a gray image unchanged
    values = np.array([preprocess.color_jitter(gray, tf.constant([1, i], tf.int64), 0.4)[0, 0, 0]
                       for i in range(300)])
    assert values.min() >= 0.5 * 0.6 - 1e-6 and values.max() <= 0.5 * 1.4 + 1e-6
    assert values.max() - values.min() > 0.3  # brightness factors spread over [0.6, 1.4]
    image = np.random.default_rng(0).uniform(size=(6, 5, 3)).astype(np.float32)
    factors, order = (1.3, 0.7, 1.2), (2, 0, 1)  # saturation, brightness, contrast
    ours = preprocess.apply_color_jitter(tf.constant(image), tf.constant(factors),
                                         tf.constant(order)).numpy()
    theirs = torch.from_numpy(image).permute(2, 0, 1)
    theirs = TF.adjust_saturation(theirs, 1.2)
    theirs = TF.adjust_brightness(theirs, 1.3)
    theirs = TF.adjust_contrast(theirs, 0.7)
    np.testing.assert_allclose(ours, theirs.permute(1, 2, 0).numpy(), atol=2e-6)


# --- determinism, resume, processes ------------------------------------------------------------------
def test_train_batches_are_deterministic_and_resume_exactly(small_flowers):
    config = make_config(small_flowers, batch_size=8)  # 40 images: 5 steps per epoch
    assert data.steps_per_epoch(config) == 5
    kwargs = dict(normalization=IMAGENET, process_index=0, process_count=1)
    run = take(data.train_batches(config, **kwargs), 12)
    again = take(data.train_batches(config, **kwargs), 12)
    resumed = take(data.train_batches(config, start_step=7, **kwargs), 5)
    for first, second in zip(run, again):
        np.testing.assert_array_equal(first["image"], second["image"])
    for first, second in zip(run[7:], resumed):
        np.testing.assert_array_equal(first["image"], second["image"])
        np.testing.assert_array_equal(first["label"], second["label"])
    config.seed = 1
    other = take(data.train_batches(config, **kwargs), 2)
    assert not np.array_equal(other[0]["image"], run[0]["image"])
    assert run[0]["image"].shape == (8, 64, 64, 3) and run[0]["image"].dtype == np.float32
    assert run[0]["label"].dtype == np.int32


def test_every_epoch_is_a_permutation_and_no_augment_means_eval_images(small_flowers):
    config = make_config(small_flowers, batch_size=8, augment=False, crop_fraction=0.875)
    kwargs = dict(normalization=IMAGENET, process_index=0, process_count=1)
    epochs = take(data.train_batches(config, **kwargs), 10)
    eval_images = np.concatenate([b["image"] for b in data.eval_batches(
        config, split="train", batch_size=40, **kwargs)])
    orders = []
    for epoch in (epochs[:5], epochs[5:]):
        images = np.concatenate([batch["image"] for batch in epoch])
        distance = np.abs(images[:, None] - eval_images[None]).mean(axis=(2, 3, 4))
        order = distance.argmin(axis=1)
        assert distance.min(axis=1).max() == 0.0  # each one is exactly an eval image
        assert sorted(order) == list(range(40))  # each image once per epoch
        orders.append(order)
    assert list(orders[0]) != list(orders[1])  # a new permutation each epoch


def test_processes_split_the_global_batch(small_flowers):
    config = make_config(small_flowers, batch_size=8)
    whole = take(data.train_batches(config, normalization=IMAGENET, process_index=0,
                                    process_count=1, start_step=3), 3)
    parts = [take(data.train_batches(config, normalization=IMAGENET, process_index=index,
                                     process_count=2, start_step=3), 3) for index in range(2)]
    for step in range(3):
        for key in ("image", "label"):
            np.testing.assert_array_equal(
                whole[step][key], np.concatenate([parts[0][step][key], parts[1][step][key]]))


# --- padded eval and metrics ----------------------------------------------------------------------------
def _colour_classifier(images, num_classes=5):
    """A fixed linear map of each image's mean colour: a stand-in network."""
    weights = np.random.default_rng(0).standard_normal((3, num_classes)).astype(np.float32)
    return images.mean(axis=(1, 2)) @ weights


def test_padded_eval_counts_every_image_once(small_flowers):
    config = make_config(small_flowers, eval_batch_size=8)  # 25 test images: 4 batches, 7 pads
    batches = list(data.eval_batches(config, normalization=IMAGENET, process_index=0,
                                     process_count=1))
    assert [b["image"].shape[0] for b in batches] == [8] * 4
    assert [b["mask"].sum() for b in batches] == [8, 8, 8, 1]
    counts = metrics.ClassificationCounts.zeros(5)
    for batch in batches:
        counts.update(_colour_classifier(batch["image"]), batch["label"], batch["mask"])
    # The same with two processes, each with half of every global batch.
    split_counts = metrics.ClassificationCounts.zeros(5)
    for index in range(2):
        for batch in data.eval_batches(config, normalization=IMAGENET, process_index=index,
                                       process_count=2):
            assert batch["image"].shape[0] == 4
            split_counts = split_counts + metrics.ClassificationCounts.zeros(5).update(
                _colour_classifier(batch["image"]), batch["label"], batch["mask"])
    # An independent per-image loop.
    test = sources.resolve(config.dataset).read_split("test")
    predictions = [int(_colour_classifier(preprocess.eval_image(
        tf.io.read_file(path), image_size=64, crop_fraction=0.875, mean=IMAGENET[0],
        std=IMAGENET[1]).numpy()[None]).argmax()) for path in test.paths]
    wrong = np.array(predictions) != test.labels
    top1 = 100 * wrong.mean()
    mean_class = 100 * np.mean([wrong[test.labels == c].mean() for c in range(5)])
    assert 0 < top1 < 100
    for result in (counts, split_counts):
        assert result.count == 25
        assert result.top1_error == pytest.approx(top1, abs=1e-9)
        assert result.mean_class_error == pytest.approx(mean_class, abs=1e-9)


def test_metrics_against_hand_computed_errors():
    labels = np.array([0, 0, 0, 1, 2, 2])
    predictions = np.array([0, 1, 0, 1, 0, 2])
    mask = np.array([1, 1, 1, 1, 1, 0], np.float32)  # the last one is padding
    correct, total = metrics.per_class_counts(predictions, labels, mask, 4)
    assert list(np.asarray(correct)) == [2, 1, 0, 0] and list(np.asarray(total)) == [3, 1, 1, 0]
    errors = metrics.errors_from_counts(correct, total)
    assert errors["top1_error"] == pytest.approx(40.0)  # 2 wrong of 5
    assert errors["mean_class_error"] == pytest.approx(100 * (1 / 3 + 0 + 1) / 3)  # class 3 absent
    logits = np.eye(4)[predictions] * 5.0
    halves = (metrics.ClassificationCounts.zeros(4).update(logits[:3], labels[:3], mask[:3])
              + metrics.ClassificationCounts.zeros(4).update(logits[3:], labels[3:], mask[3:]))
    assert halves.errors() == pytest.approx(errors)
    assert np.isnan(metrics.ClassificationCounts.zeros(3).top1_error)


# --- tfds, offline ---------------------------------------------------------------------------------------
def test_tfds_builder_name_offline_with_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    num_examples = 20
    builder = tfds.builder("oxford_flowers102", data_dir=str(tmp_path))
    split_infos = [tfds.core.SplitInfo(name=name, shard_lengths=[num_examples], num_bytes=0)
                   for name in ("train", "validation", "test")]
    builder.info.set_splits(tfds.core.SplitDict(split_infos))
    pathlib.Path(builder.data_dir).mkdir(parents=True)
    builder.info.write_to_directory(builder.data_dir)  # metadata only: the split sizes
    config = default_config.get_config()
    config.dataset.data_dir = str(tmp_path)
    config.dataset.train_split = "train"  # the mock gives every split `num_examples`
    config.input.image_size, config.batch_size, config.eval_batch_size = 32, 4, 8
    kwargs = dict(normalization=IMAGENET, process_index=0, process_count=1)
    sources._resolve.cache_clear()
    with tfds.testing.mock_data(num_examples=num_examples, data_dir=str(tmp_path),
                                policy=tfds.testing.MockPolicy.USE_FILES):
        info = data.dataset_info(config.dataset)
        run = take(data.train_batches(config, **kwargs), 12)  # 5 steps per epoch
        resumed = take(data.train_batches(config, start_step=7, **kwargs), 5)
        evals = [list(data.eval_batches(config, normalization=IMAGENET, process_index=index,
                                        process_count=2)) for index in range(2)]
    sources._resolve.cache_clear()
    assert info.num_classes == 102 and info.source.startswith("tfds:oxford_flowers102")
    assert info.splits["train"] == 20 and info.splits["test"] == 20
    assert run[0]["image"].shape == (4, 32, 32, 3) and run[0]["label"].dtype == np.int32
    for first, second in zip(run[7:], resumed):
        np.testing.assert_array_equal(first["image"], second["image"])
        np.testing.assert_array_equal(first["label"], second["label"])
    # A new order each epoch: the first batches of epochs 0, 1 and 2 differ.
    assert not np.array_equal(run[0]["label"], run[5]["label"])
    assert not np.array_equal(run[5]["label"], run[10]["label"])
    assert [len(batches) for batches in evals] == [3, 3]  # 10 images a process, 4 rows a batch
    assert sum(batch["mask"].sum() for batches in evals for batch in batches) == 20


# --- bad input ------------------------------------------------------------------------------------------
def _folder_with(tmp_path, flowers_dir, bad_files: dict[str, bytes]) -> pathlib.Path:
    root = copy_images(flowers_dir, tmp_path / "root", classes=2, per_split={"train": 4, "test": 2})
    for name, content in bad_files.items():
        (root / "train" / "000" / name).write_bytes(content)
    return root


def test_bad_images_stop_with_their_paths_or_are_skipped(flowers_dir, tmp_path, caplog):
    good = (flowers_dir / "train" / "000").iterdir().__next__().read_bytes()
    root = _folder_with(tmp_path, flowers_dir, {
        "text.jpg": b"<html>404 not found</html>", "empty.jpg": b"",
        "truncated.jpg": good[:len(good) // 2]})
    config = make_config(root, batch_size=4)
    with pytest.raises(data.BadImageError) as caught:
        data.dataset_info(config.dataset)
    message = str(caught.value)
    for name in ("text.jpg", "empty.jpg", "truncated.jpg"):
        assert str(root / "train" / "000" / name) in message
    assert "skip_bad_images" in message and "3 image file(s)" in message
    assert caught.value.__cause__ is None  # no TensorFlow traceback attached
    config.dataset.skip_bad_images = True
    with caplog.at_level(logging.WARNING):
        info = data.dataset_info(config.dataset)
    assert info.splits["train"] == 8
    assert "Left out 3 unreadable image(s)" in caplog.text
    batches = take(data.train_batches(config, normalization=IMAGENET, process_index=0,
                                      process_count=1), 3)
    assert all(batch["image"].shape == (4, 64, 64, 3) for batch in batches)


def test_a_file_that_fails_mid_run_is_named(flowers_dir, tmp_path):
    # JPEG markers at both ends, garbage between: it passes the quick check, then fails to decode.
    root = _folder_with(tmp_path, flowers_dir, {
        "garbage.jpg": b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8 + b"\xff\xd9"})
    config = make_config(root, batch_size=9, augment=False)  # one batch holds every image
    assert data.dataset_info(config.dataset).splits["train"] == 9
    with pytest.raises(data.BadImageError, match="garbage.jpg") as caught:
        next(data.train_batches(config, normalization=IMAGENET, process_index=0, process_count=1))
    assert caught.value.paths == (str(root / "train" / "000" / "garbage.jpg"),)
    with pytest.raises(data.BadImageError, match="garbage.jpg"):
        list(data.eval_batches(config, split="train", normalization=IMAGENET, process_index=0,
                               process_count=1))


def test_grayscale_cmyk_and_alpha_images_become_rgb_as_pil_converts_them(flowers_dir, tmp_path):
    source = sorted((flowers_dir / "test" / "000").iterdir())[:5]
    folder_dir = tmp_path / "test" / "a"
    folder_dir.mkdir(parents=True)
    rgba = np.asarray(Image.open(source[2]).convert("RGBA")).copy()
    rgba[..., 3] = np.arange(rgba.shape[1]) % 256  # varying transparency
    Image.open(source[0]).convert("L").save(folder_dir / "gray.jpg")
    Image.open(source[1]).convert("CMYK").save(folder_dir / "cmyk.jpg")
    Image.fromarray(rgba).save(folder_dir / "alpha.png")
    Image.open(source[3]).convert("P").save(folder_dir / "palette.png")
    Image.open(source[4]).convert("LA").save(folder_dir / "gray_alpha.png")
    shutil.copytree(tmp_path / "test", tmp_path / "train")
    config = make_config(tmp_path, image_size=112, eval_batch_size=5, batch_size=5)
    paths = sources.resolve(config.dataset).read_split("test").paths
    images = next(data.eval_batches(config, normalization=IMAGENET, process_index=0,
                                    process_count=1))["image"]
    for image, path in zip(images, paths):
        assert np.abs(image - torchvision_eval(path, 112)).mean() < 0.0025, path
    train = next(data.train_batches(config, normalization=IMAGENET, process_index=0,
                                    process_count=1))
    assert np.isfinite(train["image"]).all() and train["image"].shape == (5, 112, 112, 3)


def test_empty_class_folder_and_empty_or_missing_split(flowers_dir, tmp_path, caplog):
    root = copy_images(flowers_dir, tmp_path / "root", classes=2, per_split={"train": 4, "test": 2})
    (root / "train" / "zzz_empty").mkdir()
    config = make_config(root, batch_size=4)
    with pytest.raises(data.DataError, match="hold no images: .*zzz_empty"):
        data.dataset_info(config.dataset)
    config.dataset.skip_bad_images = True
    with caplog.at_level(logging.WARNING):
        info = data.dataset_info(config.dataset)
    assert info.num_classes == 3 and info.splits["train"] == 8  # the class keeps its label
    assert "zzz_empty" in caplog.text
    (root / "validation" / "000").mkdir(parents=True)
    config.dataset.test_split = "validation"
    with pytest.raises(data.DataError, match=r"Split folder .*validation holds no images"):
        data.dataset_info(config.dataset)
    config.dataset.test_split = "testing"
    with pytest.raises(data.DatasetNotFoundError,
                       match=r"Split 'testing' not found.*splits under .*: test, train, validation"):
        data.dataset_info(config.dataset)


# --- missing data sets ------------------------------------------------------------------------------
def test_missing_data_sets_say_where_to_get_them(tmp_path):
    config = default_config.get_config()
    config.dataset.name, config.dataset.data_dir = "fgvc_aircraft", str(tmp_path)
    config.dataset.train_split = "train+validation"
    with pytest.raises(data.DatasetNotFoundError) as caught:
        data.dataset_info(config.dataset)
    message = str(caught.value)
    assert "fgvc-aircraft-2013b.tar.gz" in message and "robots.ox.ac.uk" in message
    assert "scripts/prepare_fgvc_aircraft.py" in message
    assert str(tmp_path / "fgvc_aircraft") in message
    config.dataset.name = "cars196"  # tfds' download is dead: straight to the manual steps
    with pytest.raises(data.DatasetNotFoundError, match="scripts/prepare_stanford_cars.py"):
        data.dataset_info(config.dataset)
    config.dataset.name = f"folder:{tmp_path / 'nowhere'}"
    with pytest.raises(data.DatasetNotFoundError, match="nowhere does not exist.*<split>/<label>"):
        data.dataset_info(config.dataset)
    config.dataset.name = "no_such_data_set"
    with pytest.raises(data.DatasetNotFoundError, match="Unknown data set 'no_such_data_set'"):
        data.dataset_info(config.dataset)

