"""Multi-host training on one machine: two processes joined by `jax.distributed.initialize` on
loopback (CPU backend, gloo collectives, 2 forced devices each) train the tiny run through the
command line and must end where one process with 4 devices ends.

float64 (JAX_ENABLE_X64=1): the two set-ups sum gradients and BatchNorm statistics in different
orders, which float32 training turns into ~1e-3 differences within a few steps (a ReLU kink
flips); in float64 they agree to ~1e-12 after 6 steps (measured 3e-12), so 1e-9 is a real check.
"""
import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS = 6
TOLERANCE = 1e-9  # float64; measured ~3e-12 for losses and parameters


def cli_args(folder: pathlib.Path, workdir: pathlib.Path) -> list[str]:
    return [sys.executable, "-m", "jaxft.main", "--config", "tests/configs/tiny.py",
            f"--workdir={workdir}", f"--config.dataset.name=folder:{folder}",
            "--config.dtype=float64", f"--config.num_train_steps={STEPS}"]


def cpu_env(devices: int) -> dict:
    return {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_ENABLE_X64": "1",
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def restore_variables(workdir: pathlib.Path) -> dict:
    """params and batch_stats of the newest checkpoint, onto this process's first device (the
    2-process checkpoint records devices this process does not have, so orbax needs a target)."""
    import jax
    import orbax.checkpoint as ocp

    step = max(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    path = workdir / "checkpoints" / str(step) / "default"
    checkpointer = ocp.StandardCheckpointer()
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device),
        checkpointer.metadata(path).item_metadata)
    restored = checkpointer.restore(path, target)
    return {"params": restored["params"], "batch_stats": restored["batch_stats"]}


def multi_process_cpu_supported() -> bool:
    import jax

    return hasattr(jax.config, "jax_cpu_collectives_implementation")


@pytest.fixture(scope="module")
def runs(tiny_flowers, tmp_path_factory):
    """(one process with 4 devices, two processes with 2 each): workdirs and their output."""
    if not multi_process_cpu_supported():
        pytest.skip("this JAX has no CPU collectives (jax_cpu_collectives_implementation), so "
                    "processes on the CPU backend cannot form one computation")
    single = tmp_path_factory.mktemp("one_process")
    two = tmp_path_factory.mktemp("two_processes")
    port = free_port()
    distributed = ["--config.distributed.initialize=True",
                   f"--config.distributed.coordinator_address=localhost:{port}",
                   "--config.distributed.num_processes=2"]
    logs = [two.parent / f"{two.name}_process_{index}.log" for index in range(2)]
    processes = []
    for index, log in enumerate(logs):
        with open(log, "w") as handle:  # files, not pipes: nobody reads while the reference runs
            processes.append(subprocess.Popen(
                cli_args(tiny_flowers, two) + distributed
                + [f"--config.distributed.process_id={index}"],
                cwd=REPO, env=cpu_env(2), stdout=handle, stderr=subprocess.STDOUT))
    try:
        reference = subprocess.run(cli_args(tiny_flowers, single), cwd=REPO, env=cpu_env(4),
                                   capture_output=True, text=True, timeout=600)
        for process in processes:
            process.wait(timeout=600)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    assert reference.returncode == 0, reference.stderr[-3000:]
    outputs = [log.read_text() for log in logs]
    for index, (process, output) in enumerate(zip(processes, outputs)):
        assert process.returncode == 0, f"process {index}:\n{output[-3000:]}"
    return single, two, outputs


def test_two_processes_end_where_one_process_ends(runs):
    single, two, _ = runs
    want = json.loads((single / "summary.json").read_text())
    got = json.loads((two / "summary.json").read_text())
    assert got["steps"] == want["steps"] == STEPS
    difference = abs(got["train_loss"] - want["train_loss"]) / abs(want["train_loss"])
    print(f"final train loss: relative difference {difference:.3g}")
    assert difference <= TOLERANCE
    assert got["test_top1_error"] == want["test_top1_error"]
    assert got["test_mean_class_error"] == want["test_mean_class_error"]

    import jax

    with jax.enable_x64(True):
        ours, theirs = restore_variables(two), restore_variables(single)
    flat_ours = jax.tree_util.tree_leaves_with_path(ours)
    flat_theirs = dict(jax.tree_util.tree_leaves_with_path(theirs))
    worst = 0.0
    for path, leaf in flat_ours:
        got, want = np.asarray(leaf), np.asarray(flat_theirs[path])
        assert got.dtype == np.float64, jax.tree_util.keystr(path)
        worst = max(worst, float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12)))
    print(f"final variables: worst relative difference {worst:.3g}")
    assert worst <= TOLERANCE


def test_process_zero_alone_writes_logs_and_metrics(runs):
    _, two, stderrs = runs
    assert f"step {STEPS}/{STEPS}" in stderrs[0] and "Finished" in stderrs[0]
    assert "step 2/" not in stderrs[1] and "Finished" not in stderrs[1], stderrs[1][-2000:]
    assert len(list(two.glob("events.out.tfevents.*"))) == 1
    assert (two / "checkpoints" / str(STEPS)).is_dir()
    metrics = json.loads((two / "train_metrics.json").read_text())
    assert metrics["step"] == STEPS


def test_a_bad_process_id_is_one_clear_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "jaxft.main", "--config", "tests/configs/tiny.py",
         f"--workdir={tmp_path}", "--config.distributed.initialize=True",
         "--config.distributed.num_processes=2", "--config.distributed.process_id=5"],
        cwd=REPO, env=cpu_env(1), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "config.distributed.process_id = 5 is not valid" in result.stderr
