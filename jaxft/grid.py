"""The hyperparameter grid: expands `config.grid` into points, runs them one after another or K
at a time in one compiled program, and records each finished point in `results.jsonl` so that a
restarted grid skips what is done and resumes what was interrupted."""
from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
import os
import pathlib
import time
from typing import Any, Iterable

import ml_collections
import numpy as np
from absl import logging

# Grid axis -> the config field it sets. The order is the order of the product (and of ids).
AXES = {
    "weight_decay_mode": "optimizer.weight_decay_mode",
    "nesterov": "optimizer.nesterov",
    "bn_momentum": "bn_momentum",
    "momentum": "optimizer.momentum",
    "learning_rate": "optimizer.learning_rate",
    "effective_learning_rate": "optimizer.effective_learning_rate",
    "weight_decay": "optimizer.weight_decay",
    "effective_weight_decay": "optimizer.effective_weight_decay",
}
# Axes a batched grid can stack in one program (they live in the optimizer state at run time).
RUNTIME_AXES = ("momentum", "learning_rate", "effective_learning_rate", "weight_decay",
                "effective_weight_decay")
SHORT_NAMES = {
    "weight_decay_mode": "mode", "nesterov": "nesterov", "bn_momentum": "bnm", "momentum": "m",
    "learning_rate": "lr", "effective_learning_rate": "elr", "weight_decay": "wd",
    "effective_weight_decay": "ewd",
}
RESULTS_FILE = "results.jsonl"


class GridError(ValueError):
    """A grid that cannot be run as configured."""


def default_grid_config() -> ml_collections.ConfigDict:
    """The `config.grid` block: every axis empty (not searched) and the run options."""
    grid = ml_collections.ConfigDict()
    for axis in AXES:
        grid[axis] = ()
    grid.batched = False  # True: K points per compiled program, stacked on a grid axis
    grid.points_per_program = 0  # K; 0 picks the largest K that fits in memory
    grid.max_points_per_program = 16
    # True: the effective-learning-rate axis becomes the values the target's domain similarity
    # suggests (jaxft/similarity.py), replacing any learning-rate axis.
    grid.center_on_similarity = False
    return grid


@dataclasses.dataclass(frozen=True)
class Point:
    """One grid point: the axis values it sets, and an id that names its folder and record."""

    values: tuple[tuple[str, Any], ...]

    @property
    def id(self) -> str:
        return ",".join(f"{SHORT_NAMES[axis]}={_format(value)}" for axis, value in self.values)

    def as_dict(self) -> dict:
        return dict(self.values)

    def runtime_values(self) -> dict:
        return {a: v for a, v in self.values if a in RUNTIME_AXES}

    def static_values(self) -> tuple:
        return tuple((a, v) for a, v in self.values if a not in RUNTIME_AXES)


def has_grid(config: ml_collections.ConfigDict) -> bool:
    return "grid" in config and any(len(config.grid.get(axis, ())) for axis in AXES)


def expand(config: ml_collections.ConfigDict) -> list[Point]:
    """The product of the non-empty axes, in AXES order."""
    axes = [(axis, tuple(config.grid.get(axis, ()))) for axis in AXES]
    if config.grid.get("center_on_similarity", False):
        axes = _centered_on_similarity(axes, config)
    axes = [(axis, values) for axis, values in axes if values]
    names = {axis for axis, _ in axes}
    for first, second in (("learning_rate", "effective_learning_rate"),
                          ("weight_decay", "effective_weight_decay")):
        if {first, second} <= names:
            raise GridError(f"config.grid.{first} and config.grid.{second} are both set: "
                            f"search one of them (the other follows from it).")
    for axis, values in axes:
        if len(set(values)) != len(values):
            raise GridError(f"config.grid.{axis} repeats a value: {values}")
    return [Point(tuple(zip([a for a, _ in axes], combo)))
            for combo in itertools.product(*[values for _, values in axes])]


def _centered_on_similarity(axes: list, config) -> list:
    from jaxft import similarity

    values = similarity.centered_effective_learning_rates(config)
    logging.info("Grid centred on domain similarity: effective learning rates %s.", values)
    axes = [(a, v) for a, v in axes if a not in ("learning_rate", "effective_learning_rate")]
    return axes + [("effective_learning_rate", tuple(values))]


