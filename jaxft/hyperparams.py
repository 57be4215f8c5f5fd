"""Fine-tuning hyperparameters as plain values: checks, the paper's effective learning rate and
weight decay, learning-rate multiplier schedules, and config.optimizer/config.schedule resolution."""
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

# Every schedule here maps the step (the number of updates already applied) to a *multiplier* of
# the base learning rate, so the base rate can live in the optimizer state and change at runtime.
Schedule = Callable[[jax.Array], jax.Array]

SCHEDULE_NAMES = ("step", "cosine", "constant")


# ---------------------------------------------------------------------------------------------
# Validation: one clear ValueError that names the offending argument or config field.

def concrete(value):
    """The value as numpy, or None when it is traced (then it cannot be checked here)."""
    try:
        return np.asarray(value, dtype=np.float64)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError, TypeError):
        return None


def check(name: str, value, rule: str) -> None:
    """One ValueError naming `name` unless every element of value is finite and 'positive',
    'nonnegative', a 'momentum' in [0, 1) or a 'unit' fraction in [0, 1]; traced values pass."""
    array = concrete(value)
    if array is None:
        return
    if rule == "positive" and not np.all(array > 0):
        raise ValueError(f"{name} must be > 0, got {value}")
    if rule == "nonnegative" and not np.all(array >= 0):
        raise ValueError(f"{name} must be >= 0, got {value}")
    if rule == "momentum" and not np.all((array >= 0) & (array < 1)):
        raise ValueError(f"{name} must be in [0, 1) (m = 1 never forgets a gradient), got {value}")
    if rule == "unit" and not np.all((array >= 0) & (array <= 1)):
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite, got {value}")


# ---------------------------------------------------------------------------------------------
# Effective hyperparameters (the paper's eta' = eta / (1 - m) and lambda' = lambda / eta).

def effective_learning_rate(learning_rate, momentum):
    """eta' = eta / (1 - m): the step size SGD with momentum m takes in the small-lr limit."""
    check("learning_rate", learning_rate, "positive")
    check("momentum", momentum, "momentum")
    return learning_rate / (1 - momentum)


def learning_rate_from_effective(effective_learning_rate, momentum):
    """eta = eta' * (1 - m), the inverse of `effective_learning_rate`."""
    check("effective_learning_rate", effective_learning_rate, "positive")
    check("momentum", momentum, "momentum")
    return effective_learning_rate * (1 - momentum)


def effective_weight_decay(weight_decay, learning_rate):
    """lambda' = lambda / eta: the paper's effective weight decay."""
    check("weight_decay", weight_decay, "nonnegative")
    check("learning_rate", learning_rate, "positive")
    return weight_decay / learning_rate


def weight_decay_from_effective(effective_weight_decay, learning_rate):
    """lambda = lambda' * eta, the inverse of `effective_weight_decay`."""
    check("effective_weight_decay", effective_weight_decay, "nonnegative")
    check("learning_rate", learning_rate, "positive")
    return effective_weight_decay * learning_rate


# ---------------------------------------------------------------------------------------------
# Multiplier schedules: step -> factor of the base learning rate.

def constant_schedule(factor: float = 1.0) -> Schedule:
    return lambda step: jnp.full(jnp.shape(step), factor)


def multi_step_schedule(milestones, decay_factor: float = 0.1) -> Schedule:
    """x decay_factor at each milestone step (torch MultiStepLR stepped once per update); the
    paper's recipe is milestones = (150, 250) epochs in steps, decay_factor = 0.1."""
    milestones = sorted(int(m) for m in milestones)

    def schedule(step):
        factor = jnp.ones(jnp.shape(step))
        for milestone in milestones:  # repeated products, as torch's chained updates compute them
            factor = jnp.where(step >= milestone, factor * decay_factor, factor)
        return factor

    return schedule


def step_decay_schedule(step_size: int, decay_factor: float = 0.1) -> Schedule:
    """x decay_factor every step_size steps (torch StepLR stepped once per update)."""
    if step_size <= 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    return lambda step: decay_factor ** (step // step_size)


def cosine_schedule(total_steps: int, warmup_steps: int = 0, final_factor: float = 0.0) -> Schedule:
    """Half a cosine from 1 to final_factor over the steps after warmup (torch
    CosineAnnealingLR with T_max = total_steps - warmup_steps, eta_min = final_factor * lr)."""
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"cosine needs 0 <= warmup_steps < total_steps, got {warmup_steps}, "
                         f"{total_steps}")

    def schedule(step):
        progress = jnp.clip((step - warmup_steps) / (total_steps - warmup_steps), 0.0, 1.0)
        return final_factor + (1 - final_factor) * 0.5 * (1 + jnp.cos(jnp.pi * progress))

    return schedule


def linear_warmup(schedule: Schedule, warmup_steps: int) -> Schedule:
    """Multiplies `schedule` by (step + 1) / warmup_steps for the first warmup_steps updates, so
    the first update is not wasted at rate 0 and update number warmup_steps runs at full rate."""
    if warmup_steps <= 0:
        return schedule
    return lambda step: schedule(step) * jnp.minimum(1.0, (step + 1) / warmup_steps)


# ---------------------------------------------------------------------------------------------
# config.schedule and config.optimizer as values.

