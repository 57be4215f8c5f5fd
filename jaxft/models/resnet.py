"""torchvision's ResNet family (V1.5: stride on the 3x3 conv) in Flax Linen, with submodule names that
mirror torchvision's state_dict keys (`layer1.0.conv1` -> params['layer1']['0']['conv1'])."""
import dataclasses
from functools import partial

import jax.numpy as jnp
import flax.linen as nn

from jaxft.models.layers import BatchNorm, at_least_float32, classifier, conv


@dataclasses.dataclass(frozen=True)
class ResNetSpec:
    block: str  # 'basic' or 'bottleneck'
    stage_sizes: tuple[int, int, int, int]
    groups: int = 1
    width_per_group: int = 64


RESNET_SPECS = {
    "resnet18": ResNetSpec("basic", (2, 2, 2, 2)),
    "resnet34": ResNetSpec("basic", (3, 4, 6, 3)),
    "resnet50": ResNetSpec("bottleneck", (3, 4, 6, 3)),
    "resnet101": ResNetSpec("bottleneck", (3, 4, 23, 3)),
    "resnet152": ResNetSpec("bottleneck", (3, 8, 36, 3)),
    "resnext50_32x4d": ResNetSpec("bottleneck", (3, 4, 6, 3), groups=32, width_per_group=4),
    "wide_resnet50_2": ResNetSpec("bottleneck", (3, 4, 6, 3), width_per_group=128),
}
EXPANSION = {"basic": 1, "bottleneck": 4}


class Downsample(nn.Module):
    """The projection shortcut: torchvision's `downsample` Sequential, hence children '0' and '1'."""

    features: int
    stride: int
    norm: partial
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x, train: bool):
        x = conv(self.features, 1, self.stride, name="0", dtype=self.dtype)(x)
        return self.norm(name="1")(x, train)


class BasicBlock(nn.Module):
    planes: int
    stride: int
    project: bool  # whether the shortcut needs a 1x1 projection
    norm: partial
    groups: int = 1
    width_per_group: int = 64
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        shortcut = x
        y = conv(self.planes, 3, self.stride, 1, name="conv1", dtype=self.dtype)(x)
        y = nn.relu(self.norm(name="bn1")(y, train))
        y = conv(self.planes, 3, 1, 1, name="conv2", dtype=self.dtype)(y)
        y = self.norm(name="bn2")(y, train)
        if self.project:
            shortcut = Downsample(self.planes, self.stride, self.norm, self.dtype, name="downsample")(x, train)
        return nn.relu(y + shortcut)


class Bottleneck(nn.Module):
    planes: int
    stride: int
    project: bool
    norm: partial
    groups: int = 1
    width_per_group: int = 64
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        width = int(self.planes * (self.width_per_group / 64.0)) * self.groups
        out_features = self.planes * EXPANSION["bottleneck"]
        shortcut = x
        y = conv(width, 1, name="conv1", dtype=self.dtype)(x)
        y = nn.relu(self.norm(name="bn1")(y, train))
        # V1.5: the stride sits on the 3x3 conv, not the first 1x1 (as torchvision and the paper's GluonCV V1b)
        y = conv(width, 3, self.stride, 1, groups=self.groups, name="conv2", dtype=self.dtype)(y)
        y = nn.relu(self.norm(name="bn2")(y, train))
        y = conv(out_features, 1, name="conv3", dtype=self.dtype)(y)
        y = self.norm(name="bn3")(y, train)
        if self.project:
            shortcut = Downsample(out_features, self.stride, self.norm, self.dtype, name="downsample")(x, train)
        return nn.relu(y + shortcut)


class ResNetStage(nn.Module):
    """torchvision's `layerN` Sequential: blocks named '0', '1', ..."""

    block: type
    num_blocks: int
    planes: int
    stride: int
    norm: partial
    groups: int
    width_per_group: int
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x, train: bool):
        expansion = EXPANSION["basic" if self.block is BasicBlock else "bottleneck"]
        for index in range(self.num_blocks):
            stride = self.stride if index == 0 else 1
            project = index == 0 and (stride != 1 or x.shape[-1] != self.planes * expansion)
            x = self.block(self.planes, stride, project, self.norm, self.groups, self.width_per_group,
                           self.dtype, name=str(index))(x, train)
        return x


class ResNet(nn.Module):
    """Input NHWC, already normalised with ImageNet mean/std. Returns float32 logits, or the
    global-pooled penultimate features with `return_features=True`."""

    spec: ResNetSpec
    num_classes: int
    dtype: jnp.dtype = jnp.float32
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x, train: bool = False, return_features: bool = False):
        norm = partial(BatchNorm, momentum=self.bn_momentum, epsilon=self.bn_epsilon, dtype=self.dtype)
        block = BasicBlock if self.spec.block == "basic" else Bottleneck
        x = x.astype(self.dtype)
        x = conv(64, 7, 2, 3, name="conv1", dtype=self.dtype)(x)
        x = nn.relu(norm(name="bn1")(x, train))
        # torch pads max-pool input with -inf; lax.reduce_window pads with the max identity, the same
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for stage, num_blocks in enumerate(self.spec.stage_sizes):
            x = ResNetStage(block, num_blocks, 64 * 2**stage, 1 if stage == 0 else 2, norm,
                            self.spec.groups, self.spec.width_per_group, self.dtype,
                            name=f"layer{stage + 1}")(x, train)
        features = jnp.mean(x.astype(at_least_float32(self.dtype)), axis=(1, 2))
        if return_features:
            return features
        head = classifier(self.num_classes, features.shape[-1], name="fc", dtype=self.dtype)
        return head(features.astype(self.dtype)).astype(at_least_float32(self.dtype))