def point_config(config: ml_collections.ConfigDict, point: Point) -> ml_collections.ConfigDict:
    """The config of one point's own run: the base config with the point's values set."""
    result = copy.deepcopy(config.to_dict())
    for axis, value in point.values:
        section, _, field = AXES[axis].rpartition(".")
        target = result[section] if section else result
        target[field] = value
    result.pop("grid", None)
    return ml_collections.ConfigDict(result)


# --------------------------------------------------------------------------------------------
# Records.
# --------------------------------------------------------------------------------------------
def record_for(point: Point, summary: dict, config) -> dict:
    hyper = summary["hyperparameters"]
    return {
        "point": point.id,
        "learning_rate": hyper["learning_rate"],
        "momentum": hyper["momentum"],
        "weight_decay": hyper["weight_decay"],
        "effective_learning_rate": hyper["effective_learning_rate"],
        "effective_weight_decay": hyper["effective_weight_decay"],
        "weight_decay_mode": config.optimizer.weight_decay_mode,
        "nesterov": bool(config.optimizer.nesterov),
        "bn_momentum": float(config.bn_momentum),
        "test_top1_error": summary["test_top1_error"],
        "test_mean_class_error": summary["test_mean_class_error"],
        "train_loss": summary["train_loss"],
        "diverged": summary["diverged"],
        "steps": summary["steps"],
        "wall_time_s": summary["wall_time_s"],
        "dataset": config.dataset.name,
        "model": config.model,
    }


def append_record(path: pathlib.Path, record: dict) -> None:
    """One line, written with a single write and synced, so a kill leaves at most a partial
    last line (which `repair_records` removes before the next append)."""
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def _record(results: pathlib.Path, record: dict) -> None:
    """Appends a finished point and mirrors all records to results.csv (process 0 only: every
    process of a multi-host grid trains every point, and one record per point is wanted)."""
    from jaxft import report

    if not _writes_files():
        return
    append_record(results, record)
    report.write_csv(report.load_records(results), results.with_suffix(".csv"))


def repair_records(path: pathlib.Path) -> None:
    """Cuts a partial last line left by a writer that was killed mid-write."""
    if not path.exists():
        return
    content = path.read_bytes()
    if content and not content.endswith(b"\n"):
        cut = content.rfind(b"\n") + 1
        logging.warning("%s ends in a partial record (a killed writer); removing it.", path)
        with open(path, "r+b") as handle:
            handle.truncate(cut)


def finished_ids(path: pathlib.Path) -> set[str]:
    from jaxft import report

    return {record["point"] for record in report.load_records(path)} if path.exists() else set()


