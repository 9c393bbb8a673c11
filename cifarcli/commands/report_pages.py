"""The pages of `cifar report`: every figure and table it writes, from a run's saved files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cifarcli import fileio, runs
from cifarcli import report_tables as tables
from cifarcli.commands import compose
from cifarcli.commands.evaluation import headline_rows, scored_label
from cifarcli.commands.report_extras import run_figures
from cifarcli.commands.report_inputs import Evaluation, RunRecords, read_evaluation
from cifarcli.config import ExperimentConfig, config_to_yaml
from cifarcli.data.augment import augment_preview
from cifarcli.data.cache import CifarArrays
from cifarcli.data.split import stratified_split
from cifarcli.engine.schedules import lr_trace
from cifarcli.plots.class_accuracy import plot_class_accuracy
from cifarcli.plots.confusion import plot_confusion_matrix
from cifarcli.plots.curves import plot_lr_schedule, plot_training_curves
from cifarcli.plots.grids import plot_augmentation_rows, plot_image_grid
from cifarcli.plots.html import Figure, ReportPage, Table, write_report_html

MAX_AUGMENT_ROWS = 10  # classes shown in augmentations.png; more rows stop being readable


def write_report(
    cfg: ExperimentConfig, run_dir: Path, eval_dir: Path, checkpoint_path: Path, checkpoint: dict[str, Any],
    arrays: CifarArrays, labels: compose.LabelSet, run_records: RunRecords,
) -> list[Path]:  # fmt: skip
    """Write every figure and table, and index.html last, into RUN/report/; return the paths written.

    The evaluation shown is the one in `eval_dir` (a folder under RUN/evaluations/, or RUN itself
    for a run of an older cifar).

    Everything is read and checked first, then written into a temporary folder that replaces
    RUN/report/ only when complete: a failed report leaves the previous one as it was.
    """
    evaluation = read_evaluation(eval_dir, labels.class_names, arrays)
    target = run_dir / runs.REPORT_DIR
    with fileio.staged_folder(target) as out_dir:
        best = tables.best_epoch(run_records.metrics)
        curves_title = f"{run_dir.name}: loss and accuracy per epoch"
        figures = [
            *_confusion_figures(evaluation, labels, out_dir),
            _misclassified_figure(cfg.report.misclassified_count, evaluation, arrays, out_dir),
            Figure("Training curves", plot_training_curves(run_records.metrics, out_dir / "curves.png", curves_title, best),
                   "" if best is None else f"The dotted line marks epoch {best}, the one best.pt holds."),
            _lr_figure(cfg, run_records.steps_per_epoch, out_dir),
            *run_figures(cfg, run_dir, out_dir),
            _augmentation_figure(cfg, arrays, labels, out_dir),
        ]  # fmt: skip
        headline = headline_rows(evaluation.summary)
        lead, page_tables, table_files = _write_tables(evaluation, headline, out_dir, f"Classification report: {run_dir.name}")
        header, epoch_rows = tables.epoch_table(run_records.metrics)
        page_tables.append(Table("Metrics per epoch", header, epoch_rows, frozenset(header) - {"best.pt"}))
        facts = _facts(cfg, run_dir, checkpoint_path, evaluation.summary, checkpoint, len(run_records.metrics["epoch"]))
        page = ReportPage(f"cifar report: {run_dir.name}", facts, headline, figures, page_tables, config_to_yaml(cfg), lead)
        figure_paths = [f.path for f in [*lead, *figures] if isinstance(f, Figure)]
        written = [*figure_paths, *table_files, write_report_html(page, out_dir / "index.html")]
    return [target / path.relative_to(out_dir) for path in written]


def _confusion_figures(evaluation: Evaluation, labels: compose.LabelSet, out_dir: Path) -> list[Figure]:
    order, groups = None, None
    if labels.fine_to_coarse is not None and labels.superclass_names is not None:  # CIFAR-100 fine labels
        order = np.argsort(labels.fine_to_coarse, kind="stable")
        groups = [labels.superclass_names[c] for c in labels.fine_to_coarse]
    scored = scored_label(evaluation.summary)
    title = f"Confusion matrix: {scored}" + (", classes grouped by superclass" if groups else "")
    path = plot_confusion_matrix(
        evaluation.matrix, evaluation.class_names, out_dir / "confusion_matrix.png", title, order, groups
    )
    caption = "Each row shows where the images of one true class went: as shares of the row, and as counts (n = the row's images)."
    figures = [Figure("Confusion matrix", path, caption)]
    superclass = evaluation.summary.get("superclass")
    if superclass:
        path = plot_confusion_matrix(
            np.asarray(superclass["confusion_matrix"]), list(superclass["names"]),
            out_dir / "superclass_confusion_matrix.png", f"Superclass confusion matrix: {scored}",
        )  # fmt: skip
        figures.append(Figure("Superclass confusion matrix", path, "Fine-class probabilities summed into the 20 superclasses."))
    return figures


def _misclassified_figure(count: int, evaluation: Evaluation, arrays: CifarArrays, out_dir: Path) -> Figure:
    picks = tables.select_misclassified(evaluation.predictions, count)
    split = evaluation.summary.get("split", "test")
    source = arrays.train_images if split == "val" else arrays.test_images  # val rows index the training set
    indices = picks[:, tables.INDEX].astype(np.int64)  # checked against the split by read_evaluation
    names = evaluation.class_names
    indexed = "train" if split == "val" else "test"  # the set the index points into
    captions = misclassified_captions(picks, names, indexed)
    title = (f"The {_count(len(picks), 'most confidently wrong ' + split + ' image')}: {indexed}-set index, "
             "cross-entropy loss, and the model's probability p for each class")  # fmt: skip
    path = plot_image_grid(np.asarray(source)[indices], captions, out_dir / "misclassified.png", title)
    caption = (f"{split} split, sorted by the probability of the wrong prediction; #N is the image's position in the "
               f"{indexed} set, as in the index column of predictions.csv.")  # fmt: skip
    return Figure("Most confidently misclassified", path, caption)


def misclassified_captions(picks: np.ndarray, names: list[str], indexed: str) -> list[str]:
    """One caption per prediction row: the image's index into the `indexed` set and its loss, then both classes."""
    return [
        f"{indexed} #{int(r[tables.INDEX])}, loss {r[tables.LOSS]:.2f}\n"
        f"true: {names[int(r[tables.TRUE])]} (p={_probability(r[tables.TRUE_PROBABILITY])})\n"
        f"pred: {names[int(r[tables.PREDICTED])]} (p={_probability(r[tables.CONFIDENCE])})"
        for r in picks
    ]


