"""The figures of a grid's report (matplotlib, Agg canvas, no pyplot state): error over learning
rate x momentum, against the effective learning rate, and against the effective weight decay."""
from __future__ import annotations

import dataclasses
import math
import os
import pathlib

import numpy as np

from jaxft.report import (best_per_cell, compact, effective_learning_rate, effective_weight_decay,
                          finished, grouping_key, top1)

HEATMAP_FILE = "error_lr_momentum.png"
ELR_FILE = "error_vs_effective_lr.png"
EWD_FILE = "error_vs_effective_wd.png"
DPI = 110


@dataclasses.dataclass(frozen=True)
class FigureResult:
    """A drawn figure (filename set, caption says what to look for) or a skipped one (filename
    None, caption says why)."""

    title: str
    filename: str | None
    caption: str


def draw_all(records: list[dict], best: dict | None, default: dict | None,
             figures_dir: pathlib.Path) -> list[FigureResult]:
    figures_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for title, filename, draw in (
            ("Top-1 error over learning rate and momentum", HEATMAP_FILE, heatmap_figure),
            ("Best error against the effective learning rate", ELR_FILE, elr_figure),
            ("Error against the effective weight decay", EWD_FILE, ewd_figure)):
        drawn = draw(records, best, default)
        if isinstance(drawn, str):  # a reason not to draw it; drop a stale one from a last run
            (figures_dir / filename).unlink(missing_ok=True)
            results.append(FigureResult(title, None, drawn))
        else:
            figure, caption = drawn
            _save(figure, figures_dir / filename)
            results.append(FigureResult(title, filename, caption))
    return results


def _save(figure, path: pathlib.Path) -> None:
    temporary = path.with_name(path.name + ".tmp")
    figure.savefig(temporary, format="png", dpi=DPI, bbox_inches="tight")
    os.replace(temporary, path)


def _momentum_colours(records) -> dict[float, tuple]:
    """One colour per momentum, the same in every figure; dark = high momentum."""
    from matplotlib import colormaps

    momenta = sorted({grouping_key(r["momentum"]) for r in records}, reverse=True)
    shades = np.linspace(0.0, 0.8, len(momenta)) if len(momenta) > 1 else [0.0]
    return {m: colormaps["plasma"](s) for m, s in zip(momenta, shades)}


def _ring_best(ax, x: float, error: float) -> None:
    """A ring around the best point: it marks the point without hiding its colour."""
    ax.plot([x], [error], marker="o", markersize=15, markerfacecolor="none",
            markeredgecolor="red", markeredgewidth=2, linestyle="none", zorder=5,
            label=f"best point ({error:.2f}%)")


def _title_context(records) -> str:
    models = ", ".join(sorted({str(r.get("model", "?")) for r in records}))
    datasets = ", ".join(sorted({str(r.get("dataset", "?")) for r in records}))
    return f"{models} on {datasets}"


# --------------------------------------------------------------------------------------------
# (1) Heatmap over learning rate x momentum, one panel per weight decay.
# --------------------------------------------------------------------------------------------
def _momentum_axis(m):
    """log10 1/(1-m): momenta 0, 0.9, 0.99 are evenly spaced and eta' = eta/(1-m) lines are
    straight diagonals (log eta' = log eta + this)."""
    return -np.log10(1.0 - np.asarray(m, dtype=float))


def _cell_edges(centres: np.ndarray) -> np.ndarray:
    if len(centres) == 1:
        return np.array([centres[0] - 0.5, centres[0] + 0.5])
    middles = (centres[1:] + centres[:-1]) / 2
    return np.concatenate([[2 * centres[0] - middles[0]], middles,
                           [2 * centres[-1] - middles[-1]]])


def _cells(records, decay) -> dict[tuple, dict | None]:
    """{(lr, m): best finished record at this weight decay, or None if all there diverged}."""
    at_decay = [r for r in records if grouping_key(r["weight_decay"]) == decay]
    return best_per_cell(at_decay, lambda r: (grouping_key(r["learning_rate"]),
                                              grouping_key(r["momentum"])))


@dataclasses.dataclass(frozen=True)
class _Plane:
    """The learning rate x momentum plane of the heatmap: cell centres and edges in the plotted
    coordinates (log10 lr, log10 1/(1-m)) and the colour scale of the errors."""

    lrs: list
    momenta: list
    x_edges: np.ndarray
    y_edges: np.ndarray
    norm: object
    cmap: object

    def rectangle(self, lr, m):
        i, j = self.lrs.index(lr), self.momenta.index(m)
        corner = (self.x_edges[i], self.y_edges[j])
        size = (self.x_edges[i + 1] - self.x_edges[i], self.y_edges[j + 1] - self.y_edges[j])
        return corner, size, (corner[0] + size[0] / 2, corner[1] + size[1] / 2)


