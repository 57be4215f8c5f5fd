"""SGD as torch.optim.SGD defines it, as an optax chain whose hyperparameters live in its state,
plus the paper's weight-decay modes, decay masks and per-group learning-rate multipliers."""
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

# The values side (effective hyperparameters, schedules, config resolution) lives in
# jaxft.hyperparams; it is re-exported here so that callers need only jaxft.optim.
from jaxft.hyperparams import (  # noqa: F401
    SCHEDULE_NAMES, Schedule, check, concrete, constant_schedule, cosine_schedule,
    effective_learning_rate, effective_weight_decay, flatten_prefixes, learning_rate_from_effective,
    linear_warmup, multi_step_schedule, resolve_hyperparameters, resolve_point, schedule_from_config,
    schedule_steps, step_decay_schedule, weight_decay_from_effective)

WEIGHT_DECAY_MODES = ("l2", "decoupled", "l2sp")
DECAY_MASK_PRESETS = ("all", "kernels")
# The hyperparameters a state holds (momentum unless runtime_momentum=False), each with the rule
# (see hyperparams.check) a new value must satisfy.
_RUNTIME_RULES = {"learning_rate": "positive", "momentum": "momentum", "weight_decay": "nonnegative",
                  "head_weight_decay": "nonnegative"}
RUNTIME_HYPERPARAMS = tuple(_RUNTIME_RULES)


# ---------------------------------------------------------------------------------------------
# Per-leaf settings (decay mask, lr multiplier, anchor), resolved from the tree's structure: static
# at trace time, so an undecayed or frozen leaf costs nothing and stays bit-for-bit untouched.

def _leaf_paths(tree) -> list[str]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [jax.tree_util.keystr(path, simple=True, separator="/") for path, _ in flat]


def _like(tree, leaves: list):
    """A tree of the given per-leaf values in `tree`'s structure."""
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(tree), leaves)


def _bad_mask(decay_mask) -> ValueError:
    return ValueError(f"decay_mask must be one of {DECAY_MASK_PRESETS}, a pytree of bools or a "
                      f"callable, got {decay_mask!r}")


def _decay_mask_tree(decay_mask, params):
    """params' structure with a static bool (or a possibly traced bool array) per leaf."""
    paths = _leaf_paths(params)
    if decay_mask == "all":
        return _like(params, [True] * len(paths))
    if decay_mask == "kernels":  # Flax names conv/dense weights 'kernel'; BN and biases stay free
        return _like(params, [path.split("/")[-1] == "kernel" for path in paths])
    if isinstance(decay_mask, str):
        raise _bad_mask(decay_mask)
    mask = decay_mask(params) if callable(decay_mask) else decay_mask
    try:
        leaves = jax.tree_util.tree_structure(params).flatten_up_to(jax.tree.broadcast(mask, params))
    except (ValueError, TypeError) as error:
        raise ValueError(f"decay_mask does not match the parameters' structure: {error}") from None
    return _like(params, [bool(m) if isinstance(m, (bool, np.bool_)) else jnp.asarray(m, bool)
                          for m in leaves])


