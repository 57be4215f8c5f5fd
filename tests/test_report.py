"""jaxft.report: records in, tables and figures out, checked against numbers worked out by hand
for a small synthetic grid (and for grids too small for some of the report)."""
import csv
import json
import logging
import math
import pathlib
import subprocess
import sys

import pytest

from jaxft import report

REPO = pathlib.Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_record(momentum, learning_rate, weight_decay, error, **overrides):
    """A record as the grid runner writes it; mean class error is top-1 + 0.5."""
    record = {
        "point": f"lr={learning_rate},m={momentum},wd={weight_decay}",
        "learning_rate": learning_rate, "momentum": momentum, "weight_decay": weight_decay,
        "effective_learning_rate": learning_rate / (1 - momentum),
        "effective_weight_decay": weight_decay / learning_rate,
        "weight_decay_mode": "l2", "nesterov": False, "bn_momentum": 0.9,
        "test_top1_error": error, "test_mean_class_error": error + 0.5, "train_loss": 0.05,
        "diverged": False, "steps": 600, "wall_time_s": 812.0,
        "dataset": "oxford_flowers102", "model": "resnet101",
    }
    record.update(overrides)
    return record


def diverged(record):
    return {**record, "diverged": True, "test_top1_error": math.nan,
            "test_mean_class_error": math.nan, "train_loss": math.nan}


def synthetic_error(momentum, learning_rate, weight_decay):
    """Depends on eta' = lr/(1-m) (best at 0.1), a little on wd and m: hand-checkable minima."""
    elr = learning_rate / (1 - momentum)
    return round(10 + 5 * abs(math.log10(elr / 0.1)) + (0.5 if weight_decay == 0 else 0)
                 + 0.3 * momentum, 6)


# lr {0.1, 0.01, 0.001} x m {0.9, 0} x wd {1e-4, 0}. Worked out by hand from synthetic_error:
# best m=0, lr 0.1, wd 1e-4 (eta' 0.1) = 10.00; default m=0.9, lr 0.01, wd 1e-4 = 10.27;
# m=0.9, lr 0.1, wd 1e-4 (eta' 1) diverged, so the best m=0.9 error at eta' 1 is wd 0's 15.77.
GRID = [(m, lr, wd) for m in (0.9, 0.0) for lr in (0.1, 0.01, 0.001) for wd in (1e-4, 0.0)]
DIVERGED = (0.9, 0.1, 1e-4)
BEST_PER_ELR = {  # eta' -> {momentum: (best error, its weight decay)}
    0.001: {0.0: (20.0, 1e-4)},
    0.01: {0.9: (15.27, 1e-4), 0.0: (15.0, 1e-4)},
    0.1: {0.9: (10.27, 1e-4), 0.0: (10.0, 1e-4)},
    1.0: {0.9: (15.77, 0.0)},
}


def grid_records():
    records = []
    for m, lr, wd in GRID:
        record = make_record(m, lr, wd, synthetic_error(m, lr, wd))
        records.append(diverged(record) if (m, lr, wd) == DIVERGED else record)
    return records


def write_results(workdir: pathlib.Path, records, tail: str = "") -> pathlib.Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / report.RESULTS_FILE
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)
    return path


@pytest.fixture(scope="module")
def grid_workdir(tmp_path_factory):
    """The 3x2x2 grid with a stale record of one point before its rerun and a killed writer's
    partial last line; the report is written once for every test that reads it."""
    workdir = tmp_path_factory.mktemp("grid")
    records = grid_records()
    stale = {**records[-1], "test_top1_error": 99.0}
    write_results(workdir, [stale] + records, tail=json.dumps(records[0])[:37])
    report.write_report(workdir)
    return workdir


def markdown_table(text: str, heading: str) -> list[dict]:
    """The first table under `heading` as a list of {column: cell}, bold markers stripped."""
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    split = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    header, rows = split[0], split[2:]
    return [dict(zip(header, (cell.replace("**", "") for cell in row))) | {"_bold": "**" in line}
            for row, line in zip(rows, lines[2:])]


