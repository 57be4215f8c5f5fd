"""The networks by name: `get_model` builds one, `input_normalization` and `head_name` say how to feed
it and which params key is its classifier. Variables mirror the torch state_dict key for key."""
import jax.numpy as jnp
import flax.linen as nn

from jaxft.models.efficientnet import DEFAULT_DROP_PATH_RATE, DEFAULT_DROPOUT_RATE, EfficientNetLite
from jaxft.models.resnet import RESNET_SPECS, ResNet

MODEL_NAMES = tuple(RESNET_SPECS) + ("efficientnet_lite0",)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The EfficientNet-Lite checkpoint comes from TF, trained on (pixel - 127) / 128. Measured on 463 Caltech-101
# test images of classes with an ImageNet counterpart (224 px): top-1 68.0% with these vs 63.1% with
# ImageNet statistics.
TF_LITE_MEAN = (0.5, 0.5, 0.5)
TF_LITE_STD = (0.5, 0.5, 0.5)


def _check_name(name: str) -> None:
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}")


def get_model(name: str, num_classes: int, dtype=jnp.float32, bn_momentum: float = 0.9,
              dropout_rate: float | None = None, drop_path_rate: float | None = None,
              depthwise: str = "auto") -> nn.Module:
    """The Flax module for `name`. `bn_momentum` is Flax-style (0.9 == torch's 0.1). `dropout_rate` and
    `drop_path_rate` default (None) to the family's reference values; ResNets have neither. `depthwise`
    picks EfficientNet's depthwise-convolution implementation ('auto', 'shifted', 'grouped'; same
    parameters and results either way, see `layers.DepthwiseConv`)."""
    _check_name(name)
    if name == "efficientnet_lite0":
        return EfficientNetLite(
            num_classes=num_classes, dtype=dtype, bn_momentum=bn_momentum,
            dropout_rate=DEFAULT_DROPOUT_RATE if dropout_rate is None else dropout_rate,
            drop_path_rate=DEFAULT_DROP_PATH_RATE if drop_path_rate is None else drop_path_rate,
            depthwise=depthwise)
    for option, value in (("dropout_rate", dropout_rate), ("drop_path_rate", drop_path_rate)):
        if value:  # None or 0.0 both mean 'none', which is what torchvision's ResNets have
            raise ValueError(f"{name} has no {option}; leave it unset (or 0.0) for ResNets")
    return ResNet(RESNET_SPECS[name], num_classes=num_classes, dtype=dtype, bn_momentum=bn_momentum)


def input_normalization(name: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(mean, std) per RGB channel in [0, 1]-pixel units that the pretrained weights expect."""
    _check_name(name)
    if name.startswith("efficientnet_lite"):
        return TF_LITE_MEAN, TF_LITE_STD
    return IMAGENET_MEAN, IMAGENET_STD


def head_name(name: str) -> str:
    """The top-level params key of the classifier (replaced when fine-tuning to new classes)."""
    _check_name(name)
    return "_fc" if name.startswith("efficientnet_lite") else "fc"


__all__ = ["MODEL_NAMES", "get_model", "head_name", "input_normalization"]
