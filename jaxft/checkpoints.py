"""A thin wrapper over orbax's CheckpointManager: periodic and final saves of a train state, and
restoring the newest one so that a killed run picks up where it stopped."""
from __future__ import annotations

import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp


class CheckpointMismatchError(ValueError):
    """A checkpoint on disk does not fit the state this run builds."""


class CheckpointManager:
    def __init__(self, directory: str | pathlib.Path, *, max_to_keep: int = 2):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            create=True,
            cleanup_tmp_directories=True,  # a save cut short by a kill leaves only a tmp folder
        )
        self.directory = pathlib.Path(directory).absolute()
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def restore_or(self, state: Any) -> Any:
        """The newest saved state with `state`'s structure and shardings, or `state` itself."""
        step = self._manager.latest_step()
        if step is None:
            return state
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        try:
            return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointMismatchError(
                f"The checkpoint at {self.directory / str(step)} does not fit this run's state "
                f"(was it written with another model, data set or optimizer?). Use another "
                f"--workdir or delete that folder. Details: {error}") from None

    def save(self, step: int, state: Any) -> None:
        """Saves `state` as `step` (in the background; `close` waits), unless that step is
        saved already."""
        if self._manager.latest_step() != step:
            self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