# --------------------------------------------------------------------------------------------
# Records.
# --------------------------------------------------------------------------------------------
def test_load_records_skips_partial_last_line_and_keeps_last_record(tmp_path, caplog):
    records = grid_records()
    stale = {**records[3], "test_top1_error": 99.0}
    path = write_results(tmp_path, [stale] + records, tail='{"point": "lr=0.1,m=0.9,wd=0", "le')
    with caplog.at_level(logging.WARNING, logger="jaxft.report"):
        loaded = report.load_records(path)
    assert len(loaded) == len(GRID)
    assert [r["point"] for r in loaded] == [r["point"] for r in records]
    rerun = next(r for r in loaded if r["point"] == records[3]["point"])
    assert rerun["test_top1_error"] == records[3]["test_top1_error"]
    assert any("line 14" in message for message in caplog.messages)
    assert math.isnan(next(r for r in loaded if r["diverged"])["test_top1_error"])


def test_best_point_breaks_ties_by_mean_class_error():
    first = make_record(0.9, 0.01, 1e-4, 5.0, test_mean_class_error=6.0)
    second = make_record(0.0, 0.01, 1e-4, 5.0, test_mean_class_error=5.5)
    worse = make_record(0.0, 0.1, 0.0, 7.0)
    assert report.best_record([first, worse, second]) is second
    assert report.best_record([diverged(first)]) is None


def test_compact_writes_hyperparameters_as_the_paper_does():
    assert [report.compact(v) for v in (0.1, 0.005, 1e-4, 5e-4, 0.0, 0.1 / (1 - 0.9))] == \
        ["0.1", "0.005", "1e-4", "5e-4", "0", "1"]


# --------------------------------------------------------------------------------------------
# The report of the 3x2x2 grid.
# --------------------------------------------------------------------------------------------
def test_table2_has_one_row_per_record_in_paper_order_with_its_numbers(grid_workdir):
    rows = markdown_table((grid_workdir / "report.md").read_text(), "## All points")
    assert len(rows) == len(GRID)
    keys = [(float(r["m"]), float(r["lr"]), float(r["wd"])) for r in rows]
    assert keys == sorted(GRID, key=lambda k: (-k[0], -k[1], -k[2]))
    for row, (m, lr, wd) in zip(rows, keys):
        assert float(row["η′ = lr/(1−m)"]) == pytest.approx(lr / (1 - m), rel=1e-3)
        if (m, lr, wd) == DIVERGED:
            assert row["top-1 error (%)"] == row["mean class error (%)"] == "diverged"
            continue
        error = synthetic_error(m, lr, wd)
        assert float(row["top-1 error (%)"]) == pytest.approx(error, abs=0.005)
        assert float(row["mean class error (%)"]) == pytest.approx(error + 0.5, abs=0.005)
        assert float(row["train loss"]) == 0.05
    bold = [key for key, row in zip(keys, rows) if row["_bold"]]
    assert bold == [(0.0, 0.1, 1e-4)]


def test_best_and_default_points_and_their_difference(grid_workdir):
    text = (grid_workdir / "report.md").read_text()
    assert "**Best:** m 0, lr 0.1, wd 1e-4 (η′ 0.1): top-1 error **10.00%**" in text
    assert "**Paper default** (m 0.9, lr 0.01, wd 1e-4): top-1 error 10.27%" in text
    assert "**Search gain:** 0.27 points" in text


def test_best_per_effective_learning_rate_picks_the_minima(grid_workdir):
    rows = markdown_table((grid_workdir / "report.md").read_text(), "## Best error per effective")
    assert [float(r["η′"]) for r in rows] == sorted(BEST_PER_ELR)
    for row in rows:
        expected = BEST_PER_ELR[float(row["η′"])]
        for m in (0.9, 0.0):
            cell = row[f"m = {report.compact(m)}"]
            if m not in expected:
                assert cell == ""
                continue
            error, decay = expected[m]
            assert cell == f"{error:.2f} (wd {report.compact(decay)})"
        errors = [e for e, _ in expected.values()]
        gap = row["gap (max − min)"]
        assert gap == (f"{max(errors) - min(errors):.2f}" if len(errors) > 1 else "—")
    assert "differ by a median of 0.27 points (largest 0.27, over 2 η′ values)" in \
        (grid_workdir / "report.md").read_text()


def test_figures_are_pngs_linked_from_the_report(grid_workdir):
    text = (grid_workdir / "report.md").read_text()
    links = [line.split("](", 1)[1].rstrip(")") for line in text.splitlines()
             if line.startswith("![")]
    assert sorted(links) == sorted(f"figures/{name}" for name in (
        "error_lr_momentum.png", "error_vs_effective_lr.png", "error_vs_effective_wd.png"))
    for link in links:
        data = (grid_workdir / link).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
    assert "not drawn" not in text


