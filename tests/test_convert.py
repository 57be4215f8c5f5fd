"""Checkpoint conversion: the torch -> Flax mapping, strictness (every bad key named in one error),
refusal of pickled code, msgpack round trips, head replacement, the cache and the CLI."""
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

import jax  # noqa: E402 - after torch, see conftest.py
import jax.numpy as jnp  # noqa: E402

from jaxft import convert  # noqa: E402
from jaxft.convert import CheckpointError, CheckpointMismatchError, UnsafeCheckpointError  # noqa: E402
from jaxft.models import get_model  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def resnet18_state_dict():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).state_dict()


def nested_get(tree, dotted: str):
    for part in dotted.split("."):
        tree = tree[part]
    return np.asarray(tree)


# ------------------------------------------------------------------------------------ the mapping
def test_mapping_is_mechanical(resnet18_state_dict):
    variables = convert.convert_state_dict(resnet18_state_dict, "resnet18")
    sd = {k: v.numpy() for k, v in resnet18_state_dict.items()}
    np.testing.assert_array_equal(nested_get(variables["params"], "layer1.0.conv1.kernel"),
                                  sd["layer1.0.conv1.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(nested_get(variables["params"], "layer2.0.downsample.0.kernel"),
                                  sd["layer2.0.downsample.0.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(nested_get(variables["params"], "layer2.0.downsample.1.scale"),
                                  sd["layer2.0.downsample.1.weight"])
    np.testing.assert_array_equal(nested_get(variables["params"], "fc.kernel"), sd["fc.weight"].T)
    np.testing.assert_array_equal(nested_get(variables["params"], "fc.bias"), sd["fc.bias"])
    np.testing.assert_array_equal(nested_get(variables["batch_stats"], "bn1.mean"), sd["bn1.running_mean"])
    np.testing.assert_array_equal(nested_get(variables["batch_stats"], "bn1.var"), sd["bn1.running_var"])
    # num_classes comes from the checkpoint's head; num_batches_tracked is dropped without complaint
    assert nested_get(variables["params"], "fc.kernel").shape == (512, 10)
    assert any(k.endswith("num_batches_tracked") for k in resnet18_state_dict)
    # the inverse mapping gives the state_dict back (less num_batches_tracked)
    back = convert.to_state_dict(variables)
    assert set(back) == {k for k in sd if not k.endswith("num_batches_tracked")}
    assert all(np.array_equal(back[k], sd[k]) for k in back)


def test_converted_variables_have_exactly_the_models_structure(resnet18_state_dict):
    variables = convert.convert_state_dict(resnet18_state_dict, "resnet18")
    abstract = jax.eval_shape(get_model("resnet18", 10).init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    expected = jax.tree_util.tree_map(lambda leaf: (leaf.shape, leaf.dtype), dict(abstract))
    assert jax.tree_util.tree_map(lambda leaf: (leaf.shape, leaf.dtype), variables) == expected


def test_skip_drops_the_head(resnet18_state_dict):
    without_head = {k: v for k, v in resnet18_state_dict.items() if not k.startswith("fc.")}
    with pytest.raises(CheckpointMismatchError, match="missing: +fc.weight"):
        convert.convert_state_dict(without_head, "resnet18")
    variables = convert.convert_state_dict(without_head, "resnet18", skip=("fc",))
    assert "fc" not in variables["params"]
    # a head of any size is ignored when skipped
    assert "fc" not in convert.convert_state_dict(resnet18_state_dict, "resnet18", skip=("fc",))["params"]


# ----------------------------------------------------------------------------------- strictness
def test_wrong_architecture_lists_every_difference(resnet18_state_dict):
    resnet50_keys = {k: tuple(v.shape) for k, v in torchvision.models.resnet50(num_classes=10).state_dict().items()
                     if not k.endswith("num_batches_tracked")}
    resnet18_keys = {k: tuple(v.shape) for k, v in resnet18_state_dict.items() if not k.endswith("num_batches_tracked")}
    with pytest.raises(CheckpointMismatchError) as error:
        convert.convert_state_dict(resnet18_state_dict, "resnet50")
    message = str(error.value)
    missing = set(resnet50_keys) - set(resnet18_keys)
    misshaped = {k for k in set(resnet50_keys) & set(resnet18_keys) if resnet50_keys[k] != resnet18_keys[k]}
    assert f"{len(missing)} missing, 0 unexpected, {len(misshaped)} mis-shaped" in message
    for key in missing:
        assert f"missing:     {key}\n" in message + "\n"
    for key in misshaped:
        assert f"mis-shaped:  {key}: checkpoint {resnet18_keys[key]}, resnet50 expects {resnet50_keys[key]}" in message
    assert isinstance(error.value, ValueError)


def test_missing_unexpected_and_misshaped_keys_in_one_message(resnet18_state_dict):
    broken = dict(resnet18_state_dict)
    del broken["layer1.0.bn1.running_var"]
    broken["layer9.conv.weight"] = torch.zeros(3)
    broken["conv1.weight"] = torch.zeros(64, 3, 5, 5)
    with pytest.raises(CheckpointMismatchError) as error:
        convert.convert_state_dict(broken, "resnet18")
    lines = str(error.value).splitlines()
    assert "1 missing, 1 unexpected, 1 mis-shaped" in lines[0]
    assert "  missing:     layer1.0.bn1.running_var" in lines
    assert "  unexpected:  layer9.conv.weight" in lines
    assert "  mis-shaped:  conv1.weight: checkpoint (64, 3, 5, 5), resnet18 expects (64, 3, 7, 7)" in lines


class CodeCarrier:
    """A pickled custom class: loading it needs this module's code, which must never run."""

    def __init__(self, marker):
        self.marker = marker


class SystemCall:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("payload", [CodeCarrier, SystemCall])
def test_pickled_code_is_refused_not_executed(tmp_path, resnet18_state_dict, payload):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pth"
    torch.save({**resnet18_state_dict, "extra": payload(marker)}, path)
    with pytest.raises(UnsafeCheckpointError) as error:
        convert.load_checkpoint(path, "resnet18")
    assert "nothing in it was executed" in str(error.value)
    assert not marker.exists()


def test_replace_head_is_strict_about_everything_else():
    pretrained = convert.pretrained_variables("efficientnet_lite0", "efficientnet_lite0", cache_dir=None)
    model = get_model("efficientnet_lite0", 7)
    initial = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    initial = jax.tree_util.tree_map(lambda leaf: np.full(leaf.shape, 0.5, leaf.dtype), initial)
    merged = convert.replace_head(pretrained, initial, "efficientnet_lite0")
    assert np.all(merged["params"]["_fc"]["kernel"] == 0.5) and merged["params"]["_fc"]["kernel"].shape == (1280, 7)
    assert merged["params"]["_conv_stem"] is pretrained["params"]["_conv_stem"]
    assert merged["batch_stats"]["_bn0"] is pretrained["batch_stats"]["_bn0"]

    wrong = jax.eval_shape(get_model("resnet18", 7).init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    with pytest.raises(CheckpointMismatchError, match="missing: +conv1.weight"):
        convert.replace_head(pretrained, wrong, "efficientnet_lite0")
    bad = {c: dict(t) for c, t in pretrained.items()}
    bad["params"]["_conv_stem"] = {"kernel": np.zeros((3, 3, 3, 16), np.float32)}
    with pytest.raises(CheckpointMismatchError, match=r"mis-shaped:  _conv_stem.weight: checkpoint \(16, 3, 3, 3\)"):
        convert.replace_head(bad, initial, "efficientnet_lite0")


# ---------------------------------------------------------------------------------------- files
def test_file_formats_round_trip(tmp_path, resnet18_state_dict):
    from safetensors.torch import save_file

    expected = convert.convert_state_dict(resnet18_state_dict, "resnet18")
    torch.save({"model": resnet18_state_dict, "epoch": 3}, tmp_path / "nested.pth")
    save_file({k: v.contiguous() for k, v in resnet18_state_dict.items()}, tmp_path / "weights.safetensors")
    convert.save_variables(tmp_path / "converted.msgpack", expected)
    for name in ("nested.pth", "weights.safetensors", "converted.msgpack"):
        loaded = convert.load_checkpoint(tmp_path / name, "resnet18")
        assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, loaded, expected)), name
    restored = convert.load_variables(tmp_path / "converted.msgpack")
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, restored, expected))
    with pytest.raises(CheckpointMismatchError):
        convert.load_checkpoint(tmp_path / "converted.msgpack", "resnet34")
    with pytest.raises(CheckpointError, match="does not exist"):
        convert.load_checkpoint(tmp_path / "absent.pth", "resnet18")
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(CheckpointError, match="unknown checkpoint type"):
        convert.load_checkpoint(tmp_path / "weights.bin", "resnet18")


