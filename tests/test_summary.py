"""The model summary: shapes from a dummy batch, exact parameter totals, and no side effects."""

from __future__ import annotations

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from cifarcli.models import MODELS, render_summary, set_backbone_trainable, summarize_model


def test_resnet9_rows_have_the_expected_output_shapes() -> None:
    summary = summarize_model(MODELS["resnet9"](10))
    shapes = {row.name: row.output_shape for row in summary.rows}
    assert shapes["prep.conv"] == (1, 64, 32, 32)
    assert shapes["layer1.pool"] == (1, 128, 16, 16)
    assert shapes["res1.block2.relu"] == (1, 128, 16, 16)
    assert shapes["layer2.relu"] == (1, 256, 8, 8)
    assert shapes["res3.block2.conv"] == (1, 512, 4, 4)
    assert shapes["pool"] == (1, 512, 1, 1)
    last = summary.rows[-1]
    assert (last.name, last.type_name, last.output_shape, last.param_count) == ("fc", "Linear", (1, 10), 5130)
    assert summary.rows[0].name == "prep.conv"  # rows follow the forward pass


def test_totals_equal_the_parameter_sums() -> None:
    model = MODELS["resnet9"](10)
    summary = summarize_model(model)
    assert summary.total_params == sum(p.numel() for p in model.parameters()) == 6_573_130
    assert summary.trainable_params == summary.total_params
    assert summary.frozen_params == 0
    assert sum(row.param_count for row in summary.rows) == summary.total_params


def test_frozen_count_after_freezing_the_backbone() -> None:
    model = MODELS["resnet18"](100)
    set_backbone_trainable(model, False)
    summary = summarize_model(model)
    fresh = 512 * 100 + 100 + 64 * 3 * 3 * 3 + 2 * 64  # head + 3x3 stem conv + its BatchNorm
    assert summary.trainable_params == fresh
    assert summary.frozen_params == 11_220_132 - fresh


def test_max_depth_groups_resnet_blocks() -> None:
    summary = summarize_model(MODELS["resnet18"](10), max_depth=2)
    rows = {row.name: row for row in summary.rows}
    assert rows["layer3.0"].type_name == "BasicBlock"
    assert rows["layer3.0"].output_shape == (1, 256, 8, 8)
    assert "layer3.0.conv1" not in rows
    assert sum(row.param_count for row in summary.rows) == summary.total_params


def test_model_state_is_unchanged() -> None:
    torch.manual_seed(0)
    model = MODELS["resnet9"](10)
    model.train()
    model.prep.bn.eval()  # a per-module flag (as freeze_norm_stats sets) must survive too
    images = torch.randn(4, 3, 32, 32)
    flags_before = {name: m.training for name, m in model.named_modules()}
    buffers_before = {name: b.clone() for name, b in model.named_buffers()}
    model.eval()
    logits_before = model(images)
    model.train()
    model.prep.bn.eval()

    summarize_model(model)

    assert {name: m.training for name, m in model.named_modules()} == flags_before
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, buffers_before[name]), name
    assert all(not m._forward_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    model.eval()
    assert torch.equal(model(images), logits_before)


def test_dummy_batch_follows_the_model_dtype() -> None:
    model = MODELS["simple_cnn"](10).to(torch.float64)
    summary = summarize_model(model, input_shape=(2, 3, 32, 32))
    assert summary.rows[-1].output_shape == (2, 10)


def test_a_module_called_twice_appears_once() -> None:
    summary = summarize_model(MODELS["resnet18"](10))
    names = [row.name for row in summary.rows]
    assert names.count("layer1.0.relu") == 1
    assert len(names) == len(set(names))


def test_render_summary_shows_rows_and_totals() -> None:
    model = MODELS["resnet9"](10)
    set_backbone_trainable(model, False)
    table = render_summary(summarize_model(model))
    assert isinstance(table, Table)
    assert table.row_count == len(summarize_model(model).rows)
    console = Console(width=200, record=True)
    console.print(table)
    text = console.export_text()
    assert "res3.block2.conv" in text and "1 x 512 x 4 x 4" in text
    assert "6,573,130 parameters: 5,130 trainable, 6,568,000 frozen" in text


def test_tuple_outputs_report_their_first_tensor() -> None:
    class Pair(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[int, torch.Tensor]:
            return 0, x.flatten(1)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pair = Pair()
            self.fc = nn.Linear(3 * 32 * 32, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.pair(x)[1])

    rows = {row.name: row.output_shape for row in summarize_model(Net()).rows}
    assert rows == {"pair": (1, 3072), "fc": (1, 2)}
