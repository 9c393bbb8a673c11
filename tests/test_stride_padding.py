"""Stride and padding: the output-size formula, the grid of feature maps, and `visualize-filters --stride-padding`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from cifarcli.cli import app
from cifarcli.engine.conv_geometry import PADDINGS, STRIDES, conv_output_side, stride_padding_maps


@pytest.mark.parametrize("n, k, s, p, expected", [(32, 3, 1, 0, 30), (32, 3, 1, 1, 32), (32, 3, 2, 1, 16), (32, 3, 3, 2, 12),
                                                  (32, 5, 2, 0, 14), (7, 7, 1, 0, 1), (32, 3, 3, 0, 10)])  # fmt: skip
def test_output_side_follows_the_formula(n: int, k: int, s: int, p: int, expected: int) -> None:
    assert conv_output_side(n, k, s, p) == expected == (n + 2 * p - k) // s + 1


def test_the_grid_has_every_stride_and_padding_with_the_shapes_the_formula_gives() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, kernel_size=3, padding=1)
    images = torch.randn(2, 3, 32, 32)
    grid = stride_padding_maps(conv, images)
    assert [(g.stride, g.padding) for g in grid] == [(s, p) for s in STRIDES for p in PADDINGS]
    for entry in grid:
        side = (32 + 2 * entry.padding - 3) // entry.stride + 1
        assert entry.maps.shape == (2, 5, side, side) and entry.predicted_side == (side, side)
        reference = nn.functional.conv2d(images, conv.weight, conv.bias, stride=entry.stride, padding=entry.padding)
        assert torch.allclose(torch.from_numpy(entry.maps), reference, atol=1e-6)
    assert {g.maps.shape[-1] for g in grid} == {30, 32, 34, 15, 16, 17, 10, 11, 12}


def test_cli_writes_the_stride_padding_figure(smoke_run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["visualize-filters", str(smoke_run), "--stride-padding", "--out", str(tmp_path),
                                      "--set", "visualize.num_images=2", "--quiet"])  # fmt: skip
    assert result.exit_code == 0, result.output
    figure = tmp_path / "stride_padding.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 20_000
    assert f"wrote {figure}" in result.output and not (tmp_path / "gradcam.png").exists()
