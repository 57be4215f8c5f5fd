"""In-graph image preprocessing with torchvision's semantics: decoding to RGB, RandomResizedCrop,
flip and ColorJitter for training; Resize(shorter side) + CenterCrop for evaluation.

Every random choice is a stateless function of a seed, so an image's augmentation depends only
on (config seed, its position in the stream) and a resumed run sees the same pixels.
"""
from __future__ import annotations

import math
from typing import Sequence

import tensorflow as tf

# libjpeg's accurate integer DCT: the one PIL uses, so decoded pixels equal PIL's bit for bit.
DCT_METHOD = "INTEGER_ACCURATE"
CROP_ATTEMPTS = 10  # torchvision's RandomResizedCrop tries 10 boxes, then falls back
GRAYSCALE_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale on tensors


# --- decoding ----------------------------------------------------------------------------------
def decode_rgb(encoded: tf.Tensor) -> tf.Tensor:
    """Any JPEG/PNG/GIF/BMP/WebP -> uint8 [h, w, 3]. Grayscale is repeated over the channels,
    CMYK converted, alpha dropped and a GIF's first frame kept: PIL's `convert('RGB')`, which
    torchvision's ImageFolder applies."""
    image = tf.cond(
        tf.io.is_jpeg(encoded),
        lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method=DCT_METHOD),
        lambda: tf.io.decode_image(encoded, channels=3, expand_animations=False))
    image.set_shape([None, None, 3])
    return image


def decode_random_crop(encoded: tf.Tensor, seed: tf.Tensor, scale: Sequence[float],
                       ratio: Sequence[float]) -> tf.Tensor:
    """A RandomResizedCrop box of the image, uint8. A JPEG decodes only that window (its header
    gives the size without decoding), which saves most of the decoding time for small crops."""

    def jpeg_crop():
        shape = tf.image.extract_jpeg_shape(encoded)
        box = random_resized_crop_box(shape[0], shape[1], seed, scale, ratio)
        return tf.io.decode_and_crop_jpeg(encoded, box, channels=3, dct_method=DCT_METHOD)

    def other_crop():
        image = decode_rgb(encoded)
        shape = tf.shape(image)
        top, left, height, width = tf.unstack(
            random_resized_crop_box(shape[0], shape[1], seed, scale, ratio))
        return image[top:top + height, left:left + width]

    image = tf.cond(tf.io.is_jpeg(encoded), jpeg_crop, other_crop)
    image.set_shape([None, None, 3])
    return image


# --- RandomResizedCrop ---------------------------------------------------------------------------
def random_resized_crop_box(height, width, seed: tf.Tensor, scale: Sequence[float],
                            ratio: Sequence[float]) -> tf.Tensor:
    """int32 [top, left, crop_height, crop_width] as torchvision's `RandomResizedCrop.get_params`
    draws it: up to 10 tries of an area fraction uniform in `scale` and an aspect ratio
    log-uniform in `ratio`, the first box that fits wins; if none fits, the largest centred box
    whose aspect ratio is clamped to `ratio`."""
    height = tf.cast(height, tf.int32)
    width = tf.cast(width, tf.int32)
    area_seed, ratio_seed, top_seed, left_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 4))
    area = tf.cast(height * width, tf.float64)
    target_area = area * tf.random.stateless_uniform(
        [CROP_ATTEMPTS], area_seed, scale[0], scale[1], dtype=tf.float64)
    aspect = tf.exp(tf.random.stateless_uniform(
        [CROP_ATTEMPTS], ratio_seed, math.log(ratio[0]), math.log(ratio[1]), dtype=tf.float64))
    # torchvision: int(round(sqrt(...))); Python's round and tf.round both round half to even.
    crop_widths = tf.cast(tf.round(tf.sqrt(target_area * aspect)), tf.int32)
    crop_heights = tf.cast(tf.round(tf.sqrt(target_area / aspect)), tf.int32)
    fits = ((crop_widths > 0) & (crop_heights > 0)
            & (crop_widths <= width) & (crop_heights <= height))
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
    crop_height, crop_width = crop_heights[first], crop_widths[first]
    # (When nothing fits the position is unused, but must still be drawable.)
    top = tf.random.stateless_uniform(
        [], top_seed, 0, tf.maximum(height - crop_height + 1, 1), dtype=tf.int32)
    left = tf.random.stateless_uniform(
        [], left_seed, 0, tf.maximum(width - crop_width + 1, 1), dtype=tf.int32)
    sampled = tf.stack([top, left, crop_height, crop_width])
    return tf.where(tf.reduce_any(fits), sampled, _fallback_box(height, width, ratio))


def _fallback_box(height: tf.Tensor, width: tf.Tensor, ratio: Sequence[float]) -> tf.Tensor:
    """torchvision's 'central crop' after ten misses: the whole image, narrowed to the nearest
    allowed aspect ratio."""
    in_ratio = tf.cast(width, tf.float64) / tf.cast(height, tf.float64)
    narrow_height = tf.cast(tf.round(tf.cast(width, tf.float64) / min(ratio)), tf.int32)
    narrow_width = tf.cast(tf.round(tf.cast(height, tf.float64) * max(ratio)), tf.int32)
    crop_height = tf.where(in_ratio < min(ratio), narrow_height, height)
    crop_width = tf.where(in_ratio > max(ratio), narrow_width, width)
    return tf.stack([(height - crop_height) // 2, (width - crop_width) // 2,
                     crop_height, crop_width])


