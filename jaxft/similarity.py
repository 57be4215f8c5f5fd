"""Domain similarity (Cui et al., CVPR 2018) between a source and a target data set from a pretrained
network's class-mean features, and the fine-tuning search range it suggests (Li et al., Table 4)."""
from __future__ import annotations

import copy
import dataclasses
import math
import pathlib

import numpy as np

from jaxft import prototypes
from jaxft.prototypes import Prototypes, SimilarityError

DEFAULT_GAMMA = 0.01  # Cui et al.'s sim = exp(-gamma * EMD)
REFERENCE_MIN_SOURCE_IMAGES = 200  # their notebook drops source classes with fewer images
EMD_MAX_ITERATIONS = 10_000_000  # POT's 100,000 default stops short on 1000 x 100 classes


# --------------------------------------------------------------------------------------------
# Earth mover's distance and similarity.
# --------------------------------------------------------------------------------------------
def earth_movers_distance(source: Prototypes, target: Prototypes, *,
                          min_source_images: int = 0) -> float:
    """EMD between the two weighted prototype sets with Euclidean ground distance, solved
    exactly by POT's network simplex. Source classes with fewer than `min_source_images` images
    are left out first (Cui et al.'s reference notebook uses 200)."""
    import ot
    from scipy.spatial.distance import cdist

    source = _filtered_source(source, min_source_images)
    _check_comparable(source, target)
    # cdist, not ot.dist: ot.dist expands |a-b|^2 = a^2 + b^2 - 2ab, which loses digits on
    # large, close feature vectors.
    ground_distance = cdist(source.features, target.features, metric="euclidean")
    cost, log = ot.emd2(source.weights(), target.weights(), ground_distance,
                        numItermax=EMD_MAX_ITERATIONS, log=True)
    if log.get("result_code", 1) != 1:  # 1 is POT's OPTIMAL
        raise SimilarityError(f"the EMD solver did not reach the optimum: {log.get('warning')}")
    return float(cost)


def similarity_from_emd(emd: float, gamma: float = DEFAULT_GAMMA) -> float:
    """Cui et al.'s domain similarity exp(-gamma * EMD): 1 for identical sets, -> 0 far apart."""
    return math.exp(-gamma * emd)


def domain_similarity(source: Prototypes, target: Prototypes, *, gamma: float = DEFAULT_GAMMA,
                      min_source_images: int = 0) -> dict:
    """{'emd', 'similarity', 'source_classes', 'target_classes'} of `target` against `source`."""
    emd = earth_movers_distance(source, target, min_source_images=min_source_images)
    return {"emd": emd, "similarity": similarity_from_emd(emd, gamma),
            "source_classes": int(np.sum(source.counts >= min_source_images)),
            "target_classes": len(target.counts)}


def _filtered_source(source: Prototypes, min_source_images: int) -> Prototypes:
    if min_source_images <= 0:
        return source
    keep = source.counts >= min_source_images
    if not keep.any():
        raise SimilarityError(
            f"no source class has {min_source_images} images or more (the largest has "
            f"{source.counts.max()}): lower min_source_images or use a larger source split")
    return dataclasses.replace(source, features=source.features[keep], counts=source.counts[keep],
                               averaged=source.averaged[keep], labels=source.labels[keep])


def _check_comparable(source: Prototypes, target: Prototypes) -> None:
    if source.features.shape[1] != target.features.shape[1]:
        raise SimilarityError(
            f"source features have {source.features.shape[1]} dimensions, target features "
            f"{target.features.shape[1]}: both must come from the same network")
    for field in ("model", "weights", "image_size"):
        ours, theirs = source.key.get(field), target.key.get(field)
        if ours is not None and theirs is not None and ours != theirs:
            raise SimilarityError(
                f"source prototypes were computed with {field} {ours!r}, target prototypes with "
                f"{theirs!r}: compute both with the same network, weights and image size")


# --------------------------------------------------------------------------------------------
# What the similarity suggests for the search (Li et al., ICLR 2020, Table 4 and Table 2).
# --------------------------------------------------------------------------------------------
# Table 4: similarity to ImageNet with ImageNet ResNet-101 features, and the optimal eta'.
PAPER_TABLE4 = {
    "Caltech": (0.892, 0.005), "Dogs": (0.862, 0.001), "Birds": (0.860, 0.05),
    "Indoor": (0.856, 0.01), "Cars": (0.845, 0.5), "Flowers": (0.844, 0.1),
    "Aircraft": (0.840, 1.0),
}
# What the table's similarities were measured with. Other networks' features have other
# dimensions and norms, and other image sizes other features, so their EMDs are on other scales.
CALIBRATED_MODELS = ("resnet101",)
CALIBRATED_IMAGE_SIZE = 224
IMAGENET_NAMES = ("imagenet", "ilsvrc")  # a source whose name holds one of these is ImageNet
# Band edges between the table's two groups: Indoor (0.856) and above mostly had their optimum in
# [0.001, 0.01]; Cars (0.845) and below in [0.1, 1.0]. Nothing in the table falls in between.
SIMILAR_ABOVE = 0.855
DISSIMILAR_BELOW = 0.846
BANDS = {  # name -> (eta' range, momentum the paper's Table 2 favours there)
    "similar": ((0.001, 0.01), 0.0),
    "between": ((0.01, 0.1), 0.9),
    "dissimilar": ((0.1, 1.0), 0.9),
}
PAPER_SPAN = (0.001, 1.0)  # every optimal eta' of Table 4 lies in this span


