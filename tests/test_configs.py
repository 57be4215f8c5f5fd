"""Every shipped config file, with each of its variants, loads, passes the up-front checks and
expands into its grid: a config that only fails when someone runs it for an hour is caught here."""
import importlib
import inspect
import pathlib

import pytest

from jaxft import config_validation, grid

REPO = pathlib.Path(__file__).resolve().parents[1]
LIBRARIES = {"default", "paper_grid"}  # imported by the others, not run on their own


def config_variants():
    for path in sorted((REPO / "configs").glob("*.py")):
        if path.stem in LIBRARIES or path.stem.startswith("_"):
            continue
        module = importlib.import_module(f"configs.{path.stem}")
        if not inspect.signature(module.get_config).parameters:
            yield path.stem, None
            continue
        variants = getattr(module, "VARIANTS", None) or importlib.import_module(
            "configs.paper_grid").VARIANTS
        for variant in variants:
            yield path.stem, variant


@pytest.mark.parametrize("name,variant", list(config_variants()))
def test_config_loads_validates_and_expands(name, variant):
    module = importlib.import_module(f"configs.{name}")
    config = module.get_config() if variant is None else module.get_config(variant)
    config_validation.validate(config)
    points = grid.expand(config) if grid.has_grid(config) else []
    for point in points:
        config_validation.validate(grid.point_config(config, point))


def test_reproduction_grids_are_the_documented_ones():
    from configs import reproduction

    for name in reproduction.DATASETS:
        main = grid.expand(reproduction.get_config(name))
        assert len(main) == 24
        elr = {}
        for point in main:
            values = point.as_dict()
            if values["weight_decay"] == 1e-4:
                eta = round(values["learning_rate"] / (1 - values["momentum"]), 10)
                elr.setdefault(eta, set()).add(values["momentum"])
        pairs = sorted(eta for eta, momenta in elr.items() if momenta == {0.0, 0.9})
        assert pairs == [0.01, 0.05, 0.1, 0.5]  # equal eta' at m 0 and 0.9, as documented
        assert len(grid.expand(reproduction.get_config(f"{name}_l2sp"))) == 4
    with pytest.raises(ValueError, match="choose one of"):
        reproduction.get_config("dogs")


def test_reproduction_write_up_shows_what_its_records_give():
    """Every table of docs/reproduction.md is what scripts/reproduction_tables.py prints from the
    committed records: the write-up cannot drift from the runs."""
    import re
    import subprocess
    import sys

    printed = subprocess.run([sys.executable, "scripts/reproduction_tables.py"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout
    sections = re.findall(r"### .+?\n\n(.*?)\n(?=\n### |\Z)", printed + "\n", re.S)
    assert len(sections) == 5

    def flat(text):
        return "\n".join(line.strip() for line in text.strip().splitlines())

    write_up = flat((REPO / "docs" / "reproduction.md").read_text())
    for section in sections:
        assert flat(section) in write_up, section
