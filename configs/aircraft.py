"""FGVC-Aircraft variants (6,667 train+val / 3,333 test, 100 classes) with the paper's recipe (Li
et al. 2020); variants (`:small`, `:elr`, `:single`) are described in configs/paper_grid.py."""
from configs import default, paper_grid


def get_config(variant: str = ""):
    config = default.get_config()
    config.dataset.name = "fgvc_aircraft"
    config.dataset.train_split = "train+validation"
    config.dataset.test_split = "test"
    return paper_grid.apply_variant(config, variant)
