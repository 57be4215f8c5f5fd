"""A grid's report: its results.jsonl as a CSV, a Markdown page with the paper's tables (Table 2 and
the best error per effective learning rate) and figures over learning rate, momentum and decay."""
from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import pathlib
import sys
from typing import Iterable

RESULTS_FILE = "results.jsonl"
REPORT_FILE = "report.md"
CSV_FILE = "results.csv"
FIGURES_DIR = "figures"
# The paper's default (Li et al. 2020, Table 2, first row); the rest of a record's settings
# default to what the paper used (plain L2, no Nesterov, BN momentum 0.9 in the MXNet sense).
PAPER_DEFAULT = dict(momentum=0.9, learning_rate=0.01, weight_decay=1e-4)
PAPER_DEFAULT_EXTRAS = dict(weight_decay_mode="l2", nesterov=False, bn_momentum=0.9)
# Settings besides (m, lr, wd) that a grid may vary; they get a column only when they vary.
EXTRA_AXES = ("weight_decay_mode", "bn_momentum", "nesterov")
HYPERPARAMETER_COLUMNS = ("point", "momentum", "learning_rate", "weight_decay",
                          "weight_decay_mode", "nesterov", "bn_momentum",
                          "effective_learning_rate", "effective_weight_decay")
METRIC_COLUMNS = ("test_top1_error", "test_mean_class_error", "train_loss", "diverged", "steps",
                  "wall_time_s")
CONTEXT_COLUMNS = ("dataset", "model")
# What a record needs to be placed in the tables; a line without them is skipped.
REQUIRED_FIELDS = ("point", "momentum", "learning_rate", "weight_decay")
SHORT_NAMES = {"momentum": "m", "learning_rate": "lr", "weight_decay": "wd"}
AXIS_LABELS = {"weight_decay_mode": "mode", "bn_momentum": "BN momentum", "nesterov": "Nesterov"}
MODE_ORDER = {"l2": 0, "decoupled": 1, "l2sp": 2}

log = logging.getLogger(__name__)


class ReportError(ValueError):
    """No report can be written (no results yet)."""


# --------------------------------------------------------------------------------------------
# Records.
# --------------------------------------------------------------------------------------------
def load_records(path: str | os.PathLike) -> list[dict]:
    """The records of a results.jsonl, one per point (a point recorded twice keeps its last
    record). A line that is not valid JSON (the partial last line of a killed writer) is skipped
    with a warning rather than failing: the report of the finished points is still wanted."""
    by_point: dict[str, dict] = {}
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s line %d is not a complete record (a killed writer?); skipped.",
                            path, number)
                continue
            missing = [key for key in REQUIRED_FIELDS
                       if not isinstance(record, dict) or key not in record]
            if missing:
                log.warning("%s line %d lacks %s; skipped.", path, number, ", ".join(missing))
                continue
            by_point.pop(record["point"], None)  # the rerun's record, in the rerun's place
            by_point[record["point"]] = record
    return list(by_point.values())


def number(value) -> float:
    """A metric as a float; None (JSON null) and anything unreadable are NaN."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def top1(record: dict) -> float:
    return number(record.get("test_top1_error"))


def finished(record: dict) -> bool:
    """Trained to the end with a finite error (a diverged point has NaN errors)."""
    return not record.get("diverged", False) and math.isfinite(top1(record))


def effective_learning_rate(record: dict) -> float:
    """eta' = eta / (1 - m), from the record when it has it."""
    if record.get("effective_learning_rate") is not None:
        return float(record["effective_learning_rate"])
    return record["learning_rate"] / (1.0 - record["momentum"])


def effective_weight_decay(record: dict) -> float:
    """lambda' = lambda / eta."""
    if record.get("effective_weight_decay") is not None:
        return float(record["effective_weight_decay"])
    return record["weight_decay"] / record["learning_rate"]


def grouping_key(value: float) -> float:
    """Six significant digits: 0.01 / (1 - 0.9) and 0.1 are the same effective learning rate."""
    return float(f"{value:.6g}")


def paper_order(records: Iterable[dict]) -> list[dict]:
    """Table 2's order: momentum, then learning rate, then weight decay, each descending."""
    def key(record):
        return (-record["momentum"], -record["learning_rate"], -record["weight_decay"],
                MODE_ORDER.get(record.get("weight_decay_mode"), 9),
                -(number(record.get("bn_momentum")) if "bn_momentum" in record else 0.9),
                bool(record.get("nesterov")),
                record["point"])
    return sorted(records, key=key)