def _probability(p: float) -> str:
    """Two decimals, or two significant digits below 0.1 so small probabilities stay distinct."""
    return f"{p:.2f}" if p >= 0.1 else f"{p:.2g}"


def _lr_figure(cfg: ExperimentConfig, steps: int, out_dir: Path) -> Figure:
    trace = lr_trace(cfg.schedule, cfg.optim.lr, steps, cfg.train.epochs)
    title = f"Learning rate per step ({cfg.schedule.name}, {cfg.optim.name}, peak lr {cfg.optim.lr:g}, {steps} steps/epoch)"
    return Figure("Learning-rate schedule", plot_lr_schedule(trace, steps, out_dir / "lr_schedule.png", title))


def _augmentation_figure(cfg: ExperimentConfig, arrays: CifarArrays, labels: compose.LabelSet, out_dir: Path) -> Figure:
    shown = list(range(min(labels.num_classes, MAX_AUGMENT_ROWS)))
    train_indices, _ = stratified_split(labels.train, cfg.data.val_fraction, cfg.data.split_seed)
    picks = tables.sample_per_class(labels.train, train_indices, shown, cfg.report.augment_images_per_class, cfg.train.seed)
    originals = np.asarray(arrays.train_images)[np.concatenate(picks)]
    augmented = augment_preview(originals, cfg.augment, cfg.train.seed).permute(0, 2, 3, 1).cpu().numpy()
    bounds = np.cumsum([len(p) for p in picks])[:-1]
    title = f"Training augmentations: {_augmentations_on(cfg)}\n{_count(cfg.report.augment_images_per_class, 'image')} per class"
    if len(shown) < labels.num_classes:
        title += f", first {len(shown)} of {labels.num_classes} classes"
    path = plot_augmentation_rows(np.split(originals, bounds), np.split(augmented, bounds),
                                  [labels.class_names[c] for c in shown], out_dir / "augmentations.png", title)  # fmt: skip
    return Figure("Augmentations", path, "Each training image beside the copy the augmentation pipeline made of it.")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _augmentations_on(cfg: ExperimentConfig) -> str:
    a = cfg.augment
    steps = [("crop", a.crop.enabled), ("flip", a.flip.enabled), ("rotation", a.rotation.enabled),
             ("colour jitter", a.color_jitter.enabled), ("cutout", a.cutout.enabled)]  # fmt: skip
    text = ", ".join(name for name, on in steps if on) or "none enabled"
    if a.mix.mixup_alpha > 0 or a.mix.cutmix_alpha > 0:
        text += "; MixUp/CutMix not shown"
    return text