def schedule_steps(schedule_config, steps_per_epoch: int) -> dict:
    """config.schedule's epochs as steps."""
    decay_epochs = schedule_config.get("decay_epochs", ())
    decay_epochs = (decay_epochs,) if np.isscalar(decay_epochs) else tuple(decay_epochs)
    warmup_epochs = schedule_config.get("warmup_epochs", 0.0) or 0.0
    check("config.schedule.decay_epochs", decay_epochs, "nonnegative")
    check("config.schedule.warmup_epochs", warmup_epochs, "nonnegative")
    return {"schedule": schedule_config.get("name", "constant"),
            "warmup_steps": int(round(warmup_epochs * steps_per_epoch)),
            "decay_steps": [int(round(epoch * steps_per_epoch)) for epoch in decay_epochs],
            "decay_factor": float(schedule_config.get("decay_factor", 0.1))}


def schedule_from_config(schedule_config, *, steps_per_epoch: int, total_steps: int) -> Schedule:
    """config.schedule ('step' with decay_epochs/decay_factor, 'cosine', 'constant'; then
    warmup_epochs of linear warmup) -> multiplier schedule. Epochs become steps; decay epochs
    count from the start of training, warmup included; cosine spans the steps after warmup."""
    if steps_per_epoch <= 0 or total_steps <= 0:
        raise ValueError(f"steps_per_epoch and total_steps must be > 0, got {steps_per_epoch}, "
                         f"{total_steps}")
    steps = schedule_steps(schedule_config, steps_per_epoch)
    if steps["schedule"] == "step":
        if not 0 < steps["decay_factor"] <= 1:
            raise ValueError(f"config.schedule.decay_factor must be in (0, 1], "
                             f"got {steps['decay_factor']}")
        schedule = multi_step_schedule(steps["decay_steps"], steps["decay_factor"])
    elif steps["schedule"] == "cosine":
        if steps["warmup_steps"] >= total_steps:
            raise ValueError("config.schedule.warmup_epochs must end before training does")
        schedule = cosine_schedule(total_steps, steps["warmup_steps"])
    elif steps["schedule"] == "constant":
        schedule = constant_schedule()
    else:
        raise ValueError(f"config.schedule.name must be one of {SCHEDULE_NAMES}, "
                         f"got {steps['schedule']!r}")
    return linear_warmup(schedule, steps["warmup_steps"])


def resolve_hyperparameters(optimizer_config) -> dict:
    """config.optimizer (or a dict of its fields) -> plain values, the eta' and lambda'
    placeholders resolved: lr = effective_learning_rate * (1 - m), wd = effective_weight_decay *
    lr where set; *_source says which field fixed each. Checks lr, m and wd; from_config checks
    the rest (through sgd's own checks)."""
    field = optimizer_config.get
    momentum = field("momentum", 0.0)
    check("config.optimizer.momentum", momentum, "momentum")
    learning_rate_source = "learning_rate"
    if field("effective_learning_rate") is not None:
        learning_rate_source = "effective_learning_rate"
        check("config.optimizer.effective_learning_rate", field("effective_learning_rate"), "positive")
        learning_rate = field("effective_learning_rate") * (1 - momentum)
    else:
        learning_rate = field("learning_rate")
        check("config.optimizer.learning_rate", learning_rate, "positive")
    weight_decay_source = "weight_decay"
    if field("effective_weight_decay") is not None:
        weight_decay_source = "effective_weight_decay"
        check("config.optimizer.effective_weight_decay", field("effective_weight_decay"), "nonnegative")
        weight_decay = field("effective_weight_decay") * learning_rate
    else:
        weight_decay = field("weight_decay", 0.0)
        check("config.optimizer.weight_decay", weight_decay, "nonnegative")
    return {
        "learning_rate": float(learning_rate), "momentum": float(momentum),
        "weight_decay": float(weight_decay),
        "effective_learning_rate": float(learning_rate / (1 - momentum)),
        "effective_weight_decay": float(weight_decay / learning_rate),
        "learning_rate_source": learning_rate_source, "weight_decay_source": weight_decay_source,
        "nesterov": bool(field("nesterov", False)), "dampening": float(field("dampening", 0.0)),
        "weight_decay_mode": field("weight_decay_mode", "l2"), "decay_mask": field("decay_mask", "all"),
        "head_weight_decay": float(field("head_weight_decay", 0.01)),
        "lr_multipliers": flatten_prefixes(field("lr_multipliers") or {}),
    }


_POINT_FIELDS = ("learning_rate", "effective_learning_rate", "momentum", "weight_decay",
                 "effective_weight_decay", "head_weight_decay")


def resolve_point(base: dict, point: Mapping) -> dict:
    """The resolved values of one grid point: `base` (from_config's dict) with the point's
    config.optimizer fields (any of _POINT_FIELDS) set, resolved as resolve_hyperparameters
    resolves that point's own config (a set effective_* field still wins over its raw twin)."""
    unknown = sorted(set(point) - set(_POINT_FIELDS))
    if unknown:
        raise ValueError(f"grid point fields {unknown} are not runtime hyperparameters {_POINT_FIELDS}")
    fields = dict(base, effective_learning_rate=None, effective_weight_decay=None)
    for source in (base["learning_rate_source"], base["weight_decay_source"]):
        fields[source] = base[source]
    fields.update(point)
    return {**base, **resolve_hyperparameters(fields)}


def flatten_prefixes(mapping, prefix: str = "") -> dict[str, float]:
    flat = {}
    for key, value in dict(mapping).items():
        name = f"{prefix}{str(key).strip('/')}"
        if hasattr(value, "items"):  # nested {'layer4': {'0': 2.0}} means 'layer4/0'
            flat.update(flatten_prefixes(value, f"{name}/"))
        else:
            flat[name] = float(value)
    return flat
