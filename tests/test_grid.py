"""The grid: expansion and records; batched points equal their sequential runs; a killed grid
restarts to exactly one record per point; a diverging point is recorded and isolated."""
import json
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from jaxft import grid, report
from tests.test_train import REPO, final_params, leaves, run_float64, tiny_config

GRID = {"learning_rate": (0.01, 0.001), "momentum": (0.9, 0.0)}


def grid_config(folder, **axes):
    config = tiny_config(folder, num_train_steps=6)
    for axis, values in (axes or GRID).items():
        config.grid[axis] = values
    return config


# --- expansion and records (no training) ----------------------------------------------------
def test_expand_is_the_product_in_axis_order(tmp_path):
    config = grid_config(tmp_path, weight_decay=(0.0, 1e-4), momentum=(0.9, 0.0),
                         learning_rate=(0.1, 0.01, 0.001))
    points = grid.expand(config)
    assert len(points) == 12
    assert points[0].id == "m=0.9,lr=0.1,wd=0"
    assert points[-1].id == "m=0,lr=0.001,wd=0.0001"
    assert len({p.id for p in points}) == 12
    run = grid.point_config(config, points[-1])
    assert (run.optimizer.momentum, run.optimizer.learning_rate, run.optimizer.weight_decay) \
        == (0.0, 0.001, 1e-4)
    assert not grid.has_grid(run)


def test_effective_learning_rate_axis_sets_the_config_field(tmp_path):
    config = grid_config(tmp_path, effective_learning_rate=(0.1,), momentum=(0.9, 0.0))
    from jaxft import optim

    for point in grid.expand(config):
        resolved = optim.resolve_hyperparameters(grid.point_config(config, point).optimizer)
        assert resolved["effective_learning_rate"] == pytest.approx(0.1)
    config.grid.learning_rate = (0.01,)
    with pytest.raises(grid.GridError, match="both set"):
        grid.expand(config)


def test_records_survive_a_partial_last_line(tmp_path):
    path = tmp_path / "results.jsonl"
    record = {"point": "lr=0.1", "learning_rate": 0.1, "momentum": 0.0, "weight_decay": 0.0}
    grid.append_record(path, record)
    with open(path, "a") as handle:
        handle.write('{"point": "lr=0.0')  # a writer killed mid-line
    grid.repair_records(path)
    grid.append_record(path, {**record, "point": "lr=0.01", "learning_rate": 0.01})
    assert grid.finished_ids(path) == {"lr=0.1", "lr=0.01"}
    assert path.read_text().count("\n") == 2


# --- runs -----------------------------------------------------------------------------------
def records_by_point(workdir: pathlib.Path) -> dict:
    return {r["point"]: r for r in report.load_records(workdir / grid.RESULTS_FILE)}