def _colour_scale(errors: list[float]):
    """Viridis reversed (bright = low error). In a large grid the colours saturate at the 80th
    percentile so that a few very bad points do not wash out the differences near the best."""
    from matplotlib import cm, colors

    low = min(errors) if errors else 0.0
    high = float(np.percentile(errors, 80 if len(errors) >= 10 else 100)) if errors else 1.0
    norm = colors.Normalize(low, high if high > low else low + 1.0)
    return norm, colors.ListedColormap(cm.viridis_r(np.linspace(0, 1, 256)))


def heatmap_figure(records, best, default):
    from matplotlib import cm
    from matplotlib.figure import Figure

    lrs = sorted({grouping_key(r["learning_rate"]) for r in records})
    momenta = sorted({grouping_key(r["momentum"]) for r in records})
    if len(lrs) < 2 and len(momenta) < 2:
        return "the grid has a single learning rate and a single momentum"
    decays = sorted({grouping_key(r["weight_decay"]) for r in records}, reverse=True)
    errors = [top1(r) for r in records if finished(r)]
    norm, cmap = _colour_scale(errors)
    plane = _Plane(lrs, momenta, _cell_edges(np.log10(lrs)),
                   _cell_edges(_momentum_axis(momenta)), norm, cmap)
    columns = {4: 2}.get(len(decays), min(len(decays), 3))
    rows = math.ceil(len(decays) / columns)
    figure = Figure(figsize=(columns * (0.75 * len(lrs) + 1.6) + 1.2,
                             rows * (0.6 * len(momenta) + 1.9) + 0.6), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for index, (ax, decay) in enumerate(zip(axes, decays)):
        _heatmap_panel(ax, plane, _cells(records, decay), best, default)
        ax.set_title(f"weight decay {compact(decay)}", fontsize=10)
        if index % columns == 0:
            ax.set_ylabel("momentum m")
    for ax in axes[len(decays):]:
        ax.set_visible(False)
    saturated = bool(errors) and max(errors) > norm.vmax
    if errors:  # an all-diverged grid has no error to give a colour scale
        bar = figure.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), shrink=0.9,
                              ax=list(axes[:len(decays)]),
                              extend="max" if saturated else "neither")
        bar.set_label("top-1 test error (%)")
    figure.suptitle(f"Top-1 test error over learning rate × momentum — {_title_context(records)}"
                    "\nred box: best point; dashed red box: paper default; hatched: diverged; "
                    "white dashes: equal η′ = η/(1−m)", fontsize=10)
    caption = ("One panel per weight decay (other settings at their best); momentum rows are "
               "spaced as log 1/(1−m), so cells on one white dashed diagonal share η′ = η/(1−m). "
               "If the paper is right, errors change little along a diagonal and much across "
               "diagonals. Hatched cells diverged."
               + (" Colours saturate at the 80th percentile; the printed numbers are exact."
                  if saturated else ""))
    return figure, caption


def _heatmap_panel(ax, plane: _Plane, cells: dict, best, default) -> None:
    from matplotlib import patches

    for (lr, m), record in cells.items():
        corner, (width, height), centre = plane.rectangle(lr, m)
        if record is None:
            ax.add_patch(patches.Rectangle(corner, width, height, facecolor="0.88", hatch="xx",
                                           edgecolor="0.45", linewidth=0))
            continue
        colour = plane.cmap(plane.norm(top1(record)))
        ax.add_patch(patches.Rectangle(corner, width, height, facecolor=colour, linewidth=0))
        luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
        # A box of the cell's own colour keeps a diagonal through the centre off the digits.
        ax.text(*centre, f"{top1(record):.2f}", ha="center", va="center",
                fontsize=8 if len(plane.lrs) <= 6 else 6, zorder=4,
                color="black" if luminance > 0.5 else "white",
                bbox=dict(boxstyle="square,pad=0.15", facecolor=colour, linewidth=0))
        for marked, style in ((best, "-"), (default, "--")):
            if record is marked:
                ax.add_patch(patches.Rectangle(corner, width, height, fill=False, zorder=5,
                                               edgecolor="red", linewidth=2.2, linestyle=style))
    if len(plane.momenta) > 1:  # with one momentum, eta' is only the lr axis relabelled
        _iso_elr_lines(ax, plane.x_edges, plane.y_edges)
    ax.set_xlim(plane.x_edges[0], plane.x_edges[-1])
    ax.set_ylim(plane.y_edges[0], plane.y_edges[-1])
    ax.set_xticks(np.log10(plane.lrs), [compact(v) for v in plane.lrs])
    ax.set_yticks(_momentum_axis(plane.momenta), [compact(v) for v in plane.momenta])
    ax.set_xlabel("learning rate η (log scale)")


