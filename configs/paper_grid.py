"""The paper's hyperparameter grids, shared by every data-set config as named variants:

  configs/flowers.py          the paper's grid (Sec. 3): lr {0.1, 0.05, 0.01, 0.005, 0.001, 0.0001}
                              x momentum {0.99, 0.95, 0.9, 0.8, 0} x weight decay {0, 1e-4, 5e-4,
                              1e-3}, 120 points
  configs/flowers.py:small    the seed reproduction's grid: m {0, 0.9} x lr {0.01, 0.005, 0.001}
                              x wd {0, 1e-4}, 12 points
  configs/flowers.py:elr      the effective-learning-rate check: eta' = lr / (1 - m) in
                              {0.1, 0.05, 0.01, 0.005, 0.001} at m {0, 0.9}, wd 1e-4, 10 points
  configs/flowers.py:single   one fine-tuning run with the paper's defaults (m 0.9, lr 0.01,
                              wd 1e-4), no grid
"""
import ml_collections

from jaxft import grid

PAPER_LEARNING_RATES = (0.1, 0.05, 0.01, 0.005, 0.001, 0.0001)
PAPER_MOMENTA = (0.99, 0.95, 0.9, 0.8, 0.0)
PAPER_WEIGHT_DECAYS = (0.0, 1e-4, 5e-4, 1e-3)
VARIANTS = ("paper", "small", "elr", "single")


def apply_variant(config: ml_collections.ConfigDict, variant: str) -> ml_collections.ConfigDict:
    """Sets `config.grid` to the named grid ('' means the paper's)."""
    variant = variant or "paper"
    if variant not in VARIANTS:
        raise ValueError(f"unknown config variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    config.grid = grid.default_grid_config()
    if variant == "paper":
        config.grid.learning_rate = PAPER_LEARNING_RATES
        config.grid.momentum = PAPER_MOMENTA
        config.grid.weight_decay = PAPER_WEIGHT_DECAYS
    elif variant == "small":
        config.grid.learning_rate = (0.01, 0.005, 0.001)
        config.grid.momentum = (0.9, 0.0)
        config.grid.weight_decay = (0.0, 1e-4)
    elif variant == "elr":
        config.grid.effective_learning_rate = (0.1, 0.05, 0.01, 0.005, 0.001)
        config.grid.momentum = (0.9, 0.0)
    return config
