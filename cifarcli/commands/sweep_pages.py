"""The files a sweep folder ends with: summary.csv, heatmaps or bars, validation curves, index.html."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np

from cifarcli.config import ExperimentConfig, config_to_yaml
from cifarcli.plots.html import Figure, ReportPage, Table, write_report_html
from cifarcli.plots.overlays import Series, plot_overlaid
from cifarcli.plots.sweep import plot_heatmap, plot_trial_bars
from cifarcli.sweeps.spec import SweepSpec, format_value, short_keys
from cifarcli.sweeps.summary import TrialRecord, best_record, pair_matrix, summary_header, summary_rows, write_summary_csv

INDEX_FILE = "index.html"
CURVES_FILE = "val_curves.png"
BARS_FILE = "trials.png"


def write_sweep_outputs(
    folder: Path, spec: SweepSpec, base: ExperimentConfig, records: list[TrialRecord], tally: str, storage: str
) -> list[Path]:  # fmt: skip
    """Write summary.csv, the figures and index.html (last) into the sweep folder; return their paths."""
    columns = spec.setting_columns()
    summary = write_summary_csv(folder, records, columns)
    figures = _heatmaps(folder, spec, records) if spec.kind == "grid" and len(spec.grid) >= 2 else [_bars(folder, spec, records)]
    curves = [Series(r.name, np.arange(1, r.epochs + 1), np.asarray(r.val_curve), dashed=r.state != "complete") for r in records]
    figures.append(Figure("Validation accuracy per epoch", plot_overlaid(
        curves, folder / CURVES_FILE, f"{folder.name}: validation accuracy of every trial", "epoch", "validation accuracy (%)", percent=True,
    ), "Dashed: pruned, failed or unfinished trials."))  # fmt: skip
    header = summary_header(columns)
    cells = [[_display(v) for v in row] for row in summary_rows(records, columns)]
    numeric = frozenset(["final_val_accuracy", "best_val_accuracy", "test_accuracy", "seconds", "epochs"])
    table = Table("Trials", header, cells, numeric, "" if records else "No trial has started yet.")
    page = ReportPage(f"cifar sweep: {folder.name}", _facts(spec, tally, storage), _headline(records),
                      figures, [table], config_to_yaml(base))  # fmt: skip
    index = write_report_html(page, folder / INDEX_FILE)
    return [summary, *(f.path for f in figures), index]


def _display(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def _labels(values: list[object]) -> list[str]:
    return [format_value(v) for v in values]


def _heatmaps(folder: Path, spec: SweepSpec, records: list[TrialRecord]) -> list[Figure]:
    """One heatmap per pair of grid axes; with a third axis, each cell averages over it."""
    short = short_keys(list(spec.grid))
    figures = []
    for key_a, key_b in itertools.combinations(spec.grid, 2):
        cells = pair_matrix(records, key_a, spec.grid[key_a], key_b, spec.grid[key_b])
        rest = [k for k in spec.grid if k not in (key_a, key_b)]
        note = f", mean over {', '.join(rest)}" if rest else ""
        name = re.sub(r"[^A-Za-z0-9._-]", "_", f"heatmap_{short[key_a]}_{short[key_b]}.png")
        path = plot_heatmap(cells, _labels(spec.grid[key_a]), _labels(spec.grid[key_b]), key_a, key_b, folder / name,
                            f"Best validation accuracy (%) by {key_a} and {key_b}{note}")  # fmt: skip
        figures.append(Figure(f"{key_a} x {key_b}", path, "Grey cells: no finished trial (failed, pruned or not run yet)."))
    return figures


def _bars(folder: Path, spec: SweepSpec, records: list[TrialRecord]) -> Figure:
    if spec.kind == "variants":
        labels = [str(r.settings.get("variant", r.name)) for r in records]
    elif spec.kind == "grid":
        (key,) = spec.grid
        labels = [format_value(r.settings.get(key)) for r in records]
    else:
        labels = [r.name for r in records]
    path = plot_trial_bars(labels, [r.best_val_accuracy for r in records], [r.test_accuracy for r in records],
                           [r.state for r in records], folder / BARS_FILE, f"{folder.name}: accuracy per trial")  # fmt: skip
    return Figure("Accuracy per trial", path, "Best validation accuracy (the sweep's objective) and the best checkpoint's test accuracy.")


def _facts(spec: SweepSpec, tally: str, storage: str) -> list[tuple[str, str]]:
    kind = {"grid": f"grid over {', '.join(spec.grid)}", "variants": f"variants: {', '.join(spec.variants)}",
            "search": f"search over {', '.join(spec.space)} (TPE, seed {spec.seed})"}[spec.kind]  # fmt: skip
    return [("sweep", spec.name), ("kind", kind), ("trials", tally), ("pruning", "median" if spec.prune else "off"), ("storage", storage)]


def _headline(records: list[TrialRecord]) -> list[tuple[str, str]]:
    best = best_record(records)
    if best is None:
        return [("best trial", "none finished yet")]
    settings = ", ".join(f"{k}={format_value(v, 4)}" for k, v in best.settings.items())
    test = f"{best.test_accuracy:.2%}" if best.test_accuracy is not None else "-"
    return [("best trial", best.name), ("its settings", settings), ("best validation accuracy", f"{best.best_val_accuracy:.2%}"),
            ("its test accuracy", test)]  # fmt: skip
