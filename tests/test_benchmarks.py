"""The benchmark suite runs end to end and writes what it prints (speed itself is never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_the_suite_times_both_pipelines_and_writes_its_json(tmp_path: Path) -> None:
    out = tmp_path / "suite.json"
    command = [sys.executable, str(BENCHMARKS / "suite.py"), "--device", "cpu", "--models", "mlp", "--batch-size", "8",
               "--steps", "1", "--windows", "2", "--warmup", "1", "--workers", "0", "--eval-images", "16",
               "--no-first-step", "--no-startup", "--no-record", "--json", str(out)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    run = json.loads(out.read_text())
    (model,) = run["models"]
    assert model["model"] == "mlp" and model["batch_size"] == 8 and model["windows"] == 2
    assert model["engine_images_per_second"]["count"] == 2 and model["seeds_images_per_second"]["count"] == 2
    assert model["engine_images_per_second"]["median"] > 0 and model["speedup_of_medians"] > 0
    assert model["train_flops_per_image"] > model["eval_flops_per_image"] > 0
    assert model["peak_memory_bytes"]["engine"] > 0 and run["bf16_matmul_flops_per_second"] > 0
    assert model["precision"] in ("bf16 autocast on cpu", "fp32 on cpu") and model["seconds_to_first_step"] is None
    assert "| mlp (8) |" in done.stdout and "warm-up excluded" in done.stdout
