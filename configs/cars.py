"""Stanford Cars (8,144 / 8,041 images, 196 classes) with the paper's recipe (Li et al. 2020);
variants (`:small`, `:elr`, `:single`) are described in configs/paper_grid.py."""
from configs import default, paper_grid


def get_config(variant: str = ""):
    config = default.get_config()
    config.dataset.name = "stanford_cars"
    config.dataset.train_split = "train"
    config.dataset.test_split = "test"
    return paper_grid.apply_variant(config, variant)