def _iso_elr_lines(ax, x_edges, y_edges) -> None:
    """Diagonals log eta' = log eta + log 1/(1-m) at every power of ten that crosses the panel,
    labelled where they enter at the top or left."""
    from matplotlib import patheffects

    x0, x1, y0, y1 = x_edges[0], x_edges[-1], y_edges[0], y_edges[-1]
    for exponent in range(math.floor(x0 + y0), math.ceil(x1 + y1) + 1):
        xs = np.array([x0, x1])
        # White dashes edged in black stay visible on the light and the dark end of viridis.
        ax.plot(xs, exponent - xs, linestyle=(0, (4, 3)), color="white", linewidth=1.1,
                zorder=3, path_effects=[patheffects.Stroke(linewidth=2.4, foreground="0.15"),
                                        patheffects.Normal()])
        entry_x = exponent - y1  # where the line meets the top edge
        if x0 <= entry_x <= x1 - 0.15 * (x1 - x0):
            position, align = (entry_x, y1), dict(ha="left", va="top")
        elif y0 + 0.1 * (y1 - y0) <= exponent - x0 <= y1:
            position, align = (x0, exponent - x0), dict(ha="left", va="top")
        else:
            continue
        ax.annotate(f"η′={compact(10.0 ** exponent)}", position, xytext=(3, -3),
                    textcoords="offset points", fontsize=7.5, color="0.1", zorder=6,
                    bbox=dict(boxstyle="round,pad=0.15", facecolor="white", alpha=0.85,
                              linewidth=0), **align)


# --------------------------------------------------------------------------------------------
# (2) Best error against the effective learning rate, one curve per momentum.
# --------------------------------------------------------------------------------------------
def elr_figure(records, best, default):
    from matplotlib import transforms
    from matplotlib.figure import Figure

    from jaxft.report import best_by

    table = best_by(records, effective_learning_rate)
    if len(table) < 2:
        return "the grid has a single effective learning rate"
    if not any(finished(r) for r in records):
        return "every point diverged, there is no error to plot"
    figure = Figure(figsize=(7.0, 4.6), layout="constrained")
    ax = figure.subplots()
    top = transforms.blended_transform_factory(ax.transData, ax.transAxes)
    colours = _momentum_colours(records)
    marked_diverged = False
    for m, colour in colours.items():
        points = sorted((elr, cell[m]) for elr, cell in table.items() if m in cell)
        done = [(elr, top1(r)) for elr, r in points if r is not None]
        if done:
            ax.plot(*zip(*done), marker="o", color=colour, label=f"m = {compact(m)}")
        failed = [elr for elr, r in points if r is None]
        if failed:
            ax.plot(failed, [0.97] * len(failed), "x", color=colour, markersize=9,
                    markeredgewidth=2, transform=top, clip_on=False)
            marked_diverged = True
    if best is not None:
        _ring_best(ax, effective_learning_rate(best), top1(best))
    if marked_diverged:
        ax.plot([], [], "x", color="0.3", markeredgewidth=2, label="diverged (× at top)")
    errors = [top1(r) for r in records if finished(r)]
    span = max(errors) - min(errors) or 1.0
    ax.set_ylim(min(errors) - 0.05 * span, max(errors) + 0.15 * span)  # room for the ×s
    ax.set_xscale("log")
    ax.set_xlabel("effective learning rate η′ = η/(1−m) (log scale)")
    ax.set_ylabel("best top-1 test error (%)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"Best error against η′, one curve per momentum — {_title_context(records)}",
                 fontsize=10)
    caption = ("Each point is the lowest error at that η′ and momentum over the weight decays "
               "(and any other setting). If the paper is right the curves of different momenta "
               "lie on top of each other: η′, not (η, m), decides the error.")
    return figure, caption


