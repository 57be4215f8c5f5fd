"""Caltech-256 with 60 training images per class (15,360 / 15,189) with the paper's recipe (Li et
al. 2020); variants (`:small`, `:elr`, `:single`) are described in configs/paper_grid.py."""
from configs import default, paper_grid


def get_config(variant: str = ""):
    config = default.get_config()
    config.dataset.name = "caltech256"
    config.dataset.train_split = "train"
    config.dataset.test_split = "test"
    return paper_grid.apply_variant(config, variant)