# --- resizing, colour, normalisation ------------------------------------------------------------
def resize(image: tf.Tensor, size) -> tf.Tensor:
    """PIL's BILINEAR resize, which torchvision uses on PIL images: antialiased, horizontal pass
    first, each pass rounded to whole 8-bit levels. Emulating the two rounded passes brings the
    result within a level of PIL's on almost every pixel. float32 in [0, 255]."""
    height = tf.shape(image)[0]
    wide = _rounded_resize(image, tf.stack([height, tf.cast(size[1], tf.int32)]))
    return _rounded_resize(wide, size)


def _rounded_resize(image: tf.Tensor, size) -> tf.Tensor:
    resized = tf.image.resize(image, size, method="bilinear", antialias=True)
    return tf.round(tf.clip_by_value(resized, 0.0, 255.0))


def color_jitter(image: tf.Tensor, seed: tf.Tensor, strength: float) -> tf.Tensor:
    """torchvision `ColorJitter(brightness=s, contrast=s, saturation=s)` on a float [0, 1]
    image: each factor uniform in [max(0, 1 - s), 1 + s], the three applied in a random order."""
    factor_seed, order_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    factors = tf.random.stateless_uniform([3], factor_seed, max(0.0, 1.0 - strength),
                                          1.0 + strength)
    order = tf.argsort(tf.random.stateless_uniform([3], order_seed))
    return apply_color_jitter(image, factors, order)


def apply_color_jitter(image: tf.Tensor, factors: tf.Tensor, order: tf.Tensor) -> tf.Tensor:
    """Brightness, contrast and saturation (operations 0, 1, 2, with factors[op]) applied in
    `order`, as torchvision's adjust_brightness/contrast/saturation do on float tensors."""
    adjustments = [
        lambda img, f: _blend(img, tf.zeros_like(img), f),
        lambda img, f: _blend(img, tf.reduce_mean(_grayscale(img)), f),
        lambda img, f: _blend(img, _grayscale(img), f),
    ]
    for position in range(3):
        image = tf.switch_case(order[position], [
            lambda fn=fn, op=op, img=image: fn(img, factors[op])
            for op, fn in enumerate(adjustments)])
    return image


def _grayscale(image: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(image * tf.constant(GRAYSCALE_WEIGHTS, image.dtype), -1, keepdims=True)


def _blend(image: tf.Tensor, other, factor) -> tf.Tensor:
    return tf.clip_by_value(factor * image + (1.0 - factor) * other, 0.0, 1.0)


def normalize(image: tf.Tensor, mean: Sequence[float], std: Sequence[float]) -> tf.Tensor:
    """[0, 1] pixels -> (x - mean) / std per channel, float32."""
    return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


# --- the two recipes -----------------------------------------------------------------------------
def train_image(encoded: tf.Tensor, seed: tf.Tensor, *, image_size: int,
                scale: Sequence[float], ratio: Sequence[float], flip: bool,
                color_jitter_strength: float,
                mean: Sequence[float], std: Sequence[float]) -> tf.Tensor:
    """RandomResizedCrop(image_size, scale, ratio) + RandomHorizontalFlip + ColorJitter +
    ToTensor + Normalize, as float32 [image_size, image_size, 3]."""
    crop_seed, flip_seed, jitter_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    image = resize(decode_random_crop(encoded, crop_seed, scale, ratio), [image_size, image_size])
    image = image / 255.0
    if flip:
        image = random_flip(image, flip_seed)
    if color_jitter_strength > 0:
        image = color_jitter(image, jitter_seed, color_jitter_strength)
    return normalize(image, mean, std)


def random_flip(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Mirrors left-right with probability 1/2."""
    mirror = tf.random.stateless_uniform([], seed) < 0.5
    return tf.cond(mirror, lambda: tf.reverse(image, axis=[1]), lambda: image)


def eval_image(encoded: tf.Tensor, *, image_size: int, crop_fraction: float,
               mean: Sequence[float], std: Sequence[float]) -> tf.Tensor:
    """torchvision `Resize(int(image_size / crop_fraction)) + CenterCrop(image_size) + ToTensor
    + Normalize`, as float32 [image_size, image_size, 3]."""
    image = decode_rgb(encoded)
    shape = tf.shape(image)
    resized = resize(image, resized_shape(shape[0], shape[1], int(image_size / crop_fraction)))
    return normalize(center_crop(resized, image_size) / 255.0, mean, std)


def resized_shape(height, width, shorter_side: int) -> tf.Tensor:
    """torchvision's Resize(int): the shorter side becomes `shorter_side`, the longer one
    int(shorter_side * longer / shorter) (truncated, as torchvision does)."""
    height = tf.cast(height, tf.float64)
    width = tf.cast(width, tf.float64)
    longer = tf.cast(tf.floor(shorter_side * tf.maximum(height, width)
                              / tf.minimum(height, width)), tf.int32)
    return tf.where(width <= height, tf.stack([longer, shorter_side]),
                    tf.stack([shorter_side, longer]))


def center_crop(image: tf.Tensor, size: int) -> tf.Tensor:
    """torchvision's CenterCrop offsets: int(round((side - size) / 2)), half to even."""
    shape = tf.shape(image)
    top = tf.cast(tf.round(tf.cast(shape[0] - size, tf.float64) / 2.0), tf.int32)
    left = tf.cast(tf.round(tf.cast(shape[1] - size, tf.float64) / 2.0), tf.int32)
    cropped = image[top:top + size, left:left + size]
    cropped.set_shape([size, size, image.shape[-1]])
    return cropped
