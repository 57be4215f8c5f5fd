"""jaxft: fine-tune ImageNet-pretrained CNNs in JAX/Flax and search their fine-tuning hyperparameters."""

__version__ = "0.1.0"