def test_pretrained_variables_caches_the_conversion(tmp_path, monkeypatch, resnet18_state_dict):
    path = tmp_path / "resnet18.pth"
    torch.save(resnet18_state_dict, path)
    first = convert.pretrained_variables(str(path), "resnet18", cache_dir=tmp_path / "cache")
    cached = list((tmp_path / "cache").glob("*.msgpack"))
    assert len(cached) == 1 and cached[0].name.startswith("resnet18--")

    def no_torch(source):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(convert, "_read_source", no_torch)
    second = convert.pretrained_variables(str(path), "resnet18", cache_dir=tmp_path / "cache")
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, first, second))


def test_torchvision_download_failure_names_the_url(monkeypatch):
    import torchvision.models._api as api

    def offline(url, *args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(CheckpointError) as error:
        convert.pretrained_variables("torchvision:ResNet18_Weights.IMAGENET1K_V1", "resnet18", cache_dir=None)
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    assert url in str(error.value) and "pass its path" in str(error.value)
    with pytest.raises(CheckpointError, match="unknown torchvision weights"):
        convert.pretrained_variables("torchvision:ResNet18_Weights.NOPE", "resnet18", cache_dir=None)


# ------------------------------------------------------------------------------------------ CLI
def test_cli_output_loads_without_torch_and_gives_identical_logits(tmp_path):
    out = tmp_path / "lite0.msgpack"
    command = [sys.executable, "-m", "jaxft.convert", "efficientnet_lite0", "efficientnet_lite0", str(out)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr

    x = np.random.RandomState(0).standard_normal((2, 64, 64, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    loader = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any import of torch now fails
        sys.modules["torchvision"] = None
        import jax, numpy as np
        from jaxft.convert import load_checkpoint
        from jaxft.models import get_model
        variables = load_checkpoint({str(out)!r}, "efficientnet_lite0")
        model = get_model("efficientnet_lite0", 1000)
        logits = model.apply(variables, np.load({str(tmp_path / "x.npy")!r}))
        np.save({str(tmp_path / "logits.npy")!r}, np.asarray(logits))
    """)
    result = subprocess.run([sys.executable, "-c", loader], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr

    direct = convert.pretrained_variables("efficientnet_lite0", "efficientnet_lite0", cache_dir=None)
    expected = np.asarray(get_model("efficientnet_lite0", 1000).apply(direct, x))
    np.testing.assert_array_equal(np.load(tmp_path / "logits.npy"), expected)


def test_cli_errors_are_one_line_and_exit_2(tmp_path, capsys, resnet18_state_dict):
    torch.save(resnet18_state_dict, tmp_path / "resnet18.pth")
    for argv in (["resnet50", str(tmp_path / "resnet18.pth"), str(tmp_path / "out.msgpack")],
                 ["resnet19", "efficientnet_lite0", str(tmp_path / "out.msgpack")],
                 ["resnet18", str(tmp_path / "absent.pth"), str(tmp_path / "out.msgpack")]):
        assert convert.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "out.msgpack").exists()

    result = subprocess.run([sys.executable, "-m", "jaxft.convert", "resnet50", str(tmp_path / "resnet18.pth"),
                             str(tmp_path / "out.msgpack")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert "missing: layer1.0.conv3.weight" in result.stderr
