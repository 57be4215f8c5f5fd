"""Command line: `python -m jaxft.main --config configs/flowers.py --workdir runs/flowers`.

Parses flags and dispatches: a config with a grid runs the whole grid, any other config one
fine-tuning run. Config fields are overridden with `--config.optimizer.momentum=0` and the like;
`--config.distributed.initialize=True` joins the processes of a multi-host run first.
"""
# torchvision segfaults when imported after tensorflow on some machines; converting torchvision
# weights needs it, so it is imported first whenever it is installed.
try:
    import torch  # noqa: F401
    import torchvision  # noqa: F401
except ImportError:
    pass

import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file (configs/*.py) with a get_config() function.")
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Folder for checkpoints, metrics and results; a run started in a folder "
    "that holds a checkpoint resumes from it. Default: runs/<config file name>.")
flags.mark_flags_as_required(["config"])


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.INFO)
    from jaxft import distributed, errors, grid, train

    config = _CONFIG.value
    workdir = _WORKDIR.value or f"runs/{_config_name()}"
    try:
        distributed.initialize(config)  # first: nothing may touch a device before it
        train.use_compilation_cache(config)  # before the first compilation
        if grid.has_grid(config):
            grid.run_grid(config, workdir)
        else:
            train.train_and_evaluate(config, workdir)
    except errors.USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's parser, with a misspelt `--config.x.y` override turned into one clear line."""
    try:
        return flags.FLAGS(argv)
    except (AttributeError, KeyError) as error:
        message = str(error).strip("'\"").replace("\\n", " ").replace("\n", " ")
        print(f"error: unknown config field in the command line: {message}", file=sys.stderr)
        sys.exit(2)
    except flags.Error as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def _config_name() -> str:
    import pathlib

    return pathlib.Path(flags.FLAGS["config"].config_filename).stem


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
