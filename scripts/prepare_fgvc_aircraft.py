"""FGVC-Aircraft (fgvc-aircraft-2013b.tar.gz) -> <out>/{train,validation,test}/<variant>/<image>.

The paper's 6,667 training images are the official train + validation lists (100 variants), its
3,333 test images the official test list. Images are copied as distributed, copyright banner
included. Example:
    python scripts/prepare_fgvc_aircraft.py --source ~/downloads/fgvc_aircraft \
        --out ~/tensorflow_datasets/fgvc_aircraft
"""
import pathlib

import prepare_common

EXPECTED = {"train": 3334, "validation": 3333, "test": 3333}


def read_list(path: pathlib.Path) -> list[tuple[str, str]]:
    """'1025794 707-320' lines -> [(image id, variant)]; variant names may hold spaces."""
    pairs = []
    for line in path.read_text().splitlines():
        if line.strip():
            image_id, variant = line.strip().split(" ", 1)
            pairs.append((image_id, variant))
    return pairs


def main() -> None:
    args = prepare_common.parser(__doc__.splitlines()[0], "fgvc-aircraft-2013b.tar.gz").parse_args()
    root = prepare_common.unpack(args.source, "fgvc-aircraft-2013b.tar.gz", "fgvc-aircraft-2013b")
    data = root / "data"
    variants = [line.strip() for line in (data / "variants.txt").read_text().splitlines()
                if line.strip()]
    labels = prepare_common.numbered_labels(variants)
    counts = {}
    for split, list_name in (("train", "train"), ("validation", "val"), ("test", "test")):
        pairs = read_list(data / f"images_variant_{list_name}.txt")
        items = [(data / "images" / f"{image_id}.jpg", labels[variant]) for image_id, variant in pairs]
        counts[split] = prepare_common.write_split(args.out, split, items, args.link)
    prepare_common.report(args.out, counts, EXPECTED)


if __name__ == "__main__":
    main()
