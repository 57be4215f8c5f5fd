"""MIT Indoor-67 (indoorCVPR_09.tar + TrainImages.txt + TestImages.txt) ->
<out>/{train,test}/<category>/<image>: the official 80 training and 20 test images per class
(5,360 / 1,340). A few files are GIFs or PNGs under a .jpg name; jaxft decodes them as such.
Example:
    python scripts/prepare_mit_indoor67.py --source ~/downloads/mit_indoor67 \
        --out ~/tensorflow_datasets/mit_indoor67
"""
import pathlib
import sys

import prepare_common

EXPECTED = {"train": 5360, "test": 1340}


def main() -> None:
    args = prepare_common.parser(
        __doc__.splitlines()[0], "indoorCVPR_09.tar, TrainImages.txt and TestImages.txt").parse_args()
    images = prepare_common.unpack(args.source, "indoorCVPR_09.tar", "Images")
    counts = {}
    for split, list_name in (("train", "TrainImages.txt"), ("test", "TestImages.txt")):
        list_path = args.source / list_name
        if not list_path.is_file():
            sys.exit(f"error: {list_path} is missing; download it from the Indoor-67 homepage.")
        entries = [line.strip() for line in list_path.read_text().splitlines() if line.strip()]
        items = [(images / entry, pathlib.PurePosixPath(entry).parent.name) for entry in entries]
        counts[split] = prepare_common.write_split(args.out, split, items, args.link)
    prepare_common.report(args.out, counts, EXPECTED)


if __name__ == "__main__":
    main()
