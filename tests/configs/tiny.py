"""A run small enough for the test suite: ResNet-18 from scratch at 32 px on a few real images.
Tests set `dataset.name` to a small image folder (tests/conftest.py makes one)."""
from configs import default


def get_config():
    config = default.get_config()
    config.model = "resnet18"
    config.pretrained = ""
    config.dataset.name = "folder:/set/by/the/test"
    config.dataset.train_split = "train"
    config.dataset.test_split = "test"
    config.input.image_size = 32
    config.input.color_jitter = 0.0
    config.batch_size = 8
    config.eval_batch_size = 16
    config.num_train_steps = 8
    config.schedule.decay_epochs = (1,)  # 5 steps per epoch: one decay inside the run
    config.log_every_steps = 2
    config.checkpoint_every_steps = 2
    return config