def best_record(records: list[dict]) -> dict | None:
    """Lowest top-1 error; ties broken by mean class error. None when every point diverged."""
    candidates = [r for r in records if finished(r)]
    if not candidates:
        return None

    def key(record):
        mean_class = number(record.get("test_mean_class_error"))
        return (top1(record), mean_class if math.isfinite(mean_class) else math.inf)
    return min(paper_order(candidates), key=key)


def find_point(records: list[dict], wanted: dict) -> dict | None:
    """The record whose hyperparameters equal `wanted`; if several do (they differ in another
    setting), the one with the paper's settings for the rest, else the first in table order."""
    matches = [r for r in paper_order(records)
               if all(_same_setting(r.get(k), v) for k, v in wanted.items())]
    paper_like = [r for r in matches
                  if all(r.get(k, v) == v for k, v in PAPER_DEFAULT_EXTRAS.items())]
    return (paper_like or matches or [None])[0]


def _same_setting(value, wanted) -> bool:
    """Numbers equal up to float noise (0.01 / (1 - 0.9) is 0.1); anything else exactly."""
    if isinstance(wanted, (int, float)) and not isinstance(wanted, bool):
        return math.isclose(number(value), wanted, rel_tol=1e-6, abs_tol=1e-12)
    return value == wanted


def varying_axes(records: list[dict]) -> list[str]:
    return [axis for axis in EXTRA_AXES if len({repr(r.get(axis)) for r in records}) > 1]


# --------------------------------------------------------------------------------------------
# CSV.
# --------------------------------------------------------------------------------------------
def write_csv(records: list[dict], path: str | os.PathLike) -> pathlib.Path:
    """The records as CSV in table order: hyperparameters, then metrics, then the data set and
    model, then any other field. Floats are written exactly (repr), NaN as `nan`. Written to a
    temporary file and renamed, so a reader never sees half a table."""
    known = HYPERPARAMETER_COLUMNS + METRIC_COLUMNS + CONTEXT_COLUMNS
    others = sorted({key for r in records for key in r} - set(known))
    columns = list(known) + others
    path = pathlib.Path(path)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        for record in paper_order(records):
            writer.writerow({k: (repr(v) if isinstance(v, float) else v)
                             for k, v in record.items()})
    os.replace(temporary, path)
    return path


# --------------------------------------------------------------------------------------------
# Markdown.
# --------------------------------------------------------------------------------------------
def compact(value) -> str:
    """A hyperparameter as the paper writes it: 0.01, 0.005, 1e-4, 0."""
    value = number(value)
    if value != 0 and abs(value) < 1e-3:
        exponent = math.floor(math.log10(abs(value)))
        mantissa = round(value / 10 ** exponent, 3)
        if abs(mantissa) >= 10:  # 9.9996e-5 rounds up to 1e-4
            mantissa, exponent = mantissa / 10, exponent + 1
        return f"{mantissa:g}e{exponent}"
    return f"{value:.4g}"


def error_text(value) -> str:
    value = number(value)
    return f"{value:.2f}" if math.isfinite(value) else "—"


def percent(value) -> str:
    value = number(value)
    return f"{value:.2f}%" if math.isfinite(value) else "—"


def _row(cells: list[str], bold: bool = False) -> str:
    return "| " + " | ".join(f"**{c}**" if bold and c else c for c in cells) + " |"


def markdown_table(header: list[str], rows: list[list[str]],
                   bold_rows: set[int] = frozenset()) -> list[str]:
    """A Markdown table's lines; the rows in `bold_rows` are set in bold."""
    lines = [_row(header), _row(["---"] * len(header))]
    lines += [_row(cells, i in bold_rows) for i, cells in enumerate(rows)]
    return lines


def _point_description(record: dict, varying: list[str]) -> str:
    parts = [f"m {compact(record['momentum'])}", f"lr {compact(record['learning_rate'])}",
             f"wd {compact(record['weight_decay'])}"]
    parts += [f"{AXIS_LABELS[a]} {record.get(a)}" for a in varying]
    return ", ".join(parts)