# --------------------------------------------------------------------------------------------
# Running.
# --------------------------------------------------------------------------------------------
def run_grid(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> pathlib.Path:
    """Runs every unfinished point of `config.grid`, then writes the report; returns the
    results file. Safe to kill and start again with the same config and workdir."""
    from jaxft import report

    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    points = expand(config)
    results = workdir / RESULTS_FILE
    if _writes_files():
        repair_records(results)  # the others skip a partial line when they read the records
    done = finished_ids(results)
    todo = [p for p in points if p.id not in done]
    logging.info("Grid: %d points, %d already recorded, %d to run (%s).", len(points),
                 len(points) - len(todo), len(todo),
                 "batched" if config.grid.batched else "one after another")
    progress = _GridProgress(total=len(points), done=len(points) - len(todo), workdir=workdir)
    try:
        if config.grid.batched:
            _run_batched(config, points, done, workdir, results, progress)
        else:
            _run_sequential(config, todo, workdir, results, progress)
    finally:
        progress.close()
    report_path = report.write_report(workdir) if _writes_files() else workdir / "report.md"
    logging.info("Grid finished: %d records in %s; report in %s.", len(points), results,
                 report_path)
    return results


def _run_sequential(config, todo: list[Point], workdir, results, progress) -> None:
    from jaxft import train

    for point in todo:
        run_config = point_config(config, point)
        logging.info("Grid point %s", point.id)
        summary = train.train_and_evaluate(run_config, workdir / "points" / point.id)
        _record(results, record_for(point, summary, run_config))
        progress.finished(1)


def _run_batched(config, points: list[Point], done: set[str], workdir, results,
                 progress) -> None:
    from jaxft import train

    for static, group in _groups(points):
        base = point_config(config, group[0])
        size = config.grid.points_per_program or choose_points_per_program(
            base, len(group), config.grid.max_points_per_program)
        # Chunks come from the whole grid, not from what is left, so a restarted grid finds
        # the same chunks (and their checkpoints) again.
        for chunk in _chunks(group, size):
            missing = [p for p in chunk if p.id not in done]
            if not missing:
                continue
            name = _chunk_name(chunk)
            logging.info("Grid program %s: %d points (%s)", name, len(chunk),
                         ", ".join(p.id for p in chunk))
            summaries = train.train_points(
                base, [p.runtime_values() for p in chunk], workdir / "programs" / name)
            for point, summary in zip(chunk, summaries):
                if point.id not in done:
                    _record(results, record_for(point, summary, point_config(config, point)))
            progress.finished(len(missing))


def _groups(points: Iterable[Point]) -> list[tuple[tuple, list[Point]]]:
    """Points grouped by their static values (each group can share one program)."""
    groups: dict[tuple, list[Point]] = {}
    for point in points:
        groups.setdefault(point.static_values(), []).append(point)
    return list(groups.items())


def _chunks(points: list[Point], size: int) -> list[list[Point]]:
    return [points[i:i + size] for i in range(0, len(points), size)]


def _chunk_name(chunk: list[Point]) -> str:
    import hashlib

    digest = hashlib.sha1("|".join(p.id for p in chunk).encode()).hexdigest()[:10]
    static = ",".join(f"{SHORT_NAMES[a]}={_format(v)}" for a, v in chunk[0].static_values())
    return f"{static + ',' if static else ''}{len(chunk)}pts-{digest}"


def choose_points_per_program(config, group_size: int, cap: int) -> int:
    """The largest K <= cap that fits in half of the free memory of one device, from the
    compiled memory footprint of a one-point step."""
    from jaxft import train

    per_point = train.estimate_point_bytes(config)
    free = _free_device_bytes()
    fits = max(1, int(0.5 * free // max(per_point, 1)))
    size = _smallest_over_processes(max(1, min(group_size, cap, fits)))
    logging.info("Batched grid: about %.0f MiB per point, %.0f MiB free: %d points per program.",
                 per_point / 2**20, free / 2**20, size)
    return size


def _writes_files() -> bool:
    import jax

    return jax.process_index() == 0


def _smallest_over_processes(value: int) -> int:
    """The smallest of every process's `value`: hosts differ in free memory, but all must cut
    the grid into the same programs, and each program must fit on every host."""
    import jax

    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    return int(multihost_utils.process_allgather(np.int32(value)).min())


def _free_device_bytes() -> int:
    import jax

    stats = jax.local_devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


@dataclasses.dataclass
class _GridProgress:
    """Points done and an ETA for the whole grid, on the console and in TensorBoard
    (`grid/points_done`, `grid/eta_minutes` in the grid's workdir, step = points done)."""

    total: int
    done: int
    workdir: pathlib.Path | None = None
    timed_points: int = 0
    started: float = dataclasses.field(default_factory=time.time)
    writer: Any = None

    def finished(self, count: int) -> None:
        from jaxft.train import format_seconds, tensorboard_writer

        self.done += count
        self.timed_points += count
        eta = (time.time() - self.started) / self.timed_points * (self.total - self.done)
        logging.info("Grid progress: %d/%d points done, ETA %s.", self.done, self.total,
                     format_seconds(eta))
        if self.workdir is not None:
            if self.writer is None:
                self.writer = tensorboard_writer(self.workdir)
            self.writer.write_scalars(self.done, {"grid/points_done": self.done,
                                                  "grid/points_total": self.total,
                                                  "grid/eta_minutes": eta / 60})
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