def _write_tables(
    evaluation: Evaluation, headline: list[tuple[str, str]], out_dir: Path, title: str
) -> tuple[list[Figure | Table], list[Table], list[Path]]:
    """Write classification_report.csv/.md, most_confused.csv and class_accuracy.png.

    Returns what goes beside the headline (the per-class table and bars), the other tables, and the files.
    """
    report = tables.classification_report(evaluation.matrix, evaluation.class_names)
    pairs = tables.confused_pairs(evaluation.matrix, evaluation.class_names)
    csv_path, md_path = out_dir / "classification_report.csv", out_dir / "classification_report.md"
    pairs_path = out_dir / "most_confused.csv"
    fileio.write_csv(csv_path, tables.REPORT_COLUMNS, ([row[c] for c in tables.REPORT_COLUMNS] for row in report))
    fileio.write_csv(pairs_path, tables.PAIR_COLUMNS, ([row[c] for c in tables.PAIR_COLUMNS] for row in pairs))
    fileio.write_text_atomic(md_path, tables.report_markdown(title, headline, report, pairs))
    numeric = frozenset({"precision", "recall", "f1", "support", "images", "share_of_true_class"})
    lead: list[Figure | Table] = [
        Table("Per-class precision, recall and F1", tables.REPORT_COLUMNS,
              tables.table_cells(report, tables.REPORT_COLUMNS), numeric),
        _class_accuracy_figure(evaluation, report, out_dir),
    ]  # fmt: skip
    pairs_table = Table("Most confused pairs", tables.PAIR_COLUMNS, tables.table_cells(pairs, tables.PAIR_COLUMNS), numeric,
                        "" if pairs else "No image was misclassified.")  # fmt: skip
    return lead, [pairs_table], [csv_path, md_path, pairs_path]


def _class_accuracy_figure(evaluation: Evaluation, report: list[dict], out_dir: Path) -> Figure:
    recalls = np.array([row["recall"] for row in report[: len(evaluation.class_names)]])  # not the two average rows
    title = f"Accuracy per class: {scored_label(evaluation.summary)}"
    path = plot_class_accuracy(recalls, evaluation.class_names, out_dir / "class_accuracy.png", title, float(evaluation.summary["top1"]))
    return Figure("Accuracy per class", path, "Lowest first; the dashed line is the overall top-1 accuracy.")


def _facts(
    cfg: ExperimentConfig, run_dir: Path, checkpoint_path: Path, summary: dict, checkpoint: dict, epochs_done: int
) -> list[tuple[str, str]]:
    dataset = cfg.data.dataset + (f" ({cfg.data.label_mode} labels)" if cfg.data.dataset == "cifar100" else "")
    if cfg.data.path is not None:  # your own data: where it came from and the size it was fitted to
        dataset += f" ({cfg.data.path}, {cfg.data.image_size}x{cfg.data.image_size})"
    scored = summary.get("checkpoint", str(checkpoint_path))
    return [
        ("run", run_dir.name),
        ("data set", dataset),
        ("model", cfg.model.name),
        ("epochs trained", f"{epochs_done} of {cfg.train.epochs}"),
        ("scored", f"{Path(scored).name} (epoch {summary.get('epoch', checkpoint['epoch'])})"),
        ("weights", "EMA" if summary.get("ema") else "raw"),
        ("flip TTA", "on" if summary.get("tta_flip") else "off"),
        ("peak LR", f"{cfg.optim.lr:.3g}" + (" (from lr-find)" if cfg.lr_source else "")),
        ("shift TTA", "on" if summary.get("tta_shift") else "off"),
        *_target_fact(cfg, checkpoint),
    ]


def _target_fact(cfg: ExperimentConfig, checkpoint: dict) -> list[tuple[str, str]]:
    """train.target_accuracy's figures, recomputed from the checkpoint's history (none when it is off)."""
    from cifarcli.engine.target import time_to_target

    if cfg.train.target_accuracy is None:
        return []
    target = time_to_target(checkpoint.get("history", []), cfg.train.target_accuracy, cfg.train.target_split)
    return [("time to target", target.describe())]
