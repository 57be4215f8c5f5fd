"""Building blocks with PyTorch semantics shared by the networks: BatchNorm that updates its running
statistics as torch does, torch-style initialisers, TF-'SAME' padding arithmetic, stochastic depth and
a depthwise convolution that is fast on CPU as well as on accelerators."""
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn

PARAM_DTYPE = jnp.float32  # parameters and BatchNorm statistics stay float32 whatever the compute dtype

# torchvision's conv init: kaiming_normal_(mode='fan_out', nonlinearity='relu'), i.e. N(0, 2 / fan_out)
# with fan_out = out_channels * kh * kw; jax computes the same fan for an HWIO kernel.
kaiming_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def at_least_float32(dtype) -> jnp.dtype:
    """Where statistics, pooled features and logits are kept: float32 for bfloat16/float32 compute,
    float64 for float64 (which the exact gradient tests use)."""
    return jnp.promote_types(dtype, jnp.float32)


def torch_linear_init(fan_in: int):
    """torch nn.Linear's default init for both weight and bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    (kaiming_uniform_(a=sqrt(5)) on the weight reduces to exactly this bound.)"""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=PARAM_DTYPE):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding for one spatial dim: output ceil(size / stride), the odd pixel of
    padding goes after (bottom/right). Needed by networks whose weights were trained in TF."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class BatchNorm(nn.Module):
    """BatchNorm2d with torch semantics over the channel (last) axis.

    `momentum` is Flax-style (weight of the old running value): 0.9 here is torch's 0.1. Train mode
    normalises with the biased two-pass batch variance and folds the *unbiased* one into the running
    variance, as torch does. Statistics are computed in float32 (float64 for float64 inputs).
    """

    momentum: float = 0.9
    epsilon: float = 1e-5
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,), PARAM_DTYPE)
        bias = self.param("bias", nn.initializers.zeros, (features,), PARAM_DTYPE)
        running_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), PARAM_DTYPE)
        running_var = self.variable("batch_stats", "var", jnp.ones, (features,), PARAM_DTYPE)

        x32 = x.astype(at_least_float32(x.dtype))
        if not train:
            y = (x32 - running_mean.value) * (scale * jax.lax.rsqrt(running_var.value + self.epsilon)) + bias
            return y.astype(self.dtype)

        reduce_axes = tuple(range(x.ndim - 1))
        mean = jnp.mean(x32, axis=reduce_axes)
        centered = x32 - mean
        # two passes: the one-pass E[x^2] - E[x]^2 loses precision where |mean| >> std
        var = jnp.mean(jnp.square(centered), axis=reduce_axes)
        y = centered * (scale * jax.lax.rsqrt(var + self.epsilon)) + bias
        if not self.is_initializing():
            count = math.prod(x.shape[:-1])
            unbiased_var = var * (count / max(count - 1, 1))
            running_mean.value = self.momentum * running_mean.value + (1 - self.momentum) * mean
            running_var.value = self.momentum * running_var.value + (1 - self.momentum) * unbiased_var
        return y.astype(self.dtype)


def conv(features: int, kernel: int, stride: int = 1, padding: Sequence[tuple[int, int]] | int = 0,
         groups: int = 1, name: str | None = None, dtype=jnp.float32, kernel_init=kaiming_normal_fan_out):
    """A bias-free conv with explicit padding (an int means the same on every side, as torch's)."""
    if isinstance(padding, int):
        padding = [(padding, padding), (padding, padding)]
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=padding,
                   feature_group_count=groups, use_bias=False, kernel_init=kernel_init,
                   dtype=dtype, param_dtype=PARAM_DTYPE, name=name)


DEPTHWISE_IMPLEMENTATIONS = ("auto", "shifted", "grouped")


def resolve_depthwise_implementation(implementation: str, backend: str | None = None) -> str:
    """'shifted' or 'grouped' for `implementation` ('auto' picks by `backend`, default JAX's default
    backend): XLA:CPU's grouped convolution with one group per channel is 4-12x slower than a sum of
    shifted slices (its backward especially), while cuDNN and the TPU compiler have fast depthwise
    kernels that the slices would only get in the way of."""
    if implementation not in DEPTHWISE_IMPLEMENTATIONS:
        raise ValueError(f"depthwise implementation must be one of {DEPTHWISE_IMPLEMENTATIONS}, "
                         f"got {implementation!r}")
    if implementation != "auto":
        return implementation
    return "shifted" if (backend or jax.default_backend()) == "cpu" else "grouped"