def decade_values(low: float, high: float) -> list[float]:
    """The 1-2-5 values from low to high inclusive, e.g. 0.001..0.01 -> [0.001, 0.002, 0.005,
    0.01]: even steps in log scale, like the paper's learning rates 0.1, 0.05, 0.01, ..."""
    values = []
    exponent = math.floor(math.log10(low) + 1e-9)
    while True:
        for mantissa in (1, 2, 5):
            value = float(f"{mantissa}e{exponent}")
            if value > high * (1 + 1e-9):
                return values
            if value >= low * (1 - 1e-9):
                values.append(value)
        exponent += 1


def suggest_search_range(similarity: float, model: str, *, source: str = "imagenet2012",
                         gamma: float = DEFAULT_GAMMA, image_size: int | None = None) -> dict:
    """The effective learning rates eta' = eta / (1 - m) and the momentum the paper's results
    suggest for a target with this similarity to the source, with the basis of the suggestion:
    {'effective_learning_rates', 'momentum', 'range', 'band', 'applicable', 'basis'}. Only
    ImageNet ResNet-101 similarities (gamma 0.01, 224 px) are on the scale of the paper's Table 4;
    for anything else the whole span the paper found optimal comes back, applicable False."""
    mismatch = _uncalibrated(model, source, gamma, image_size)
    if mismatch:
        return {
            "effective_learning_rates": decade_values(*PAPER_SPAN), "momentum": 0.9,
            "range": PAPER_SPAN, "band": None, "applicable": False,
            "basis": (f"not calibrated: the paper's thresholds were measured with ImageNet "
                      f"ResNet-101 features at {CALIBRATED_IMAGE_SIZE} px and gamma "
                      f"{DEFAULT_GAMMA} (Table 4: {_table()}); this similarity comes from "
                      f"{mismatch}, so it is on another scale and no band can be read off it. "
                      f"Search the whole span the paper found optimal, eta' in "
                      f"[{PAPER_SPAN[0]}, {PAPER_SPAN[1]}], at the paper's default momentum 0.9.")}
    band = ("similar" if similarity >= SIMILAR_ABOVE
            else "dissimilar" if similarity < DISSIMILAR_BELOW else "between")
    (low, high), momentum = BANDS[band]
    table_values = [value for value, _ in PAPER_TABLE4.values()]
    outside = not min(table_values) <= similarity <= max(table_values)
    return {
        "effective_learning_rates": decade_values(low, high), "momentum": momentum,
        "range": (low, high), "band": band, "applicable": True,
        "basis": (f"Li et al. (ICLR 2020): the more similar target and source, the smaller the "
                  f"optimal eta'. Their Table 4 (ImageNet ResNet-101): {_table()}. Similarity "
                  f"{similarity:.3f} is {_band_reason(band)}, so search eta' in [{low}, {high}]"
                  f"{_momentum_reason(band)}. A suggestion from seven data sets (Birds, at "
                  f"0.860, had its optimum at 0.05), not a rule"
                  + ("; this similarity is outside the table's range 0.840-0.892." if outside
                     else "."))}


def _uncalibrated(model: str, source: str, gamma: float, image_size: int | None) -> str:
    """What differs from the paper's Table 4 setting, in words ('' when nothing does)."""
    differences = []
    if model not in CALIBRATED_MODELS:
        differences.append(f"{model} features")
    if not any(name in source.lower() for name in IMAGENET_NAMES):
        differences.append(f"source {source}")
    if gamma != DEFAULT_GAMMA:
        differences.append(f"gamma {gamma}")
    if image_size is not None and image_size != CALIBRATED_IMAGE_SIZE:
        differences.append(f"{image_size} px images")
    return ", ".join(differences)


def _table() -> str:
    return ", ".join(f"{name} {value:.3f} (eta' {eta:g})"
                     for name, (value, eta) in PAPER_TABLE4.items())


