"""Fine-tuning runs: a train state, steps jit-compiled over a device mesh, evaluation, orbax
checkpoints that make a killed run resumable, clu metrics and each run's summary.

`train_and_evaluate` is one run. `train_points` trains K runs that differ only in runtime
hyperparameters (learning rate, momentum, weight decay) as one compiled program: their states
are stacked on a leading `grid` axis and every point sees the same batches.
"""
from __future__ import annotations

import dataclasses
import json
import logging as std_logging
import math
import os
import pathlib
import time
from typing import Any, Callable, Sequence

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from clu import metric_writers, periodic_actions

from jaxft import checkpoints, config_validation, convert, data, metrics, models, optim
from jaxft import mesh as mesh_lib

# 'float64' (needs JAX_ENABLE_X64=1) is for numerical studies and the equivalence tests: it makes
# parameters, optimizer state and compute float64, so float32 rounding cannot flip a ReLU.
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float64": jnp.float64}


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue from a step: a plain pytree orbax stores as it is."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array
    diverged: jax.Array  # a point whose loss went non-finite is frozen from then on


# --------------------------------------------------------------------------------------------
# Building blocks (also used by the parity tests and the similarity tool).
# --------------------------------------------------------------------------------------------
def create_model(config: ml_collections.ConfigDict, num_classes: int):
    return models.get_model(
        config.model, num_classes, dtype=DTYPES[config.dtype], bn_momentum=config.bn_momentum)


def initial_variables(config: ml_collections.ConfigDict, model, rng: jax.Array) -> dict:
    """Pretrained weights with a freshly initialised head for the target's classes, or a
    from-scratch initialisation when `config.pretrained` is empty."""
    size = config.input.image_size
    fresh = jax.jit(lambda key: model.init(key, jnp.zeros((1, size, size, 3)), train=False))(rng)
    fresh = jax.tree.map(np.asarray, flax.core.unfreeze(fresh))
    if config.pretrained:
        pretrained = convert.pretrained_variables(
            config.pretrained, config.model, cache_dir=os.path.expanduser(config.cache_dir))
        fresh = convert.replace_head(pretrained, fresh, config.model)
    if config.dtype == "float64":
        fresh = jax.tree.map(lambda x: x.astype(np.float64), fresh)
    return fresh


def use_compilation_cache(config: ml_collections.ConfigDict) -> pathlib.Path | None:
    """Turns on JAX's persistent compilation cache in `<config.cache_dir>/xla` when
    `config.compilation_cache` is set (returns the folder), unless JAX_COMPILATION_CACHE_DIR
    already names one. Call it before anything is compiled: JAX reads the setting once.
    Measured: each later point of a sequential EfficientNet-Lite0 grid starts its training
    about 30 s sooner on a CPU core."""
    if not config.get("compilation_cache", False):
        return None
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):  # the user's choice; JAX has read it
        folder = pathlib.Path(os.environ["JAX_COMPILATION_CACHE_DIR"])
    else:
        folder = pathlib.Path(os.path.expanduser(config.cache_dir)) / "xla"
        jax.config.update("jax_compilation_cache_dir", str(folder))
    # Every program is worth keeping: a grid compiles the same few again at every point.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return folder