def _summary_section(records, best, default, default_point, varying) -> list[str]:
    wanted = ", ".join(f"{SHORT_NAMES.get(k, k.replace('_', ' '))} {compact(v)}"
                       for k, v in default_point.items())
    lines = ["## Best point and the paper's default", ""]
    if best is None:
        lines.append(f"No point finished: all {len(records)} diverged.")
    else:
        lines.append(f"- **Best:** {_point_description(best, varying)} (η′ "
                     f"{compact(effective_learning_rate(best))}): top-1 error "
                     f"**{percent(top1(best))}**, mean class error "
                     f"{percent(best.get('test_mean_class_error'))}.")
    if default is None:
        lines.append(f"- **Paper default** ({wanted}): not in this grid.")
    elif not finished(default):
        lines.append(f"- **Paper default** ({_point_description(default, varying)}): diverged.")
    else:
        lines.append(f"- **Paper default** ({_point_description(default, varying)}): top-1 "
                     f"error {percent(top1(default))}, mean class error "
                     f"{percent(default.get('test_mean_class_error'))}.")
        if best is not None:
            lines.append(f"- **Search gain:** {top1(default) - top1(best):.2f} points of top-1 "
                         f"error (default minus best).")
    return lines + [""]


def _table2_section(records, best, default, varying) -> list[str]:
    header = (["m", "lr", "wd"] + [AXIS_LABELS[a] for a in varying]
              + ["η′ = lr/(1−m)", "λ′ = wd/lr", "top-1 error (%)", "mean class error (%)",
                 "train loss", "note"])
    rows, bold = [], set()
    for index, record in enumerate(paper_order(records)):
        diverged = not finished(record)
        notes = [n for n, r in (("best", best), ("paper default", default)) if r is record]
        loss = number(record.get("train_loss"))
        rows.append([compact(record["momentum"]), compact(record["learning_rate"]),
                     compact(record["weight_decay"])]
                    + [str(record.get(a)) for a in varying]
                    + [compact(effective_learning_rate(record)),
                       compact(effective_weight_decay(record)),
                       "diverged" if diverged else error_text(top1(record)),
                       "diverged" if diverged else error_text(record.get("test_mean_class_error")),
                       f"{loss:.4g}" if math.isfinite(loss) else "—",
                       ", ".join(notes)])
        if record is best:
            bold.add(index)
    return (["## All points (the paper's Table 2 layout)", "",
             "Sorted as in the paper: momentum, learning rate, weight decay, each descending. "
             "The best point is in bold; diverged points are kept and marked.", ""]
            + markdown_table(header, rows, bold) + [""])


def best_per_cell(records, cell_of) -> dict:
    """{cell_of(record): best finished record of that cell, or None if every one there diverged}."""
    cells: dict = {}
    for record in records:
        key = cell_of(record)
        incumbent = cells.get(key)
        if finished(record) and (incumbent is None or top1(record) < top1(incumbent)):
            cells[key] = record
        else:
            cells.setdefault(key, None)
    return cells


def best_by(records, group) -> dict[float, dict[float, dict | None]]:
    """{group value: {momentum: best finished record, or None if every one there diverged}}."""
    table: dict[float, dict[float, dict | None]] = {}
    cells = best_per_cell(records, lambda r: (grouping_key(group(r)), grouping_key(r["momentum"])))
    for (value, momentum), record in cells.items():
        table.setdefault(value, {})[momentum] = record
    return table


def momentum_gaps(table) -> list[float]:
    """Per group value run with two or more momenta: the largest minus the smallest best error."""
    gaps = []
    for cell in table.values():
        errors = [top1(r) for r in cell.values() if r is not None]
        if len(errors) >= 2:
            gaps.append(max(errors) - min(errors))
    return gaps


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _elr_section(records, varying) -> list[str]:
    table = best_by(records, effective_learning_rate)
    momenta = sorted({grouping_key(r["momentum"]) for r in records}, reverse=True)
    header = ["η′"] + [f"m = {compact(m)}" for m in momenta] + ["gap (max − min)"]
    rows = []
    for elr in sorted(table):
        cell = table[elr]
        texts = []
        for m in momenta:
            if m not in cell:
                texts.append("")
            elif cell[m] is None:
                texts.append("diverged")
            else:
                setting = [f"wd {compact(cell[m]['weight_decay'])}"]
                setting += [f"{AXIS_LABELS[a]} {cell[m].get(a)}" for a in varying]
                texts.append(f"{error_text(top1(cell[m]))} ({', '.join(setting)})")
        errors = [top1(r) for r in cell.values() if r is not None]
        rows.append([compact(elr)] + texts
                    + [f"{max(errors) - min(errors):.2f}" if len(errors) >= 2 else "—"])
    lines = ["## Best error per effective learning rate", "",
             "Each cell is the lowest top-1 error (%) at that η′ and momentum over every other "
             "setting (the setting that reached it in brackets); an empty cell was not run.",
             ""] + markdown_table(header, rows) + [""]
    return lines + [_equal_elr_verdict(records, table, len(momenta)), ""]


