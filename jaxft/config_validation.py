"""Checks a run's config up front, so a bad value is one message naming the field and what it
accepts, not a traceback from deep inside JAX."""
from __future__ import annotations

import ml_collections


class ConfigError(ValueError):
    """A config field holds a value jaxft cannot run with."""


DTYPES = ("float32", "bfloat16", "float64")
WEIGHT_DECAY_MODES = ("l2", "decoupled", "l2sp")
DECAY_MASKS = ("all", "kernels")
SCHEDULES = ("step", "cosine", "constant")


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError for the first field that is out of range."""
    from jaxft import models  # late import: models pulls in flax

    _one_of(config, "model", models.MODEL_NAMES)
    _one_of(config, "dtype", DTYPES)
    if config.dtype == "float64":
        import jax

        if not jax.config.jax_enable_x64:
            _fail("dtype", config.dtype, "'float32' or 'bfloat16', or 'float64' with 64-bit JAX "
                  "enabled (JAX_ENABLE_X64=1)")
    _positive(config, "input.image_size")
    _in_range(config, "input.crop_fraction", 0.0, 1.0, low_open=True)
    _positive(config, "batch_size")
    _positive(config, "eval_batch_size")
    if config.num_train_steps <= 0:
        _positive(config, "num_epochs")
    _in_range(config, "bn_momentum", 0.0, 1.0, high_open=True)
    _in_range(config, "optimizer.momentum", 0.0, 1.0, high_open=True)
    _one_of(config, "optimizer.weight_decay_mode", WEIGHT_DECAY_MODES)
    _one_of(config, "optimizer.decay_mask", DECAY_MASKS)
    _one_of(config, "schedule.name", SCHEDULES)
    if config.optimizer.effective_learning_rate is None:
        _positive(config, "optimizer.learning_rate")
    else:
        _positive(config, "optimizer.effective_learning_rate")
    if config.optimizer.effective_weight_decay is None:
        _non_negative(config, "optimizer.weight_decay")
    else:
        _non_negative(config, "optimizer.effective_weight_decay")
    for field in ("log_every_steps", "checkpoint_every_steps"):
        _positive(config, field)


def _get(config, field: str):
    value = config
    for part in field.split("."):
        value = value[part]
    return value


def _fail(field: str, value, expected: str):
    raise ConfigError(f"config.{field} = {value!r} is not valid: expected {expected}.")


def _one_of(config, field: str, allowed) -> None:
    value = _get(config, field)
    if value not in allowed:
        _fail(field, value, "one of " + ", ".join(repr(a) for a in allowed))


def _positive(config, field: str) -> None:
    value = _get(config, field)
    if not isinstance(value, (int, float)) or value <= 0:
        _fail(field, value, "a number > 0")


def _non_negative(config, field: str) -> None:
    value = _get(config, field)
    if not isinstance(value, (int, float)) or value < 0:
        _fail(field, value, "a number >= 0")


def _in_range(config, field, low, high, *, low_open=False, high_open=False) -> None:
    value = _get(config, field)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        _fail(field, value, f"a number in {interval}")