def test_csv_round_trips_the_records(grid_workdir):
    records = {r["point"]: r for r in report.load_records(grid_workdir / "results.jsonl")}
    with open(grid_workdir / "results.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames[:4] == ["point", "momentum", "learning_rate", "weight_decay"]
    assert reader.fieldnames.index("effective_weight_decay") < reader.fieldnames.index(
        "test_top1_error")
    assert sorted(row["point"] for row in rows) == sorted(records)
    for row in rows:
        record = records[row["point"]]
        assert set(row) == set(record)
        for key, value in record.items():
            if isinstance(value, bool):
                assert row[key] == str(value)
            elif isinstance(value, float):
                parsed = float(row[key])
                assert parsed == value or (math.isnan(parsed) and math.isnan(value)), key
            elif isinstance(value, int):
                assert int(row[key]) == value
            else:
                assert row[key] == value


# --------------------------------------------------------------------------------------------
# Grids too small or too broken for parts of the report.
# --------------------------------------------------------------------------------------------
def test_single_point_grid_skips_every_figure_and_says_so(tmp_path):
    write_results(tmp_path, [make_record(0.9, 0.01, 1e-4, 3.12)])
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "error_vs_effective_lr.png").write_bytes(b"stale")
    text = report.write_report(tmp_path).read_text()
    assert text.count("not drawn") == 3
    assert not list((tmp_path / "figures").glob("*.png"))  # the stale one is gone too
    assert "**Search gain:** 0.00 points" in text
    assert len(markdown_table(text, "## All points")) == 1


def test_single_momentum_grid_without_the_default(tmp_path):
    records = [make_record(0.0, lr, wd, synthetic_error(0.0, lr, wd))
               for lr in (0.1, 0.01) for wd in (1e-3, 0.0)]
    write_results(tmp_path, records)
    text = report.write_report(tmp_path).read_text()
    assert "**Paper default** (m 0.9, lr 0.01, wd 1e-4): not in this grid." in text
    assert "Only one momentum in this grid" in text
    assert "**Best:** m 0, lr 0.1, wd 0.001" in text
    for name in ("error_lr_momentum.png", "error_vs_effective_lr.png",
                 "error_vs_effective_wd.png"):
        assert (tmp_path / "figures" / name).read_bytes().startswith(PNG_SIGNATURE)


def test_all_diverged_grid_still_reports_every_point(tmp_path):
    records = [diverged(make_record(m, 0.1, 0.0, 0.0)) for m in (0.99, 0.9)]
    write_results(tmp_path, records)
    text = report.write_report(tmp_path).read_text()
    assert "No point finished: all 2 diverged." in text
    rows = markdown_table(text, "## All points")
    assert [row["top-1 error (%)"] for row in rows] == ["diverged", "diverged"]
    assert "**Paper default** (m 0.9, lr 0.01, wd 1e-4): not in this grid." in text
    assert (tmp_path / "figures" / "error_lr_momentum.png").is_file()  # the hatched cells
    assert text.count("not drawn") == 2


def test_extra_axis_gets_a_column_and_the_default_prefers_plain_l2(tmp_path):
    records = [make_record(0.9, 0.01, 1e-4, error, weight_decay_mode=mode,
                           point=f"mode={mode}")
               for mode, error in (("l2sp", 3.0), ("l2", 4.0))]
    write_results(tmp_path, records)
    text = report.write_report(tmp_path).read_text()
    rows = markdown_table(text, "## All points")
    assert [(r["mode"], r["note"]) for r in rows] == [("l2", "paper default"), ("l2sp", "best")]
    assert "**Search gain:** 1.00 points" in text


# --------------------------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("content", [None, ""])
def test_cli_without_results_is_one_line_and_exit_2(tmp_path, content):
    if content is not None:
        (tmp_path / report.RESULTS_FILE).write_text(content)
    result = subprocess.run([sys.executable, "-m", "jaxft.report", str(tmp_path)], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert str(tmp_path / report.RESULTS_FILE) in result.stderr


def test_cli_prints_the_report_path_and_best_point(tmp_path, capsys):
    write_results(tmp_path, [make_record(0.9, 0.01, 1e-4, 3.12),
                             make_record(0.0, 0.01, 1e-4, 2.91)])
    assert report.main([str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"report: {tmp_path / 'report.md'}",
                     "best point: lr=0.01,m=0.0,wd=0.0001 (top-1 error 2.91%, "
                     "mean class error 3.41%)"]
