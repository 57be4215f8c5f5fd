"""Train-input throughput: jaxft's tf.data pipeline against torchvision's DataLoader on the same
image folder, crops and worker count, in one invocation. Not a test; prints images/s and ratio.

    .venv/bin/python scripts/bench_input.py --images 512 --image-sizes 112 224 --workers 2

Both sides do RandomResizedCrop(size) + horizontal flip + normalisation (no colour jitter) on
the Flowers train folder; the first batch of each (worker start-up, graph tracing) is not timed.
"""
import torch  # noqa: I001 - torch before tensorflow, the other order crashes on some machines
import torchvision
from torchvision import transforms

import argparse
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def torch_rate(root: pathlib.Path, image_size: int, images: int, batch_size: int,
               workers: int) -> float:
    transform = transforms.Compose([
        transforms.RandomResizedCrop(image_size), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), transforms.Normalize(*IMAGENET)])
    dataset = torchvision.datasets.ImageFolder(str(root), transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True,
                                         num_workers=workers, drop_last=True)
    return _time(iter(loader), images, batch_size)


def jaxft_rate(root: pathlib.Path, split: str, image_size: int, images: int, batch_size: int,
               workers: int) -> float:
    sys.path.insert(0, str(REPO))
    from configs import default
    from jaxft import data

    config = default.get_config()
    config.dataset.name, config.dataset.train_split = f"folder:{root}", split
    config.input.image_size, config.input.color_jitter = image_size, 0.0
    config.batch_size = batch_size
    batches = data.train_batches(config, normalization=IMAGENET, process_index=0,
                                 process_count=1, threads=workers)
    return _time(batches, images, batch_size)


def _time(batches, images: int, batch_size: int) -> float:
    next(batches)  # start-up is not throughput
    steps = max(1, images // batch_size)
    start = time.perf_counter()
    for _ in range(steps):
        next(batches)
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("--data", type=pathlib.Path,
                           default=REPO.parent / "shared" / "data" / "oxford_flowers102")
    arguments.add_argument("--split", default="train")
    arguments.add_argument("--image-sizes", type=int, nargs="+", default=[112, 224])
    arguments.add_argument("--images", type=int, default=512, help="timed images per side")
    arguments.add_argument("--batch-size", type=int, default=32)
    arguments.add_argument("--workers", type=int, default=2,
                           help="DataLoader workers = tf.data thread-pool size")
    args = arguments.parse_args()
    if not (args.data / args.split).is_dir():
        sys.exit(f"error: no image folder at {args.data / args.split} (pass --data)")
    # torch first: its workers fork before TensorFlow (imported by jaxft.data) starts threads.
    torch_rates = {size: torch_rate(args.data / args.split, size, args.images, args.batch_size,
                                    args.workers) for size in args.image_sizes}
    jaxft_rates = {size: jaxft_rate(args.data, args.split, size, args.images, args.batch_size,
                                    args.workers) for size in args.image_sizes}
    print(f"train input, {args.data.name}/{args.split}, batch {args.batch_size}, "
          f"{args.workers} workers, {args.images} timed images per side")
    print(f"{'size':>5} {'jaxft tf.data img/s':>20} {'torch DataLoader img/s':>23} {'ratio':>6}")
    for size in args.image_sizes:
        print(f"{size:>5} {jaxft_rates[size]:>20.0f} {torch_rates[size]:>23.0f} "
              f"{jaxft_rates[size] / torch_rates[size]:>6.2f}")


if __name__ == "__main__":
    main()