@pytest.fixture(scope="module")
def sequential(tiny_flowers, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sequential")
    grid.run_grid(grid_config(tiny_flowers), workdir)
    return workdir, records_by_point(workdir)


def grid_progress_in_tensorboard(workdir: pathlib.Path) -> list[int]:
    """The `grid/points_done` values written to the grid's own event files."""
    import tensorflow as tf

    values = []
    for path in sorted(workdir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag == "grid/points_done":
                    values.append(int(tf.make_ndarray(value.tensor)))
    return values


def test_sequential_grid_records_and_report(sequential):
    workdir, records = sequential
    assert set(records) == {"m=0.9,lr=0.01", "m=0.9,lr=0.001", "m=0,lr=0.01", "m=0,lr=0.001"}
    assert records["m=0,lr=0.01"]["effective_learning_rate"] == pytest.approx(0.01)
    assert records["m=0.9,lr=0.01"]["effective_learning_rate"] == pytest.approx(0.1)
    assert (workdir / "results.csv").exists() and (workdir / "report.md").exists()
    assert grid_progress_in_tensorboard(workdir) == [1, 2, 3, 4]
    # Each point's record is its own run's summary.
    summary = json.loads((workdir / "points" / "m=0,lr=0.001" / "summary.json").read_text())
    assert records["m=0,lr=0.001"]["test_top1_error"] == summary["test_top1_error"]


def test_grid_points_share_one_compiled_program(tiny_flowers, tmp_path):
    """Through jaxft.main the compiled programs persist in <cache_dir>/xla; the points differ
    only in run-time hyperparameters, so the second point compiles nothing new."""
    from tests.test_train import run_cli

    cache, workdir = tmp_path / "cache", tmp_path / "grid"
    result = run_cli("--config", "tests/configs/tiny.py", f"--workdir={workdir}",
                     f"--config.dataset.name=folder:{tiny_flowers}", f"--config.cache_dir={cache}",
                     "--config.grid.learning_rate=(0.1, 0.01)", env={"JAX_COMPILATION_CACHE_DIR": ""})
    assert result.returncode == 0, result.stderr[-2000:]
    assert set(records_by_point(workdir)) == {"lr=0.1", "lr=0.01"}
    programs = sorted(path.name.split("-")[0] for path in (cache / "xla").iterdir())
    assert programs.count("jit_train_step") == 1, programs
    assert programs.count("jit_eval_step") == 1, programs


FLOAT64_GRIDS = """
import torch, sys, pathlib
sys.path.insert(0, '.')
from tests.test_grid import grid_config
from jaxft import grid
folder, workdir = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
config = grid_config(folder, momentum=(0.9, 0.0), learning_rate=(0.01,))
config.dtype = 'float64'
grid.run_grid(config, workdir / 'sequential')
config.grid.batched = True
grid.run_grid(config, workdir / 'batched')
config.grid.learning_rate = (0.01, 1e30)  # float64 needs a huge rate to overflow
config.grid.momentum = (0.9,)
grid.run_grid(config, workdir / 'diverging')
"""


@pytest.fixture(scope="module")
def float64_grids(tiny_flowers, tmp_path_factory):
    """The 2x2 grid run sequentially and batched, and a batched program with a diverging point,
    all in float64: float32 runs part after a few steps whatever the implementation (see
    tests/test_train.py `run_float64`), so equality is tested where it can be tight."""
    workdir = tmp_path_factory.mktemp("float64_grids")
    run_float64(FLOAT64_GRIDS, tiny_flowers, workdir)
    return workdir, records_by_point(workdir / "sequential")


def test_batched_points_equal_their_sequential_runs(float64_grids, tiny_flowers):
    """Momentum 0.9 and 0 in one program (the momentum buffer is kept for both) against their own
    runs: the runtime hyperparameters, stacking and vmapped BatchNorm change nothing."""
    workdir, reference = float64_grids
    batched = records_by_point(workdir / "batched")
    assert set(batched) == set(reference) == {"m=0.9,lr=0.01", "m=0,lr=0.01"}
    for point, record in batched.items():
        want = reference[point]
        assert record["train_loss"] == pytest.approx(want["train_loss"], rel=1e-10), point
        assert record["test_top1_error"] == want["test_top1_error"], point
        assert record["test_mean_class_error"] == want["test_mean_class_error"], point
        assert record["diverged"] is False
    programs = workdir / "batched" / "programs"
    (program,) = programs.iterdir()  # K chosen from memory: both points in one program
    for chunk in grid._chunks(grid.expand(grid_config(tiny_flowers, momentum=(0.9, 0.0),
                                                      learning_rate=(0.01,))), 2):
        stacked = final_params(programs / grid._chunk_name(chunk))
        for index, point in enumerate(chunk):
            own = final_params(workdir / "sequential" / "points" / point.id)
            for got, want in zip(leaves(stacked), leaves(own)):
                scale = max(np.abs(want).max(), 1e-6)
                assert np.abs(got[index] - want).max() <= 1e-10 * scale, point.id


def test_a_diverging_point_is_recorded_and_isolated(float64_grids):
    """The diverging point is frozen and recorded as such; its neighbour in the same program
    ends exactly where its own sequential run ends."""
    workdir, reference = float64_grids
    records = records_by_point(workdir / "diverging")
    assert records["m=0.9,lr=1e+30"]["diverged"] is True
    assert np.isnan(records["m=0.9,lr=1e+30"]["test_top1_error"])
    healthy = records["m=0.9,lr=0.01"]
    assert healthy["diverged"] is False
    assert healthy["train_loss"] == pytest.approx(reference["m=0.9,lr=0.01"]["train_loss"], rel=1e-10)
    assert healthy["test_top1_error"] == reference["m=0.9,lr=0.01"]["test_top1_error"]
    assert "diverged" in (workdir / "diverging" / "report.md").read_text()


KILLABLE_GRID = """
import torch, sys, pathlib
sys.path.insert(0, '.')
from tests.test_grid import grid_config
from jaxft import grid
grid.run_grid(grid_config(pathlib.Path(sys.argv[1])), sys.argv[2])
"""


def test_a_killed_grid_restarts_to_one_record_per_point(sequential, tiny_flowers, tmp_path):
    _, reference = sequential
    process = subprocess.Popen(
        [sys.executable, "-c", KILLABLE_GRID, str(tiny_flowers), str(tmp_path)], cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = tmp_path / grid.RESULTS_FILE
    second_point = tmp_path / "points" / "m=0.9,lr=0.001" / "checkpoints" / "2"
    deadline = time.time() + 300
    while not (results.exists() and second_point.exists()):
        assert process.poll() is None, "the grid ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert len(report.load_records(results)) < 4

    grid.run_grid(grid_config(tiny_flowers), tmp_path)
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert sorted(r["point"] for r in lines) == sorted(reference)
    for record in lines:
        want = reference[record["point"]]
        for key in ("test_top1_error", "test_mean_class_error", "train_loss", "steps"):
            assert record[key] == want[key], (record["point"], key)