# --------------------------------------------------------------------------------------------
# (3) Error against the effective weight decay, coloured by momentum.
# --------------------------------------------------------------------------------------------
def ewd_figure(records, best, default):
    from matplotlib import transforms
    from matplotlib.figure import Figure

    decays = {grouping_key(effective_weight_decay(r)) for r in records}
    if len(decays) < 2:
        return "the grid has a single effective weight decay λ′ = λ/η"
    done = [r for r in records if finished(r)]
    if not done:
        return "every point diverged, there is no error to plot"
    figure = Figure(figsize=(7.0, 4.6), layout="constrained")
    ax = figure.subplots()
    top = transforms.blended_transform_factory(ax.transData, ax.transAxes)
    colours = _momentum_colours(records)
    for m, colour in colours.items():
        ours = [r for r in done if grouping_key(r["momentum"]) == m]
        if ours:
            ax.scatter([effective_weight_decay(r) for r in ours], [top1(r) for r in ours],
                       color=colour, s=28, alpha=0.85, label=f"m = {compact(m)}", zorder=3)
        failed = [effective_weight_decay(r) for r in records
                  if not finished(r) and grouping_key(r["momentum"]) == m]
        if failed:
            ax.plot(failed, [0.97] * len(failed), "x", color=colour, markersize=8,
                    markeredgewidth=2, transform=top, clip_on=False)
    _lower_envelope(ax, done)
    if any(not finished(r) for r in records):
        ax.plot([], [], "x", color="0.3", markeredgewidth=2, label="diverged (× at top)")
    if best is not None:
        _ring_best(ax, effective_weight_decay(best), top1(best))
    scale_note = _effective_decay_axis(ax, decays)
    errors = [top1(r) for r in done]
    span = max(errors) - min(errors) or 1.0
    ax.set_ylim(min(errors) - 0.05 * span, max(errors) + 0.15 * span)
    ax.set_xlabel(f"effective weight decay λ′ = λ/η ({scale_note})")
    ax.set_ylabel("top-1 test error (%)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"Error against λ′ = λ/η, every point — {_title_context(records)}", fontsize=10)
    caption = ("Every finished point, coloured by momentum. Look for the λ′ where the lowest "
               "errors sit: the paper finds the optimal λ′ larger for targets close to ImageNet."
               + (" λ′ = 0 (no weight decay) has no place on a log axis, so the axis is "
                  "symmetric-log: linear in the shaded band around 0, logarithmic beyond."
                  if 0.0 in decays else ""))
    return figure, caption


def _lower_envelope(ax, done: list[dict]) -> None:
    """A grey line through the best error at each lambda'."""
    from jaxft.report import best_by

    lowest = best_by(done, effective_weight_decay)
    envelope = sorted((d, min(top1(r) for r in cell.values())) for d, cell in lowest.items())
    # λ′ = 0 is not on the log stretch: a line from it to the rest would suggest a trend there.
    ax.plot(*zip(*[(d, e) for d, e in envelope if d > 0] or [(math.nan, math.nan)]),
            color="0.5", linewidth=1, zorder=2, label="best at each λ′")
    ax.plot([d for d, _ in envelope if d == 0], [e for d, e in envelope if d == 0], "_",
            color="0.5", markersize=14, zorder=2)


def _effective_decay_axis(ax, decays: set[float]) -> str:
    """A log axis for lambda' (at least two values); with lambda' = 0 (no weight decay) in the
    grid, a symmetric-log one. Returns the scale's name for the axis label."""
    from matplotlib.ticker import NullLocator

    positive = sorted(d for d in decays if d > 0)
    if 0.0 in decays:
        # λ′ = 0 (no weight decay) has no place on a log axis: symlog keeps a linear stretch
        # around 0 one decade below the smallest positive λ′, then goes logarithmic.
        threshold = positive[0] / 10
        ax.set_xscale("symlog", linthresh=threshold, linscale=0.6)
        ax.set_xlim(-threshold * 0.5, positive[-1] * 3)
        ax.axvspan(-threshold * 0.5, threshold, color="0.93", zorder=0)
        decades = range(math.floor(math.log10(positive[0])),
                        math.floor(math.log10(positive[-1] * 3)) + 1)
        ticks = [0.0] + [10.0 ** e for e in decades]
        ax.set_xticks(ticks, ["0\n(no decay)"] + [compact(t) for t in ticks[1:]])
        ax.xaxis.set_minor_locator(NullLocator())
        return "symlog scale; λ′ = 0 in the shaded band"
    ax.set_xscale("log")
    return "log scale"
