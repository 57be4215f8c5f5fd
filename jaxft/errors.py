"""The user errors the command line reports as one line (exit status 2) instead of a traceback:
a bad config value, a missing data set, a checkpoint that does not fit, a grid that cannot run,
a similarity that cannot be computed."""
from jaxft.checkpoints import CheckpointMismatchError
from jaxft.config_validation import ConfigError
from jaxft.convert import CheckpointError
from jaxft.data import DataError
from jaxft.grid import GridError
from jaxft.prototypes import SimilarityError

USER_ERRORS = (ConfigError, DataError, CheckpointError, CheckpointMismatchError, GridError,
               SimilarityError)