def _band_reason(band: str) -> str:
    return {
        "similar": f">= {SIMILAR_ABOVE} (Caltech, Dogs and Indoor: optima 0.001-0.01)",
        "dissimilar": f"< {DISSIMILAR_BELOW} (Cars, Flowers, Aircraft: optima 0.1-1.0)",
        "between": (f"between {DISSIMILAR_BELOW} and {SIMILAR_ABOVE}, where the table has no "
                    f"data set: the middle decade"),
    }[band]


def _momentum_reason(band: str) -> str:
    return {
        "similar": (" with momentum 0 (their Table 2: m = 0 beat 0.9 on Dogs, Caltech and Indoor "
                    "at the default lr; at equal eta' the two reach about the same error)"),
        "dissimilar": " with momentum 0.9 (their Table 2: 0.9 beat 0 on Cars, Aircraft and Flowers)",
        "between": " with the paper's default momentum 0.9",
    }[band]


def bracketing_axis(low: float, high: float) -> tuple[float, ...]:
    """The 1-2-5 values of [low, high] and one more on each side, so that an optimum at an edge
    of the suggested range still shows as an interior point of the grid."""
    inner = decade_values(low, high)
    wider = decade_values(low / 10, high * 10)
    first, last = wider.index(inner[0]), wider.index(inner[-1])
    return tuple(wider[max(0, first - 1):last + 2])


# --------------------------------------------------------------------------------------------
# Settings: `config.similarity` (optional; these defaults fill what it leaves out).
# --------------------------------------------------------------------------------------------
def default_similarity_config():
    """The `config.similarity` block with its defaults."""
    import ml_collections
    from ml_collections import config_dict

    settings = ml_collections.ConfigDict()
    # The source: a data set name as config.dataset.name takes it (tfds, registry or
    # 'folder:/root'), or a prototypes .npz this module wrote (e.g. ImageNet's, made once).
    settings.source = "imagenet2012"
    settings.source_split = "train"
    settings.source_data_dir = config_dict.placeholder(str)
    # N > 0: class means over N images per class (weights still the full class sizes); 0: all.
    settings.source_images_per_class = 0
    settings.target_images_per_class = 0
    settings.min_source_images = 0  # Cui et al.'s notebook: 200 (drops no ImageNet class)
    settings.gamma = DEFAULT_GAMMA
    settings.seed = 0  # which images a per-class sample takes
    return settings


def similarity_settings(config):
    """`config.similarity` over the defaults (a config without the block gets the defaults)."""
    settings = default_similarity_config()
    given = config.get("similarity") or {}
    for field, value in dict(given).items():
        if field not in settings:
            raise SimilarityError(f"unknown field config.similarity.{field}; known fields: "
                                  f"{', '.join(settings)}")
        settings[field] = value
    return settings


# --------------------------------------------------------------------------------------------
# A config's target against its source.
# --------------------------------------------------------------------------------------------
def source_prototypes(config, settings=None, *, recompute: bool = False) -> Prototypes:
    """The source's prototypes: a saved .npz as it is, or computed from (and cached for) the
    source data set with the config's network, weights and image size."""
    settings = settings or similarity_settings(config)
    if str(settings.source).endswith(".npz"):
        path = pathlib.Path(settings.source).expanduser()
        if not path.is_file():
            raise SimilarityError(f"source prototypes file {path} does not exist")
        return Prototypes.load(path)
    source_config = copy.deepcopy(config)
    source_config.dataset.name = settings.source
    source_config.dataset.train_split = settings.source_split
    source_config.dataset.data_dir = settings.source_data_dir
    return prototypes.dataset_prototypes(
        source_config, split=settings.source_split,
        images_per_class=settings.source_images_per_class, seed=settings.seed,
        recompute=recompute)


def config_similarity(config, *, recompute: bool = False) -> dict:
    """The similarity of config.dataset's train split to the configured source, its EMD, what
    it was computed from, and `suggestion` (see `suggest_search_range`)."""
    settings = similarity_settings(config)
    source = source_prototypes(config, settings, recompute=recompute)
    target = prototypes.dataset_prototypes(
        config, images_per_class=settings.target_images_per_class, seed=settings.seed,
        recompute=recompute)
    result = domain_similarity(source, target, gamma=settings.gamma,
                               min_source_images=settings.min_source_images)
    source_name = source.key.get("dataset", str(settings.source)).split("@")[0]
    result.update(
        source=source_name, target=target.key["dataset"], model=config.model,
        weights=config.pretrained, image_size=int(config.input.image_size), gamma=settings.gamma,
        source_images=int(source.averaged.sum()), target_images=int(target.averaged.sum()),
        suggestion=suggest_search_range(result["similarity"], config.model, source=source_name,
                                        gamma=settings.gamma,
                                        image_size=int(config.input.image_size)))
    return result


