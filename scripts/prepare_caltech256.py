"""Caltech-256 (256_ObjectCategories.tar) -> <out>/{train,test}/<category>/<image>: 60 training
images per class drawn at random (--seed), every other image of the class for testing; the
257.clutter class is left out (256 classes, 15,360 training images). The paper reports 15,189
test images without saying how it chose them; the rest of the archive gives about 14,400.
Example:
    python scripts/prepare_caltech256.py --source ~/downloads/caltech256 \
        --out ~/tensorflow_datasets/caltech256
"""
import random

import prepare_common

EXPECTED = {"train": 15360}
CLUTTER = "257.clutter"


def main() -> None:
    arguments = prepare_common.parser(__doc__.splitlines()[0], "256_ObjectCategories.tar")
    arguments.add_argument("--train-per-class", type=int, default=60)
    arguments.add_argument("--seed", type=int, default=0)
    args = arguments.parse_args()
    root = prepare_common.unpack(args.source, "256_ObjectCategories.tar", "256_ObjectCategories")
    chooser = random.Random(args.seed)
    train, test = [], []
    for category in sorted(p for p in root.iterdir() if p.is_dir() and p.name != CLUTTER):
        # Some category folders hold stray non-image files; keep the JPEGs only.
        images = sorted(p for p in category.iterdir() if p.suffix.lower() == ".jpg")
        chosen = set(chooser.sample(range(len(images)), min(args.train_per_class, len(images))))
        for index, image in enumerate(images):
            (train if index in chosen else test).append((image, category.name))
    counts = {"train": prepare_common.write_split(args.out, "train", train, args.link),
              "test": prepare_common.write_split(args.out, "test", test, args.link)}
    prepare_common.report(args.out, counts, EXPECTED)


if __name__ == "__main__":
    main()
