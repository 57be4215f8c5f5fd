"""Stanford Cars (cars_train.tgz, cars_test.tgz, car_devkit.tgz, cars_test_annos_withlabels.mat)
-> <out>/{train,test}/<class>/<image>: 196 classes, 8,144 / 8,041 images, in the devkit's class
order. Whole images are used (the paper does not crop to the bounding boxes). Example:
    python scripts/prepare_stanford_cars.py --source ~/downloads/stanford_cars \
        --out ~/tensorflow_datasets/stanford_cars
"""
import pathlib
import sys

import prepare_common

EXPECTED = {"train": 8144, "test": 8041}


def annotations(path: pathlib.Path) -> list[tuple[str, int]]:
    """(file name, class 1..196) of each image in a devkit annotation .mat file."""
    import scipy.io

    if not path.is_file():
        sys.exit(f"error: {path} is missing; it comes with the devkit / the labelled test "
                 f"annotations.")
    records = scipy.io.loadmat(path, squeeze_me=True)["annotations"]
    return [(str(record["fname"]), int(record["class"])) for record in records]


def main() -> None:
    args = prepare_common.parser(
        __doc__.splitlines()[0],
        "cars_train.tgz, cars_test.tgz, car_devkit.tgz, cars_test_annos_withlabels.mat").parse_args()
    devkit = prepare_common.unpack(args.source, "car_devkit.tgz", "devkit")
    import scipy.io

    class_names = [str(name) for name in
                   scipy.io.loadmat(devkit / "cars_meta.mat", squeeze_me=True)["class_names"]]
    labels = prepare_common.numbered_labels(class_names)
    counts = {}
    for split, archive, annotation_file in (
            ("train", "cars_train.tgz", devkit / "cars_train_annos.mat"),
            ("test", "cars_test.tgz", args.source / "cars_test_annos_withlabels.mat")):
        images = prepare_common.unpack(args.source, archive, f"cars_{split}")
        items = [(images / name, labels[class_names[number - 1]])
                 for name, number in annotations(annotation_file)]
        counts[split] = prepare_common.write_split(args.out, split, items, args.link)
    prepare_common.report(args.out, counts, EXPECTED)


if __name__ == "__main__":
    main()