def centered_effective_learning_rates(config) -> tuple[float, ...]:
    """The grid's effective-learning-rate axis centred on what the target's similarity to the
    source suggests: the suggested decade's 1-2-5 values and one more on each side. Where the
    paper's thresholds do not apply (another network or source), the whole span the paper found
    optimal, with a warning."""
    from absl import logging

    suggestion = config_similarity(config)["suggestion"]
    if not suggestion["applicable"]:
        logging.warning("Similarity-centred grid: %s", suggestion["basis"])
        return tuple(suggestion["effective_learning_rates"])
    return bracketing_axis(*suggestion["range"])


# --------------------------------------------------------------------------------------------
# Command line: python -m jaxft.similarity --config configs/flowers.py [--source ...]
# --------------------------------------------------------------------------------------------
# flag -> config.similarity field it sets when given
FLAG_FIELDS = {
    "source": "source", "source_split": "source_split", "source_data_dir": "source_data_dir",
    "images_per_class": "source_images_per_class",
    "target_images_per_class": "target_images_per_class",
    "min_source_images": "min_source_images", "gamma": "gamma", "seed": "seed",
}


def describe(result: dict) -> str:
    """The command line's report of `config_similarity`'s result."""
    suggestion = result["suggestion"]
    rates = ", ".join(f"{rate:g}" for rate in suggestion["effective_learning_rates"])
    lines = [
        f"target: {result['target']} ({result['target_classes']} classes, "
        f"{result['target_images']} images averaged)",
        f"source: {result['source']} ({result['source_classes']} classes used, "
        f"{result['source_images']} images averaged)",
        f"features: {result['model']} ({result['weights']}) at {result['image_size']} px",
        f"EMD {result['emd']:.4f}   similarity exp(-{result['gamma']:g} * EMD) = "
        f"{result['similarity']:.4f}",
    ]
    if suggestion["applicable"]:
        lines.append(f"suggested search: eta' in [{suggestion['range'][0]:g}, "
                     f"{suggestion['range'][1]:g}] ({rates}), momentum {suggestion['momentum']:g}")
    else:
        lines.append(f"no calibrated suggestion; the paper's whole span: eta' in {rates}")
    lines.append(f"basis: {suggestion['basis']}")
    return "\n".join(lines)


def _define_flags():
    from absl import flags
    from ml_collections import config_flags

    config_flag = config_flags.DEFINE_config_file(
        "config", None, "Config file (configs/*.py); its dataset is the target.")
    flags.DEFINE_string("source", None, "Source data set (tfds name, registry name or "
                        "'folder:/root') or a prototypes .npz. Default: config.similarity.source "
                        "or imagenet2012.")
    flags.DEFINE_string("source_split", None, "Split of the source data set (default train).")
    flags.DEFINE_string("source_data_dir", None, "tfds data_dir of the source data set.")
    flags.DEFINE_integer("images_per_class", None, "Source prototypes from a sample of N images "
                         "per class (0: every image).")
    flags.DEFINE_integer("target_images_per_class", None, "The same for the target.")
    flags.DEFINE_integer("min_source_images", None, "Leave out source classes with fewer images "
                         f"(Cui et al.: {REFERENCE_MIN_SOURCE_IMAGES}; default 0).")
    flags.DEFINE_float("gamma", None, f"sim = exp(-gamma * EMD) (default {DEFAULT_GAMMA}).")
    flags.DEFINE_integer("seed", None, "Which images a per-class sample takes.")
    flags.DEFINE_bool("recompute", False, "Recompute prototypes even when cached.")
    flags.DEFINE_string("save_source", None, "Also write the source prototypes to this .npz "
                        "(pass it as --source later, on any machine, to skip the source pass).")
    flags.mark_flags_as_required(["config"])
    return config_flag


def _main(config_flag, argv) -> None:
    import sys

    from absl import app, flags

    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    config = config_flag.value
    try:
        settings = similarity_settings(config)
        for flag, field in FLAG_FIELDS.items():
            if flags.FLAGS[flag].value is not None:
                settings[field] = flags.FLAGS[flag].value
        with config.unlocked():
            config.similarity = settings
        if flags.FLAGS.save_source:
            source_prototypes(config, recompute=flags.FLAGS.recompute).save(
                pathlib.Path(flags.FLAGS.save_source).expanduser())
        print(describe(config_similarity(config, recompute=flags.FLAGS.recompute)))
    except _user_errors() as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def _user_errors() -> tuple[type[Exception], ...]:
    from jaxft import errors

    return (SimilarityError, *errors.USER_ERRORS)


if __name__ == "__main__":
    # torchvision crashes when imported after tensorflow on some machines: torch first.
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    except ImportError:
        pass
    import functools as _functools

    from absl import app as _app

    _app.run(_functools.partial(_main, _define_flags()))