def _matches(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")  # 'fc' must not match 'fc2'


def _multiplier_tree(lr_multipliers: dict[str, float], tree):
    """The longest (most specific) matching prefix decides each leaf's multiplier."""
    paths = _leaf_paths(tree)
    unmatched = [p for p in lr_multipliers if not any(_matches(path, p) for path in paths)]
    if unmatched:
        raise ValueError(f"lr_multipliers prefixes {unmatched} match no parameter; "
                         f"paths look like {paths[:4]}")
    multipliers = []
    for path in paths:
        matching = [p for p in lr_multipliers if _matches(path, p)]
        multipliers.append(lr_multipliers[max(matching, key=len)] if matching else 1.0)
    return _like(tree, multipliers)


def _aligned_anchor(params, anchor_params, head_name):
    """The anchor in params' structure: the pretrained leaf, or optax.MaskedNode() for a leaf of
    the new head (under top-level key head_name, or absent from the anchor)."""
    anchor_by_path = dict(zip(_leaf_paths(anchor_params), jax.tree_util.tree_leaves(anchor_params)))
    paths = _leaf_paths(params)
    if head_name is not None and not any(p.split("/")[0] == head_name for p in paths):
        raise ValueError(f"head_name {head_name!r} is no top-level parameter key; "
                         f"paths look like {paths[:4]}")
    if not any(p in anchor_by_path for p in paths):
        raise ValueError(f"anchor_params shares no parameter path with params: "
                         f"{list(anchor_by_path)[:4]} vs {paths[:4]}")
    aligned = []
    for path, leaf in zip(paths, jax.tree_util.tree_leaves(params)):
        if path.split("/")[0] == head_name or path not in anchor_by_path:
            aligned.append(optax.MaskedNode())
        elif jnp.shape(anchor_by_path[path]) != jnp.shape(leaf):
            raise ValueError(f"anchor_params[{path!r}] has shape {jnp.shape(anchor_by_path[path])}, "
                             f"the parameter {jnp.shape(leaf)}; pass head_name to treat that "
                             "subtree as the new head")
        else:
            aligned.append(jnp.asarray(anchor_by_path[path], jnp.result_type(leaf)))
    return _like(params, aligned)


def _as_scalar(value, dtype):
    return jnp.asarray(value).astype(dtype)  # torch casts each alpha to the tensor's dtype too


def _masked(mask, decayed, undecayed):
    if isinstance(mask, bool):
        return decayed if mask else undecayed
    return jnp.where(mask, decayed, undecayed)


# ---------------------------------------------------------------------------------------------
# The chain's links. Hyperparameters arrive as arguments, from inject_hyperparams' state.

class WeightDecayState(NamedTuple):
    anchor: Any  # l2sp: the pretrained weights in params' structure (MaskedNode for the head)


def _add_weight_decay(weight_decay, head_weight_decay, decay_mask, anchor_params, head_name):
    """direction += wd * w, or for L2-SP wd * (w - w0) and head_wd * w on the head. Before
    momentum this is torch's L2; after momentum it is SGDW's decoupled decay (scaled by lr_t)."""
    toward_anchor = anchor_params is not None

    def init(params):
        if not toward_anchor:
            return WeightDecayState(anchor=())
        return WeightDecayState(anchor=_aligned_anchor(params, anchor_params, head_name))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("weight decay needs params: call tx.update(grads, state, params)")

        def decay(g, w, anchor, mask):
            if not toward_anchor:
                decayed = g + _as_scalar(weight_decay, g.dtype) * w
            elif isinstance(anchor, optax.MaskedNode):
                decayed = g + _as_scalar(head_weight_decay, g.dtype) * w
            else:
                decayed = g + _as_scalar(weight_decay, g.dtype) * (w - anchor)
            return _masked(mask, decayed, g)

        anchor = state.anchor if toward_anchor else params  # plain L2 never reads it
        mask = _decay_mask_tree(decay_mask, params)
        return jax.tree.map(decay, updates, params, anchor, mask), state

    return optax.GradientTransformation(init, update)


class TorchMomentumState(NamedTuple):
    count: jax.Array
    momentum_buffer: Any  # params-shaped; () when momentum is a static 0


def _torch_momentum(momentum, dampening: float, nesterov: bool, keep_buffer: bool):
    """torch's rule: buf = g on the first step, then buf = m * buf + (1 - dampening) * g; the
    direction is buf, or g + m * buf with Nesterov. m = 0 means plain g, as in torch, which keeps
    no buffer then (a runtime m keeps running the buffer but ignores it while m = 0)."""

    def init(params):
        buffer = jax.tree.map(jnp.zeros_like, params) if keep_buffer else ()
        return TorchMomentumState(count=jnp.zeros([], jnp.int32), momentum_buffer=buffer)

    def update(updates, state, params=None):
        if not keep_buffer:
            return updates, state
        first_step = state.count == 0

        def accumulate(g, buffer):
            decayed = _as_scalar(momentum, g.dtype) * buffer + _as_scalar(1 - dampening, g.dtype) * g
            return jnp.where(first_step, g, decayed)

        def direction(g, buffer):
            m = _as_scalar(momentum, g.dtype)
            return jnp.where(m == 0, g, g + m * buffer if nesterov else buffer)

        buffers = jax.tree.map(accumulate, updates, state.momentum_buffer)
        directions = jax.tree.map(direction, updates, buffers)
        return directions, TorchMomentumState(optax.safe_increment(state.count), buffers)

    return optax.GradientTransformation(init, update)


class ScaleByLearningRateState(NamedTuple):
    count: jax.Array  # updates applied so far: the argument of the multiplier schedule
    learning_rate: jax.Array  # base rate * schedule of the latest update (of the first, before it)


def _scale_by_learning_rate(learning_rate, lr_schedule, lr_multipliers):
    """update = -(base lr * schedule(step) * group multiplier) * direction; multiplier 0 freezes."""

    def scheduled_rate(count):
        rate = learning_rate if lr_schedule is None else learning_rate * lr_schedule(count)
        return jnp.asarray(rate).astype(jnp.result_type(learning_rate))

    def init(params):
        _multiplier_tree(lr_multipliers, params)  # an unknown prefix fails here, early
        count = jnp.zeros([], jnp.int32)
        return ScaleByLearningRateState(count=count, learning_rate=scheduled_rate(count))

    def update(updates, state, params=None):
        rate = scheduled_rate(state.count)

        def scale(d, multiplier):
            if multiplier == 0:
                return jnp.zeros_like(d)
            return _as_scalar(-(rate * multiplier), d.dtype) * d

        updates = jax.tree.map(scale, updates, _multiplier_tree(lr_multipliers, updates))
        return updates, ScaleByLearningRateState(optax.safe_increment(state.count), rate)

    return optax.GradientTransformation(init, update)


# ---------------------------------------------------------------------------------------------
# The optimizer.

def sgd(learning_rate, momentum=0.0, *, nesterov=False, dampening=0.0, weight_decay=0.0,
        weight_decay_mode="l2", decay_mask=None, anchor_params=None, head_weight_decay=0.01,
        head_name=None, lr_schedule: Schedule | None = None, lr_multipliers=None,
        runtime_momentum=True) -> optax.GradientTransformationExtraArgs:
    """torch.optim.SGD (momentum, dampening, Nesterov, L2 weight decay) as an optax chain, with
    SGDW ('decoupled') and L2-SP ('l2sp') weight decay, decay masks and per-group lr multipliers.

    learning_rate, momentum, weight_decay and head_weight_decay (used by l2sp only; always there,
    so every mode has one state layout) live in the state: read them with `get_hyperparams`,
    change them with `set_hyperparams`, one value per point of a vmapped state. The state holds
    the *base* rate; lr_schedule (step -> multiplier) scales it.
    A callable learning_rate is evaluated at each step (times lr_schedule) and is read-only.
    Memory: a params-sized momentum buffer, also at m = 0 so that m can change at runtime;
    runtime_momentum=False makes m static and drops the buffer when m = 0. 'l2sp' keeps the
    anchor (pretrained weights) in the state: one more params-sized copy (per point, stacked).
    Nesterov needs dampening = 0 as in torch; at m = 0 it is plain SGD (torch refuses m = 0).
    decay_mask: 'all' or None (torch, the paper), 'kernels', a pytree (prefix) of bools, or a
    callable params -> such a pytree. lr_multipliers: {'fc': 10.0, 'layer4/0': 2.0}, by top-level
    key or '/'-joined path prefix; the longest matching prefix wins, 0 freezes.
    """
    decay_mask = "all" if decay_mask is None else decay_mask
    if not callable(learning_rate):
        check("learning_rate", learning_rate, "positive")
    check("momentum", momentum, "momentum")
    check("dampening", dampening, "unit")
    check("weight_decay", weight_decay, "nonnegative")
    check("head_weight_decay", head_weight_decay, "nonnegative")
    if weight_decay_mode not in WEIGHT_DECAY_MODES:
        raise ValueError(f"weight_decay_mode must be one of {WEIGHT_DECAY_MODES}, "
                         f"got {weight_decay_mode!r}")
    if nesterov and dampening != 0:
        raise ValueError("nesterov requires dampening = 0 (as torch.optim.SGD)")
    if isinstance(decay_mask, str) and decay_mask not in DECAY_MASK_PRESETS:
        raise _bad_mask(decay_mask)
    if weight_decay_mode == "l2sp" and anchor_params is None:
        raise ValueError("weight_decay_mode='l2sp' needs anchor_params (the pretrained weights)")
    if weight_decay_mode != "l2sp" and (anchor_params is not None or head_name is not None):
        raise ValueError("anchor_params and head_name apply only to weight_decay_mode='l2sp'")
    multipliers = flatten_prefixes(lr_multipliers or {})
    for prefix, multiplier in multipliers.items():
        check(f"lr_multipliers[{prefix!r}]", multiplier, "nonnegative")
    static_momentum, dampening = _float(momentum), float(dampening)
    keep_buffer = runtime_momentum or concrete(momentum) is None or np.any(concrete(momentum) != 0)
    anchor = anchor_params if weight_decay_mode == "l2sp" else None

    def build(learning_rate, weight_decay, momentum=None, head_weight_decay=None):
        decay = _add_weight_decay(weight_decay, head_weight_decay, decay_mask, anchor, head_name)
        momentum = static_momentum if momentum is None else momentum
        return optax.chain(
            *([decay] if weight_decay_mode != "decoupled" else []),  # torch: before momentum
            _torch_momentum(momentum, dampening, nesterov, keep_buffer),
            *([decay] if weight_decay_mode == "decoupled" else []),  # SGDW: after it
            _scale_by_learning_rate(learning_rate, lr_schedule, multipliers),
        )

    runtime = {"learning_rate": learning_rate if callable(learning_rate) else _float(learning_rate),
               "weight_decay": _float(weight_decay)}
    if runtime_momentum:
        runtime["momentum"] = static_momentum
    runtime["head_weight_decay"] = _float(head_weight_decay)
    return optax.inject_hyperparams(build)(**runtime)


def _float(value):
    """Python numbers become floats (inject_hyperparams would keep an int lr as an int)."""
    return float(value) if isinstance(value, (int, float, np.number)) else jnp.asarray(value, float)


# ---------------------------------------------------------------------------------------------
# Runtime hyperparameters.

_INJECT_STATES = (optax.InjectStatefulHyperparamsState, optax.InjectHyperparamsState)


def _our_state(opt_state):
    """The one inject_hyperparams state in opt_state that wraps jaxft.optim.sgd's chain."""
    is_inject = lambda x: isinstance(x, _INJECT_STATES)  # noqa: E731
    is_ours = lambda x: isinstance(x, ScaleByLearningRateState)  # noqa: E731
    inner = lambda node: jax.tree_util.tree_leaves(node.inner_state, is_leaf=is_ours)  # noqa: E731
    found = [node for node in jax.tree_util.tree_leaves(opt_state, is_leaf=is_inject)
             if is_inject(node) and any(map(is_ours, inner(node)))]
    if len(found) != 1:
        raise ValueError(f"expected one jaxft.optim.sgd state inside opt_state, found {len(found)}")
    return found[0]


def get_hyperparams(opt_state) -> dict:
    """The runtime hyperparameters (base learning_rate, momentum, weight_decay, ...) in the state;
    arrays with a leading axis for a stacked (vmapped) state."""
    return dict(_our_state(opt_state).hyperparams)


def current_learning_rate(opt_state) -> jax.Array:
    """The rate of the latest update: base learning_rate * schedule(step), before per-group
    multipliers (before any update, the rate the first one will use)."""
    is_ours = lambda x: isinstance(x, ScaleByLearningRateState)  # noqa: E731
    inner = jax.tree_util.tree_leaves(_our_state(opt_state).inner_state, is_leaf=is_ours)
    return next(node for node in inner if is_ours(node)).learning_rate


def set_hyperparams(opt_state, **values):
    """A copy of opt_state with new hyperparameter values: scalars, or arrays with one value per
    point of a stacked state (a scalar is broadcast to every point). Dtypes and shapes are kept,
    so the compiled train step is reused."""
    state = _our_state(opt_state)
    hyperparams = dict(state.hyperparams)
    for name, value in values.items():
        if name in state.hyperparams_states:
            raise ValueError(f"{name} follows a schedule given to sgd() and cannot be set at runtime")
        if name not in hyperparams:
            raise ValueError(f"unknown hyperparameter {name!r}; this state holds {sorted(hyperparams)}")
        check(name, value, _RUNTIME_RULES[name])
        old = hyperparams[name]
        try:
            hyperparams[name] = jnp.broadcast_to(jnp.asarray(value, old.dtype), jnp.shape(old))
        except ValueError:
            raise ValueError(f"{name} has shape {jnp.shape(value)}, the state {jnp.shape(old)}; a value "
                             "per grid point needs a stacked state (jax.vmap(tx.init))") from None
    new_state = state._replace(hyperparams=hyperparams)
    return jax.tree_util.tree_map(lambda node: new_state if node is state else node, opt_state,
                                  is_leaf=lambda x: isinstance(x, _INJECT_STATES))


# ---------------------------------------------------------------------------------------------
# From configs/default.py's config.optimizer and config.schedule.

def from_config(optimizer_config, schedule_config, *, steps_per_epoch: int, total_steps: int,
                params=None, anchor_params=None, head_name=None, runtime_momentum=True):
    """(tx, resolved): the SGD chain configs/default.py describes, and its resolved plain values
    (learning_rate, momentum, weight_decay, effective_*, the schedule in steps, ...). Given
    params, the parameter-dependent settings (lr_multipliers, anchor, head_name) are checked now.
    anchor_params and head_name are used by weight_decay_mode='l2sp' only (ignored otherwise)."""
    resolved = resolve_hyperparameters(optimizer_config)
    lr_schedule = schedule_from_config(schedule_config, steps_per_epoch=steps_per_epoch,
                                       total_steps=total_steps)
    l2sp = resolved["weight_decay_mode"] == "l2sp"
    if l2sp and anchor_params is None:
        raise ValueError("config.optimizer.weight_decay_mode='l2sp' needs the pretrained weights: "
                         "pass anchor_params")
    try:  # every sgd() message starts with the argument's name, which is the config field's
        tx = sgd(resolved["learning_rate"], resolved["momentum"], nesterov=resolved["nesterov"],
                 dampening=resolved["dampening"], weight_decay=resolved["weight_decay"],
                 weight_decay_mode=resolved["weight_decay_mode"], decay_mask=resolved["decay_mask"],
                 anchor_params=anchor_params if l2sp else None, head_name=head_name if l2sp else None,
                 head_weight_decay=resolved["head_weight_decay"], lr_schedule=lr_schedule,
                 lr_multipliers=resolved["lr_multipliers"], runtime_momentum=runtime_momentum)
    except ValueError as error:
        raise ValueError(f"config.optimizer.{error}") from None
    if params is not None:
        try:
            jax.eval_shape(tx.init, params)
        except ValueError as error:
            raise ValueError(f"config.optimizer does not fit these parameters: {error}") from None
    resolved.update(schedule_steps(schedule_config, steps_per_epoch), total_steps=int(total_steps))
    return tx, resolved
