"""Prints docs/reproduction.md's tables from the committed grid records, so that every number in
the write-up comes from docs/reproduction/<experiment>/results.jsonl and not from a hand copy.

    python scripts/reproduction_tables.py                      # all tables, Markdown
    python scripts/reproduction_tables.py runs/reproduction    # the same from the run folders
"""
from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from jaxft import report  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1] / "docs" / "reproduction"
DATASETS = {"flowers": "Flowers (validation)", "caltech101": "Caltech-101 (test)"}


def records(experiment: str) -> list[dict]:
    root = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    path = root / experiment / report.RESULTS_FILE
    return report.load_records(path) if path.is_file() else []


def cell(record: dict | None, metric: str = "test_top1_error") -> str:
    if record is None:
        return "—"
    return report.error_text(record[metric]) if report.finished(record) else "diverged"


def table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(report.markdown_table(header, rows))


def setting(record: dict) -> tuple:
    return (report.grouping_key(record["momentum"]), report.grouping_key(record["learning_rate"]),
            report.grouping_key(record["weight_decay"]))


def table2() -> str:
    """Every (m, lr, wd) of the main grids, in the paper's order, both data sets side by side."""
    by_dataset = {name: {setting(r): r for r in records(name)} for name in DATASETS}
    settings = sorted({s for rows in by_dataset.values() for s in rows}, reverse=True)
    header = ["m", "lr", "wd", "η′"]
    for title in DATASETS.values():
        header += [f"{title} top-1", f"{title} mean class"]
    rows = []
    for m, lr, wd in settings:
        row = [report.compact(m), report.compact(lr), report.compact(wd),
               report.compact(lr / (1 - m))]
        for name in DATASETS:
            record = by_dataset[name].get((m, lr, wd))
            row += [cell(record), cell(record, "test_mean_class_error")]
        rows.append(row)
    return table(header, rows)


def best_lines() -> str:
    lines = []
    for name, title in DATASETS.items():
        rows = records(name)
        best = report.best_record(rows)
        if best is None:
            continue
        per_momentum = report.best_per_cell(rows, lambda r: report.grouping_key(r["momentum"]))
        parts = ", ".join(
            f"m {report.compact(m)}: {cell(r)} (lr {report.compact(r['learning_rate'])}, "
            f"η′ {report.compact(report.effective_learning_rate(r))})"
            for m, r in sorted(per_momentum.items(), reverse=True) if r is not None)
        lines.append(f"- {title}: best {parts}.")
    return "\n".join(lines)


def elr_table() -> str:
    """Best top-1 error (over weight decay) per effective learning rate and momentum."""
    tables = {name: report.best_by(records(name), report.effective_learning_rate)
              for name in DATASETS}
    elrs = sorted({elr for t in tables.values() for elr in t})
    header = ["η′"]
    for title in DATASETS.values():
        header += [f"{title} m = 0.9", f"{title} m = 0", "gap"]
    rows = []
    for elr in elrs:
        row = [report.compact(elr)]
        for name in DATASETS:
            by_m = tables[name].get(elr, {})
            high, zero = by_m.get(0.9), by_m.get(0.0)
            gap = (f"{report.top1(zero) - report.top1(high):+.2f}"
                   if high is not None and zero is not None else "")
            row += [cell(high), cell(zero), gap]
        rows.append(row)
    return table(header, rows)


def weight_decay_noise() -> str:
    """|error(wd 1e-4) - error(wd 0)| at equal (m, lr): at these step counts 1e-4 moves the
    weights by about lr * wd * steps ~ 1e-4 of their size, so the gap is mostly run-to-run noise."""
    lines = []
    for name, title in DATASETS.items():
        rows = {setting(r): r for r in records(name) if report.finished(r)}
        diffs = [report.top1(rows[(m, lr, 1e-4)]) - report.top1(rows[(m, lr, 0.0)])
                 for m, lr, wd in rows if wd == 0.0 and (m, lr, 1e-4) in rows]
        gaps = [abs(d) for d in diffs]
        if gaps:
            lower, higher = sum(d < 0 for d in diffs), sum(d > 0 for d in diffs)
            lines.append(f"- {title}: {len(gaps)} pairs, |difference| mean "
                         f"{sum(gaps) / len(gaps):.2f}, largest {max(gaps):.2f} points; wd 1e-4 "
                         f"lower in {lower}, higher in {higher}.")
    return "\n".join(lines)


def l2sp_table() -> str:
    header = ["regularizer", "α (wd)"]
    tables = {}
    for name, title in DATASETS.items():
        header += [f"{title} top-1", f"{title} mean class"]
        tables[name] = {(r["weight_decay_mode"], report.grouping_key(r["weight_decay"])): r
                        for r in records(f"{name}_l2sp")}
    keys = sorted({k for t in tables.values() for k in t}, key=lambda k: (k[0], -k[1]))
    rows = []
    for mode, wd in keys:
        row = ["L2-SP" if mode == "l2sp" else "L2", report.compact(wd)]
        for name in DATASETS:
            record = tables[name].get((mode, wd))
            row += [cell(record), cell(record, "test_mean_class_error")]
        rows.append(row)
    settings = []
    for name, title in DATASETS.items():
        some = next(iter(tables[name].values()), None)
        if some is not None:
            settings.append(f"{title}: m {report.compact(some['momentum'])}, lr "
                            f"{report.compact(some['learning_rate'])}")
    return table(header, rows) + "\n\n(" + "; ".join(settings) + ")"


def main() -> None:
    sections = [("Table 2 layout", table2()), ("Best per momentum", best_lines()),
                ("Best per effective learning rate", elr_table()),
                ("Weight decay 1e-4 against 0 at equal (m, lr)", weight_decay_noise()),
                ("L2 against L2-SP", l2sp_table())]
    for title, body in sections:
        print(f"### {title}\n\n{body}\n")


if __name__ == "__main__":
    main()
