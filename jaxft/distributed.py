"""Multi-host runs: the `config.distributed` block and `jax.distributed.initialize()` from it.

On a TPU pod slice (and on GPU clusters under SLURM or Open MPI) JAX finds the coordinator and
this process's rank itself, so `initialize=True` is all a config needs; elsewhere the
coordinator's address, the number of processes and this process's id say it. It must run before
anything touches a device: the first device query fixes the backend to this process alone.
"""
from __future__ import annotations

import ml_collections
from absl import logging
from ml_collections import config_dict

from jaxft.config_validation import ConfigError

FIELDS = ("coordinator_address", "num_processes", "process_id")


def default_distributed_config() -> ml_collections.ConfigDict:
    """The `config.distributed` block: off, every connection field left to JAX's detection."""
    distributed = ml_collections.ConfigDict()
    distributed.initialize = False  # True: call jax.distributed.initialize() before training
    distributed.coordinator_address = config_dict.placeholder(str)  # 'host:port' of process 0
    distributed.num_processes = config_dict.placeholder(int)
    distributed.process_id = config_dict.placeholder(int)
    return distributed


def initialize(config: ml_collections.ConfigDict) -> bool:
    """Joins this process to the others when `config.distributed.initialize` is set; returns
    whether it did. Processes other than 0 then log warnings and errors only, so the console
    shows one copy of each progress line."""
    settings = config.get("distributed")
    if settings is None or not settings.get("initialize", False):
        return False
    import jax

    given = {field: settings.get(field) for field in FIELDS if settings.get(field) is not None}
    _check(given)
    jax.distributed.initialize(**given)  # its own error says if a device was touched first
    if jax.process_index() > 0:
        logging.set_verbosity(logging.WARNING)
    logging.info("Process %d of %d, %d of %d devices local.", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count())
    return True


def _check(given: dict) -> None:
    count, index = given.get("num_processes"), given.get("process_id")
    if count is not None and count < 1:
        raise ConfigError(f"config.distributed.num_processes = {count} is not valid: "
                          f"expected a number >= 1.")
    if index is not None and count is not None and not 0 <= index < count:
        raise ConfigError(f"config.distributed.process_id = {index} is not valid: expected a "
                          f"number in [0, {count}).")
