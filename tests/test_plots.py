"""Figures and the report page on small hand-made arrays: valid PNGs of the expected size, escaped HTML."""

from __future__ import annotations

import base64
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from cifarcli.plots.class_accuracy import accuracy_order, plot_class_accuracy
from cifarcli.plots.confusion import _group_spans, normalise_rows, plot_confusion_matrix, support_labels
from cifarcli.plots.curves import plot_lr_schedule, plot_training_curves
from cifarcli.plots.grids import plot_augmentation_rows, plot_image_grid
from cifarcli.plots.html import Figure, ReportPage, Table, png_data_uri, render_report_html, write_report_html

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png(path: Path) -> np.ndarray:
    """The RGB(A) pixels of a PNG that must exist, be valid and not be blank."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
    assert float(pixels[..., :3].std()) > 0.01
    return pixels


def random_images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)


def test_normalise_rows_leaves_empty_rows_at_zero() -> None:
    shares = normalise_rows(np.array([[3, 1], [0, 0]]))
    assert shares.tolist() == [[0.75, 0.25], [0.0, 0.0]]


def test_group_spans_are_runs_of_equal_names() -> None:
    assert _group_spans(["a", "a", "b", "a"]) == [("a", 0, 1), ("b", 2, 2), ("a", 3, 3)]
    assert _group_spans([]) == []


def test_confusion_matrix_grows_with_the_number_of_classes(tmp_path: Path) -> None:
    small = read_png(plot_confusion_matrix(np.eye(10, dtype=int) * 5 + 1, [f"c{i}" for i in range(10)], tmp_path / "10.png"))
    rng = np.random.default_rng(0)
    n = 40
    matrix = rng.integers(0, 5, size=(n, n)) + np.eye(n, dtype=int) * 30
    fine_to_coarse = rng.permutation(np.repeat(np.arange(8), 5))
    groups = [f"super_{c}" for c in fine_to_coarse]
    order = np.argsort(fine_to_coarse, kind="stable")
    big = read_png(plot_confusion_matrix(matrix, [f"class_{i}" for i in range(n)], tmp_path / "40.png", "grouped", order, groups))
    assert big.shape[0] > 1.8 * small.shape[0] and big.shape[1] > 1.8 * small.shape[1]


def test_confusion_matrix_draws_counts_beside_the_shares_with_each_rows_support(tmp_path: Path) -> None:
    matrix = np.array([[1200, 3], [40, 7]])
    pixels = read_png(plot_confusion_matrix(matrix, ["a", "b"], tmp_path / "cm.png", "test split, best.pt (epoch 3)"))
    assert pixels.shape[1] > 1.8 * pixels.shape[0]  # two square panels side by side
    assert support_labels(matrix) == ["n=1,203", "n=47"]


def test_class_accuracy_bars_put_the_weakest_class_first(tmp_path: Path) -> None:
    assert accuracy_order(np.array([0.9, 0.2, 0.5, 0.2])).tolist() == [1, 3, 2, 0]
    few = read_png(plot_class_accuracy(np.array([0.9, 0.2, 0.5]), ["a", "b", "c"], tmp_path / "3.png", "acc", 0.5))
    many = read_png(plot_class_accuracy(np.linspace(0, 1, 100), [f"c{i}" for i in range(100)], tmp_path / "100.png", "acc", 0.5))
    assert many.shape[1] == few.shape[1] and many.shape[0] > 5 * few.shape[0]  # one row per class


def test_confusion_matrix_keeps_the_train_call_working(tmp_path: Path) -> None:
    path = plot_confusion_matrix(np.array([[2, 0], [1, 1]]), ["a", "b"], tmp_path / "sub" / "cm.png")
    assert path == tmp_path / "sub" / "cm.png"
    read_png(path)


def test_training_curves_skip_series_that_were_never_recorded(tmp_path: Path) -> None:
    epochs = np.arange(1, 6, dtype=float)
    nan = np.full(5, np.nan)
    metrics = {
        "epoch": epochs, "train_loss": 2.0 / epochs, "train_accuracy": 0.1 * epochs,
        "val_loss": 2.2 / epochs, "val_accuracy": 0.09 * epochs, "ema_val_loss": nan, "ema_val_accuracy": nan,
    }  # fmt: skip
    pixels = read_png(plot_training_curves(metrics, tmp_path / "curves.png", "run"))
    assert pixels.shape[1] > 2 * pixels.shape[0]  # two panels side by side
    no_val = {"epoch": epochs, "train_loss": 2.0 / epochs, "train_accuracy": 0.1 * epochs, "val_loss": nan, "val_accuracy": nan}
    read_png(plot_training_curves(no_val, tmp_path / "train-only.png"))


def test_lr_schedule_figure(tmp_path: Path) -> None:
    lrs = np.concatenate([np.linspace(0.001, 0.1, 30), np.linspace(0.1, 0.0, 70)])
    read_png(plot_lr_schedule(lrs, steps_per_epoch=10, path=tmp_path / "lr.png"))


def test_image_grid_rows_follow_the_count(tmp_path: Path) -> None:
    captions = [f"true: cat (p=0.0{i})\npred: dog (p=0.9{i})" for i in range(10)]
    two_rows = read_png(plot_image_grid(random_images(10), captions, tmp_path / "ten.png", "wrong ones", columns=5))
    one_row = read_png(plot_image_grid(random_images(5), captions[:5], tmp_path / "five.png", "wrong ones", columns=5))
    assert two_rows.shape[1] == one_row.shape[1]
    assert two_rows.shape[0] > 1.6 * one_row.shape[0]
    floats = random_images(3).astype(np.float32) / 255.0
    read_png(plot_image_grid(floats, captions[:3], tmp_path / "floats.png", "float images"))


def test_image_grid_with_nothing_to_show_still_draws(tmp_path: Path) -> None:
    read_png(plot_image_grid(np.zeros((0, 32, 32, 3), dtype=np.uint8), [], tmp_path / "none.png", "no mistakes"))


def test_image_grid_refuses_mismatched_captions(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2 images but 1 captions"):
        plot_image_grid(random_images(2), ["one"], tmp_path / "bad.png", "x")
    assert not (tmp_path / "bad.png").exists()


def test_augmentation_rows_pair_each_original_with_its_copy(tmp_path: Path) -> None:
    originals = [random_images(3, seed=1), random_images(2, seed=2)]  # the second class has fewer images
    augmented = [o.astype(np.float32)[:, ::-1] / 255.0 for o in originals]
    three_rows = [random_images(3, seed=s) for s in range(3)]
    two = read_png(plot_augmentation_rows(originals, augmented, ["cat", "dog"], tmp_path / "aug.png", "augmentations"))
    three = read_png(plot_augmentation_rows(three_rows, three_rows, ["a", "b", "c"], tmp_path / "aug3.png", "augmentations"))
    assert three.shape[0] > two.shape[0]
    with pytest.raises(ValueError):
        plot_augmentation_rows(originals, augmented[:1], ["cat", "dog"], tmp_path / "bad.png", "x")


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str, str]] = []
        self.tags: list[str] = []
        self.text = ""

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.links += [(tag, name, value or "") for name, value in attrs if name in ("src", "href")]

    def handle_data(self, data):
        self.text += data


def test_report_page_escapes_every_string_and_embeds_figures(tmp_path: Path) -> None:
    figure = plot_lr_schedule([0.1, 0.2, 0.1], 1, tmp_path / "lr.png")
    evil = '<script>alert("x")</script>'
    page = ReportPage(
        title=f"run {evil}",
        facts=[("model", evil)],
        headline=[("top-1 accuracy", "50.00%")],
        figures=[Figure(f"LR {evil}", figure, caption=evil)],
        tables=[Table("per class", ["class", "f1"], [[evil, "0.500"]], frozenset({"f1"}), note=evil)],
        config_yaml=f"run:\n  name: '{evil}' # & more\n",
    )
    text = render_report_html(page)
    assert "<script>" not in text and "&lt;script&gt;" in text
    parser = _Links()
    parser.feed(text)
    assert "script" not in parser.tags
    assert parser.links == [("img", "src", png_data_uri(figure))]
    assert base64.b64decode(parser.links[0][2].split(",", 1)[1]) == figure.read_bytes()
    assert f"name: '{evil}' # & more" in parser.text  # the config reads back exactly once unescaped
    assert text.index("<details><summary>Config</summary><pre>") < text.index("name: &#x27;")  # folded away
    assert text.count(evil) == 0
    written = write_report_html(page, tmp_path / "out" / "index.html")
    assert written.read_text(encoding="utf-8") == text


def test_log_axes_label_their_decades_as_plain_text() -> None:
    from cifarcli.plots.figures import new_figure, set_log_scale

    fig, ax = new_figure(4.0, 3.0)
    ax.plot([1e-5, 1e-1], [1.0, 2.0])
    set_log_scale(ax, "x")
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert "0.001" in labels and not any("$" in label or "mathdefault" in label for label in labels)  # mathtext is off