def _equal_elr_verdict(records, elr_table, momentum_count) -> str:
    """The paper's check in numbers: momenta differ little at equal eta', more at equal eta."""
    if momentum_count < 2:
        return ("Only one momentum in this grid: the equal-η′ check (do different momenta reach "
                "the same best error at the same η′?) needs at least two.")
    elr_gaps = momentum_gaps(elr_table)
    if not elr_gaps:
        return ("No η′ was run with two momenta that both finished, so the equal-η′ check "
                "cannot be made on this grid: to make it, run m = 0 at ten times the learning "
                "rates of m = 0.9.")
    text = (f"At equal η′ the best errors of different momenta differ by a median of "
            f"{_median(elr_gaps):.2f} points (largest {max(elr_gaps):.2f}, over {len(elr_gaps)} "
            f"η′ values)")
    lr_gaps = momentum_gaps(best_by(records, lambda r: r["learning_rate"]))
    if lr_gaps:
        text += (f"; at equal learning rate η they differ by a median of "
                 f"{_median(lr_gaps):.2f} points (over {len(lr_gaps)} values)")
    return (text + ". The paper finds the first gap small: η′, not (η, m), is what decides the "
            "error, so search η′.")


def _figures_section(figures: list) -> list[str]:
    lines = ["## Figures", ""]
    for figure in figures:
        if figure.filename:
            lines += [f"![{figure.title}]({FIGURES_DIR}/{figure.filename})", "",
                      f"*{figure.title}.* {figure.caption}", ""]
        else:
            lines += [f"*{figure.title}:* not drawn — {figure.caption}.", ""]
    return lines


def _header(records, source: pathlib.Path) -> list[str]:
    datasets = ", ".join(sorted({str(r.get("dataset", "?")) for r in records}))
    models = ", ".join(sorted({str(r.get("model", "?")) for r in records}))
    diverged = sum(not finished(r) for r in records)
    hours = sum(number(r.get("wall_time_s")) for r in records
                if math.isfinite(number(r.get("wall_time_s")))) / 3600
    return [f"# Grid report: {models} on {datasets}", "",
            f"{len(records)} points ({diverged} diverged) from `{source.name}`, {hours:.1f} h "
            f"of training in all. Errors are test-set errors in percent; differences are in "
            f"points of error. Every record is also in [{CSV_FILE}]({CSV_FILE}).", ""]


def write_report(workdir: str | os.PathLike, *,
                 default_point: dict = PAPER_DEFAULT) -> pathlib.Path:
    """Writes WORKDIR/report.md, WORKDIR/results.csv and WORKDIR/figures/*.png from
    WORKDIR/results.jsonl; returns the report's path. Raises ReportError without records."""
    return _write_report(pathlib.Path(workdir), dict(default_point))[0]


def _write_report(workdir: pathlib.Path, default_point: dict) -> tuple[pathlib.Path, list, dict]:
    """write_report, also returning the records and the best one (for the command line)."""
    from jaxft import report_figures  # matplotlib only when drawing: the grid imports us to resume

    source = workdir / RESULTS_FILE
    records = load_records(source) if source.is_file() else []
    if not records:
        raise ReportError(f"no grid results in {source} (missing or empty): run the grid with "
                          f"this workdir first, or pass the folder that holds {RESULTS_FILE}")
    best = best_record(records)
    default = find_point(records, default_point)
    varying = varying_axes(records)
    write_csv(records, workdir / CSV_FILE)
    figures = report_figures.draw_all(records, best, default, workdir / FIGURES_DIR)
    lines = (_header(records, source) + _summary_section(records, best, default,
                                                        default_point, varying)
             + _table2_section(records, best, default, varying) + _elr_section(records, varying)
             + _figures_section(figures))
    path = workdir / REPORT_FILE
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("\n".join(lines), encoding="utf-8")
    os.replace(temporary, path)
    return path, records, best


# --------------------------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jaxft.report",
        description="Write report.md, results.csv and figures/ from a grid's results.jsonl.")
    parser.add_argument("workdir", type=pathlib.Path,
                        help=f"the grid's workdir (the folder that holds {RESULTS_FILE})")
    args = parser.parse_args(argv)
    workdir = args.workdir.parent if args.workdir.name == RESULTS_FILE else args.workdir
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        path, records, best = _write_report(workdir, dict(PAPER_DEFAULT))
    except ReportError as error:
        print(f"jaxft.report: {error}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    if best is None:
        print(f"best point: none (all {len(records)} points diverged)")
    else:
        print(f"best point: {best['point']} (top-1 error {percent(top1(best))}, "
              f"mean class error {percent(best.get('test_mean_class_error'))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
