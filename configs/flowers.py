"""Oxford Flowers-102 with the paper's recipe: train on train+validation (2,040 images), test on
the 6,149 test images (Li et al. 2020, Table 1). Variants (`:small`, `:elr`, `:single`) are
described in configs/paper_grid.py."""
from configs import default, paper_grid


def get_config(variant: str = ""):
    config = default.get_config()
    config.dataset.name = "oxford_flowers102"
    config.dataset.train_split = "train+validation"
    config.dataset.test_split = "test"
    return paper_grid.apply_variant(config, variant)