def depthwise_conv_shifted(x, kernel, stride: int, padding: Sequence[tuple[int, int]]):
    """Depthwise convolution (cross-correlation, as lax's) of NHWC `x` with an HWIO [kh, kw, 1, C]
    `kernel`, written as the sum over taps (i, j) of a strided slice of the padded input times that
    tap's per-channel weight. XLA fuses it into elementwise loops (and the backward into pads and
    reductions), which on CPU beats its grouped-convolution kernel by far.

    Products and sums are in float32 (float64 for float64 inputs) and rounded to `x.dtype` once at
    the end, as a convolution's accumulator would; for bfloat16 inputs the products are exact."""
    accumulate_dtype = at_least_float32(x.dtype)
    kernel_h, kernel_w = kernel.shape[0], kernel.shape[1]
    padded = jnp.pad(x.astype(accumulate_dtype), ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    batch, padded_h, padded_w, channels = padded.shape
    out_h = (padded_h - kernel_h) // stride + 1
    out_w = (padded_w - kernel_w) // stride + 1
    taps = kernel.astype(accumulate_dtype)
    out = None
    for i in range(kernel_h):
        for j in range(kernel_w):
            limit = (batch, i + (out_h - 1) * stride + 1, j + (out_w - 1) * stride + 1, channels)
            patch = jax.lax.slice(padded, (0, i, j, 0), limit, (1, stride, stride, 1))
            term = patch * taps[i, j, 0]
            out = term if out is None else out + term
    return out.astype(x.dtype)


def depthwise_conv_grouped(x, kernel, stride: int, padding: Sequence[tuple[int, int]]):
    """The same depthwise convolution as one grouped `conv_general_dilated` (one group per channel),
    exactly what `nn.Conv(feature_group_count=C)` computes."""
    return jax.lax.conv_general_dilated(
        x, kernel, (stride, stride), [tuple(p) for p in padding],
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=x.shape[-1])


class DepthwiseConv(nn.Module):
    """A bias-free depthwise kxk convolution (channel multiplier 1) with explicit padding.

    Its one parameter, `kernel`, has nn.Conv(feature_group_count=C)'s name, HWIO shape [k, k, 1, C] and
    initialisation (same rng stream), so converted weights and checkpoints do not depend on which
    implementation runs: 'grouped' (lax's grouped convolution), 'shifted' (`depthwise_conv_shifted`)
    or 'auto' (shifted on CPU, grouped on GPU/TPU; see `resolve_depthwise_implementation`).
    """

    kernel_size: int
    stride: int = 1
    padding: Sequence[tuple[int, int]] = ((0, 0), (0, 0))
    implementation: str = "auto"
    dtype: jnp.dtype = jnp.float32
    kernel_init: Callable = kaiming_normal_fan_out

    @nn.compact
    def __call__(self, x):
        implementation = resolve_depthwise_implementation(self.implementation)
        channels = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (self.kernel_size, self.kernel_size, 1, channels),
                            PARAM_DTYPE)
        # the compute dtype for both, as nn.Conv's promote_dtype does
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        if implementation == "grouped":
            return depthwise_conv_grouped(x, kernel, self.stride, self.padding)
        return depthwise_conv_shifted(x, kernel, self.stride, self.padding)


def classifier(num_classes: int, fan_in: int, name: str, dtype=jnp.float32):
    """The linear head, initialised from torch nn.Linear's distribution so a new head starts as torch's."""
    init = torch_linear_init(fan_in)
    return nn.Dense(num_classes, kernel_init=init, bias_init=init, dtype=dtype,
                    param_dtype=PARAM_DTYPE, name=name)


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per example, scaling survivors by 1/keep."""

    rate: float

    @nn.compact
    def __call__(self, x, train: bool = False):
        if not train or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
        return jnp.where(mask, x / keep, jnp.zeros_like(x))