def total_steps_for(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
    if config.num_train_steps > 0:
        return int(config.num_train_steps)
    return int(round(config.num_epochs * steps_per_epoch))


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy in float32 (float64 for float64 logits), as torch's
    `nn.CrossEntropyLoss`."""
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def initial_state(variables: dict, tx: optax.GradientTransformation,
                  rng: jax.Array) -> TrainState:
    """Step 0 of a run from `variables` (params, batch_stats) and a fresh optimizer state."""
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=variables["params"],
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(variables["params"]),
        rng=rng,
        diverged=jnp.zeros((), bool),
    )


def stack_points(state: TrainState, base: dict,
                 points: Sequence[dict]) -> tuple[TrainState, list[dict]]:
    """K copies of `state` (numpy, on a leading grid axis), each with its point's runtime
    hyperparameters set, and each point's resolved values (`optim.resolve_point(base, point)`,
    `base` being `optim.from_config`'s dict). A `jax.vmap(make_train_step(...), in_axes=(0,
    None))` steps all K on one batch; `tx` must keep its momentum buffer (runtime_momentum)."""
    resolved = [optim.resolve_point(base, point) for point in points]
    stacked = jax.tree.map(lambda x: np.stack([np.asarray(x)] * len(resolved)), state)
    values = {key: np.asarray([r[key] for r in resolved], np.float64)  # set_hyperparams casts
              for key in optim.RUNTIME_HYPERPARAMS}
    opt_state = optim.set_hyperparams(stacked.opt_state, **values)
    return stacked.replace(opt_state=opt_state), resolved


def make_train_step(model, tx: optax.GradientTransformation) -> Callable:
    """A pure `(state, batch) -> (state, metrics)`; the caller jits it (or vmaps, then jits).

    A step whose loss is not finite leaves the state as it was and marks it diverged, so a
    diverged point of a batched grid cannot disturb (or NaN-poison) the others."""

    def train_step(state: TrainState, batch: dict):
        dropout_rng = jax.random.fold_in(state.rng, state.step)

        def loss_fn(params):
            logits, updated = model.apply(
                {"params": params, "batch_stats": state.batch_stats},
                batch["image"], train=True, mutable=["batch_stats"],
                rngs={"dropout": dropout_rng})
            return cross_entropy(logits, batch["label"]), (logits, updated["batch_stats"])

        (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        # The loss is of the old parameters; the update that first overflows them is caught by
        # checking the new ones too, so a frozen state is the last finite one.
        diverged = state.diverged | ~jnp.isfinite(loss) | ~_all_finite(params)
        keep_old = lambda new, old: jax.tree.map(  # noqa: E731
            lambda n, o: jnp.where(diverged, o, n), new, old)
        new_state = state.replace(
            step=state.step + 1,
            params=keep_old(params, state.params),
            batch_stats=keep_old(batch_stats, state.batch_stats),
            opt_state=keep_old(opt_state, state.opt_state),
            diverged=diverged,
        )
        step_metrics = {
            "loss": loss,
            "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
            "learning_rate": optim.current_learning_rate(opt_state),
        }
        return new_state, step_metrics

    return train_step


def make_eval_step(model, num_classes: int) -> Callable:
    """A pure `(state, batch) -> (correct, count)` per class; padding (mask 0) counts nothing."""

    def eval_step(state: TrainState, batch: dict):
        logits = model.apply(
            {"params": state.params, "batch_stats": state.batch_stats},
            batch["image"], train=False)
        return metrics.per_class_counts(logits, batch["label"], batch["mask"], num_classes)

    return eval_step


# --------------------------------------------------------------------------------------------
# Runs.
# --------------------------------------------------------------------------------------------
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """Fine-tunes `config.model` on `config.dataset`, resuming from the newest checkpoint in
    `workdir`; returns (and writes to `workdir/summary.json`) the run's summary."""
    return _Runner(config, pathlib.Path(workdir), points=None).run()[0]


def train_points(config: ml_collections.ConfigDict, points: Sequence[dict],
                 workdir: str | os.PathLike) -> list[dict]:
    """Trains K points that differ only in runtime hyperparameters (keys of `points[i]`:
    any of learning_rate, momentum, weight_decay, head_weight_decay) in one compiled program.

    Returns one summary per point, equal (within float tolerance) to the point's own
    `train_and_evaluate`; writes them to `workdir/summary.json` as a list."""
    if not points:
        raise ValueError("train_points needs at least one point")
    return _Runner(config, pathlib.Path(workdir), points=list(points)).run()


@dataclasses.dataclass
class _Timer:
    """Training time without evaluation and checkpoint pauses, for images/s and the ETA."""

    seconds: float = 0.0
    steps: int = 0

    def rate(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else 0.0


class _Runner:
    """One run (points=None) or K stacked points; the loop is the same for both."""

    def __init__(self, config, workdir: pathlib.Path, points: list[dict] | None):
        config_validation.validate(config)
        self.config = config
        self.workdir = workdir
        self.points = points
        self.stacked = points is not None
        workdir.mkdir(parents=True, exist_ok=True)

    # -- set-up ------------------------------------------------------------------------------
    def _build(self):
        config = self.config
        num_points = len(self.points) if self.stacked else 1
        self.mesh = mesh_lib.grid_mesh(num_points if self.stacked else 1)
        self.info = data.dataset_info(config.dataset)
        self.steps_per_epoch = data.steps_per_epoch(config)
        self.total_steps = total_steps_for(config, self.steps_per_epoch)
        self.model = create_model(config, self.info.num_classes)
        self.normalization = models.input_normalization(config.model)

        init_rng, state_rng = jax.random.split(jax.random.PRNGKey(config.seed))
        variables = initial_variables(config, self.model, init_rng)
        tx, hyperparams = optim.from_config(
            config.optimizer, config.schedule,
            steps_per_epoch=self.steps_per_epoch, total_steps=self.total_steps,
            params=variables["params"], anchor_params=variables["params"],
            head_name=models.head_name(config.model), runtime_momentum=self.stacked)
        state = initial_state(variables, tx, state_rng)
        train_step = make_train_step(self.model, tx)
        eval_step = make_eval_step(self.model, self.info.num_classes)
        if self.stacked:
            state, self.hyperparams = stack_points(state, hyperparams, self.points)
            state = mesh_lib.shard_points(state, self.mesh)
            train_step = jax.vmap(train_step, in_axes=(0, None))
            eval_step = jax.vmap(eval_step, in_axes=(0, None))
        else:
            self.hyperparams = [hyperparams]
            state = mesh_lib.replicate(state, self.mesh)
        self.state = state
        self.train_step = jax.jit(train_step, donate_argnums=0)
        self.eval_step = jax.jit(eval_step)

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> list[dict]:
        started = time.time()
        quiet_library_logs()
        self._build()
        config, workdir = self.config, self.workdir
        manager = checkpoints.CheckpointManager(workdir / "checkpoints")
        self.state = manager.restore_or(self.state)
        start_step = int(np.asarray(mesh_lib.fetch(self.state.step)).reshape(-1)[0])
        logging.info(
            "%s on %s: %d classes, %d steps of %d images (%d steps per epoch), %d device(s)%s.",
            config.model, _dataset_label(config.dataset.name, self.info.source), self.info.num_classes,
            self.total_steps, config.batch_size, self.steps_per_epoch, self.mesh.devices.size,
            f", {len(self.points)} grid points in one program" if self.stacked else "")
        if start_step:
            logging.info("Resuming from the checkpoint at step %d of %d.",
                         start_step, self.total_steps)
        writer = tensorboard_writer(workdir)
        if start_step == 0 and not self.stacked:
            writer.write_hparams(_scalar_items(self.hyperparams[0]))
        progress = periodic_actions.ReportProgress(
            num_train_steps=self.total_steps, writer=writer,
            every_steps=config.log_every_steps, every_secs=None)

        log_every = config.log_every_steps
        # Checkpoints fall on log steps, so a resumed run's log intervals (and the final train
        # loss) are the ones an uninterrupted run has.
        save_every = -(-config.checkpoint_every_steps // log_every) * log_every
        last, timer = self._load_train_metrics(start_step)
        batches = data.train_batches(
            config, normalization=self.normalization, start_step=start_step)
        pending, tick, paused = [], None, 0.0
        diverged = bool(np.all(mesh_lib.fetch(self.state.diverged)))
        for step in range(start_step + 1, self.total_steps + 1):
            if diverged:
                break
            self.state, step_metrics = self.train_step(
                self.state, mesh_lib.global_batch(next(batches), self.mesh))
            pending.append(step_metrics)
            if tick is None:  # the first step compiles: time the steps after it
                jax.block_until_ready(step_metrics)
                tick, timed_from = time.perf_counter(), step
            progress(step)
            if step % log_every == 0 or step == self.total_steps:
                # fetch, not device_get: a point's metrics may live on another host's devices
                last = _mean_metrics(mesh_lib.fetch(pending))
                pending = []
                now = time.perf_counter()
                timer = _Timer(timer.seconds + now - tick - paused,
                               timer.steps + step - timed_from)
                tick, timed_from, paused = now, step, 0.0
                self._log(writer, step, last, timer)
                self._save_train_metrics(step, last, timer)
                diverged = bool(np.all(mesh_lib.fetch(self.state.diverged)))
                if diverged:
                    logging.warning("The loss is not finite at step %d: the run diverged; "
                                    "stopping.", step)
            if config.eval_every_steps > 0 and step % config.eval_every_steps == 0 \
                    and step != self.total_steps:
                pause_start = time.perf_counter()
                with progress.timed("eval"):
                    self._evaluate(writer, step)
                paused += time.perf_counter() - pause_start
            if step % save_every == 0:
                pause_start = time.perf_counter()
                manager.save(step, self.state)
                paused += time.perf_counter() - pause_start

        final_step = int(np.asarray(mesh_lib.fetch(self.state.step)).reshape(-1)[0])
        manager.save(final_step, self.state)
        manager.close()
        results = self._evaluate(writer, final_step)
        writer.flush()
        summaries = self._summaries(results, last, timer, final_step, time.time() - started)
        if jax.process_index() == 0:
            payload = summaries if self.stacked else summaries[0]
            write_json_atomically(workdir / "summary.json", payload)
        for summary in summaries:
            logging.info("Finished: test top-1 error %.2f%%, mean class error %.2f%%%s.",
                         summary["test_top1_error"], summary["test_mean_class_error"],
                         " (diverged)" if summary["diverged"] else "")
        return summaries

    def _save_train_metrics(self, step: int, last: dict, timer: "_Timer") -> None:
        """The latest log interval's means and the training time so far, so that a run resumed
        after its last step still reports them."""
        if jax.process_index() == 0:
            write_json_atomically(self.workdir / "train_metrics.json", {
                "step": step, "metrics": {k: np.asarray(v).tolist() for k, v in last.items()},
                "seconds": timer.seconds, "steps": timer.steps})

    def _load_train_metrics(self, start_step: int) -> tuple[dict, "_Timer"]:
        path = self.workdir / "train_metrics.json"
        if not start_step or not path.exists():
            return {}, _Timer()
        saved = json.loads(path.read_text())
        last = {k: np.asarray(v) for k, v in saved["metrics"].items()}
        return (last if saved["step"] == start_step else {}), _Timer(saved["seconds"],
                                                                     saved["steps"])

    def _evaluate(self, writer, step: int) -> list[dict]:
        """Test-set errors (%) of every point; NaN for a diverged point."""
        batches = data.eval_batches(
            self.config, normalization=self.normalization,
            batch_size=mesh_lib.eval_batch_size(self.config.eval_batch_size, self.mesh))
        correct = count = 0
        for batch in batches:
            batch_correct, batch_count = mesh_lib.fetch(
                self.eval_step(self.state, mesh_lib.global_batch(batch, self.mesh)))
            correct, count = correct + batch_correct, count + batch_count
        correct = np.asarray(correct).reshape(-1, self.info.num_classes)
        count = np.asarray(count).reshape(-1, self.info.num_classes)
        diverged = np.asarray(mesh_lib.fetch(self.state.diverged)).reshape(-1)
        results = []
        for index in range(correct.shape[0]):
            errors = metrics.errors_from_counts(correct[index], count[index])
            if diverged[index]:
                errors = {key: float("nan") for key in errors}
            results.append(errors)
            prefix = f"point_{index}/" if self.stacked else ""
            writer.write_scalars(step, {f"{prefix}test_{k}": v for k, v in errors.items()})
        return results

    def _log(self, writer, step: int, last: dict, timer: _Timer) -> None:
        images_per_sec = timer.rate() * self.config.batch_size
        scalars = {"images_per_sec": images_per_sec}
        for key, value in last.items():
            value = _summary_values(value)
            if self.stacked:
                scalars.update({f"point_{i}/{key}": float(v) for i, v in enumerate(value)})
            else:
                scalars[key] = float(value[0])
        writer.write_scalars(step, scalars)
        eta = (self.total_steps - step) / timer.rate() if timer.rate() else float("nan")
        loss = np.asarray(last["loss"]).reshape(-1)
        loss_text = (f"loss {loss[0]:.4f}" if not self.stacked else
                     f"loss [{', '.join(f'{v:.3f}' for v in loss)}]")
        logging.info("step %d/%d  %s  |  %.2f steps/s  %.1f images/s  ETA %s",
                     step, self.total_steps, loss_text, timer.rate(), images_per_sec,
                     format_seconds(eta))

    def _summaries(self, results, last, timer, final_step, wall_time) -> list[dict]:
        diverged = np.asarray(mesh_lib.fetch(self.state.diverged)).reshape(-1)
        train_loss = np.asarray(last.get("loss", np.nan)).reshape(-1)
        train_loss = np.broadcast_to(train_loss, diverged.shape)
        config_json = json.loads(self.config.to_json_best_effort())
        return [{
            "test_top1_error": results[i]["top1_error"],
            "test_mean_class_error": results[i]["mean_class_error"],
            "train_loss": float(train_loss[i]),
            "diverged": bool(diverged[i]),
            "steps": final_step,
            "total_steps": self.total_steps,
            "images_per_sec": timer.rate() * self.config.batch_size,
            "wall_time_s": wall_time,
            "hyperparameters": self.hyperparams[i],
            "config": config_json,
        } for i in range(len(diverged))]


def estimate_point_bytes(config: ml_collections.ConfigDict) -> int:
    """Memory one point of a batched grid needs on a device: its state (parameters, batch
    statistics, optimizer state) plus the temporaries of its compiled step, from XLA's own
    memory analysis of a one-point step (compiled, never run)."""
    info = data.dataset_info(config.dataset)
    model = create_model(config, info.num_classes)
    size = config.input.image_size
    image = jax.ShapeDtypeStruct((config.batch_size, size, size, 3), jnp.float32)
    # The image goes in as an argument: eval_shape traces only its arguments into abstract values.
    variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), image)
    # Plain L2 with runtime momentum has the state layout of every mode but L2-SP, which also
    # keeps its anchor (one more copy of the parameters) in each point's state.
    tx = optim.sgd(0.1, 0.9, weight_decay=1e-4, runtime_momentum=True)
    state = jax.eval_shape(lambda v: TrainState(
        step=jnp.zeros((), jnp.int32), params=v["params"], batch_stats=v["batch_stats"],
        opt_state=tx.init(v["params"]), rng=jax.random.PRNGKey(0),
        diverged=jnp.zeros((), bool)), variables)
    batch = {"image": image, "label": jax.ShapeDtypeStruct((config.batch_size,), jnp.int32)}
    compiled = jax.jit(make_train_step(model, tx)).lower(state, batch).compile()
    analysis = compiled.memory_analysis()
    state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
    if config.optimizer.weight_decay_mode == "l2sp":
        state_bytes += sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state.params))
    temp_bytes = getattr(analysis, "temp_size_in_bytes", 0) if analysis is not None else 0
    return int(state_bytes + temp_bytes)


# --------------------------------------------------------------------------------------------
# Small helpers.
# --------------------------------------------------------------------------------------------
def _summary_values(value) -> np.ndarray:
    """Flat float64 values TensorBoard (float32) can take: a float64 run's finite loss beyond
    float32's range, e.g. of a diverging point, becomes +-inf instead of failing the write."""
    value = np.asarray(value, np.float64).reshape(-1)
    limit = np.finfo(np.float32).max
    return np.where(np.abs(value) > limit, np.copysign(np.inf, value), value)


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def _dataset_label(name: str, source: str) -> str:
    return name if source == name else f"{name} ({source})"


def tensorboard_writer(workdir: pathlib.Path) -> metric_writers.MetricWriter:
    """TensorBoard event files in `workdir` (process 0 only); the console gets our own lines."""
    if jax.process_index() > 0:
        return metric_writers.MultiWriter([])
    return metric_writers.SummaryWriter(os.fspath(workdir))


class _DropLibraryInfo(std_logging.Filter):
    """Orbax logs every stage of every save at INFO, and clu's work-unit notes repeat our own
    progress line; our lines are the ones worth reading."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        noisy = "/orbax/" in record.pathname or "/clu/platform/" in record.pathname
        return record.levelno > std_logging.INFO or not noisy


def quiet_library_logs() -> None:
    logger = std_logging.getLogger("absl")
    if not any(isinstance(f, _DropLibraryInfo) for f in logger.filters):
        logger.addFilter(_DropLibraryInfo())


def _mean_metrics(pending: list[dict]) -> dict:
    """Mean over the steps since the last log line (per point when stacked)."""
    return {key: np.mean(np.stack([np.asarray(m[key]) for m in pending]), axis=0)
            for key in pending[0]}


def _scalar_items(values: dict) -> dict:
    return {k: v for k, v in values.items() if isinstance(v, (int, float, str, bool))}


def format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def write_json_atomically(path: pathlib.Path, payload) -> None:
    """Writes JSON so that a reader (or a killed process) never sees half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=_json_default))
    os.replace(tmp, path)


def _json_default(value):
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
