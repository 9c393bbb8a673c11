"""What a person sees: one reporter for progress and messages, heartbeat lines in a log, --quiet, Ctrl-C, tables."""

from __future__ import annotations

import hashlib
import io
import socket
import urllib.error
from pathlib import Path
from types import SimpleNamespace

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from cifarcli.cli import app, friendly_errors
from cifarcli.commands.console_reporter import ConsoleReporter
from cifarcli.commands.progress import TrainingDisplay, metrics_table
from cifarcli.config import DataConfig
from cifarcli.data import fetch as fetch_module
from cifarcli.data.fetch import fetch_archive
from cifarcli.data.prepare import prepare_dataset
from cifarcli.errors import DataError, Interrupted
from cifarcli.reporting import Reporter, track
from conftest import LoopbackServer, TinyArchive

runner = CliRunner()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorder(Reporter):
    def __init__(self) -> None:
        self.messages: list[str] = []
        self.tasks: list[tuple[str, float | None, str]] = []

    def message(self, text: str) -> None:
        self.messages.append(text)

    def task(self, label: str, total: float | None, *, done: float = 0, unit: str = "step"):
        self.tasks.append((label, total, unit))
        return super().task(label, total, done=done, unit=unit)


def _piped(clock: FakeClock, quiet: bool = False) -> tuple[ConsoleReporter, io.StringIO]:
    out = io.StringIO()  # not a terminal: the console writes plain lines
    return ConsoleReporter(Console(file=out, quiet=quiet, markup=False, highlight=False, width=200), clock=clock), out


def test_piped_task_prints_a_heartbeat_every_30_s_with_count_fields_elapsed_and_left() -> None:
    clock = FakeClock()
    reporter, out = _piped(clock)
    with reporter.task("lr-find", total=100) as task:
        for _ in range(10):
            clock.now += 1
            task.advance(1, loss="2.3026")
        assert out.getvalue().splitlines() == ["lr-find: 100 steps"]  # 10 s in: no line yet
        clock.now += 20
        task.advance(10, loss="2.1000", lr="1.00e-03")
    lines = out.getvalue().splitlines()
    assert lines[1] == "lr-find 20/100 (20%)  loss 2.1000  lr 1.00e-03  elapsed 0m30s  left 2m00s"
    assert len(lines) == 2  # closed right after a line: no repeat


def test_piped_transfer_says_mb_rate_and_every_tenth() -> None:
    clock = FakeClock()
    reporter, out = _piped(clock)
    with reporter.task("downloading x.tar.gz", total=1_000_000, unit="bytes") as task:
        for _ in range(20):
            clock.now += 0.5
            task.advance(50_000)
    lines = out.getvalue().splitlines()
    assert lines[0] == "downloading x.tar.gz: 1.0 MB"
    assert [line.split("(")[1].split("%")[0] for line in lines[1:]] == [str(p) for p in range(10, 101, 10)]
    assert lines[-1] == "downloading x.tar.gz 1.0 MB of 1.0 MB (100%)  0.1 MB/s  elapsed 0m10s  left 0m00s"


def test_quiet_shows_warnings_only(capsys: pytest.CaptureFixture[str]) -> None:
    reporter, out = _piped(FakeClock(), quiet=True)
    reporter.message("converting")
    with reporter.task("lr-find", total=3) as task:
        task.advance(3)
    reporter.warning("the cache failed its check; rebuilding it")
    assert out.getvalue() == ""
    assert capsys.readouterr().err == "the cache failed its check; rebuilding it\n"


def test_live_bar_on_a_terminal_labels_elapsed_and_left() -> None:
    out = io.StringIO()
    reporter = ConsoleReporter(Console(file=out, force_terminal=True, width=200, markup=False))
    assert reporter.live
    with reporter.task("epoch 1/3", total=10) as task:
        task.advance(4, loss="1.2345")
    text = out.getvalue()
    assert "epoch 1/3" in text and "4/10" in text and "loss 1.2345" in text
    assert "elapsed" in text and "left" in text


def test_training_display_piped_prints_a_timm_like_heartbeat() -> None:
    clock = FakeClock()
    reporter, out = _piped(clock)
    display = TrainingDisplay(reporter, batch_size=32)
    state = SimpleNamespace(epoch=0, global_step=0, batch_in_epoch=0)
    display.on_train_start(state, epochs=3, steps_per_epoch=10)  # type: ignore[arg-type]
    display.on_epoch_start(0, 10)
    display.on_losses([SimpleNamespace(loss=2.5)])  # type: ignore[list-item]
    clock.now += 31
    display.on_step(5, 0.01)
    display.on_train_end()
    lines = out.getvalue().splitlines()
    assert lines[0] == "epoch 1/3: 10 steps"
    assert lines[1].startswith("epoch 1/3 5/10 (50%)  loss 2.5000  lr 0.01  speed ")
    assert lines[1].endswith("img/s  elapsed 0m31s  left 0m31s")


def test_track_advances_by_each_batch_of_labels() -> None:
    recorded: list[float] = []

    class Counting(Reporter):
        pass

    task = Counting().task("evaluate", total=5)
    task.advance = lambda amount=1, **fields: recorded.append(amount)  # type: ignore[method-assign]
    batches = [("x", [0, 1, 2]), ("y", [3, 4])]
    assert list(track(batches, task)) == batches and recorded == [3, 2]


def test_the_library_prints_nothing_itself(tiny_cifar10_archive: TinyArchive, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    cfg = DataConfig(root=tmp_path / "root", source=str(tiny_cifar10_archive.path), md5=tiny_cifar10_archive.md5)
    prepare_dataset(cfg)
    assert capfd.readouterr() == ("", "")
    recorder = Recorder()
    prepare_dataset(cfg, force=True, reporter=recorder)
    assert capfd.readouterr() == ("", "")
    copying = [m for m in recorder.messages if m.startswith("copying ")]
    assert copying == [f"copying {tiny_cifar10_archive.path.name} ({tiny_cifar10_archive.path.stat().st_size / 1e6:.1f} MB) "
                       f"from {tiny_cifar10_archive.path.parent}"]  # fmt: skip
    assert recorder.tasks == []  # a local copy is one line, no progress task


def test_a_download_reports_a_bytes_task(loopback_server: LoopbackServer, tmp_path: Path) -> None:
    loopback_server.behaviour.payload = payload = b"x" * 5000
    recorder = Recorder()
    fetch_archive(loopback_server.url, tmp_path / "a.tar.gz", expected_md5=hashlib.md5(payload).hexdigest(), timeout_s=5, retries=0,
                  reporter=recorder)  # fmt: skip
    assert recorder.tasks == [(f"downloading {loopback_server.url.rsplit('/', 1)[-1]}", 5000, "bytes")]


def test_download_quiet_prints_no_progress(tiny_cifar10_archive: TinyArchive, tmp_path: Path) -> None:
    args = ["download", "--source", str(tiny_cifar10_archive.path), "--md5", tiny_cifar10_archive.md5]
    loud = runner.invoke(app, [*args, "--set", f"data.root={tmp_path / 'a'}"])
    assert loud.exit_code == 0, loud.output
    assert [line for line in loud.stderr.splitlines() if "copying" in line] == [
        f"copying {tiny_cifar10_archive.path.name} ({tiny_cifar10_archive.path.stat().st_size / 1e6:.1f} MB) "
        f"from {tiny_cifar10_archive.path.parent}"
    ]
    quiet = runner.invoke(app, [*args, "--quiet", "--set", f"data.root={tmp_path / 'b'}"])
    assert quiet.exit_code == 0 and quiet.stderr == ""
    assert "cifar10: copied from the source archive and converted" in quiet.stdout


def test_a_name_that_does_not_resolve_fails_at_once_and_leaves_no_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []

    def unknown_host(request: object, timeout: float) -> None:
        calls.append(request)
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setattr(fetch_module.urllib.request, "urlopen", unknown_host)
    monkeypatch.setattr(fetch_module.time, "sleep", lambda s: pytest.fail("a name that does not resolve is not retried"))
    root = tmp_path / "new" / "data"
    url = "https://mirror.invalid/cifar-10-python.tar.gz"
    result = runner.invoke(app, ["download", "--source", url, "--set", f"data.root={root}", "--set", "data.download_retries=5"])
    assert result.exit_code == 1 and len(calls) == 1
    error, hint = result.stderr.splitlines()
    assert error == f"error: could not download {url}: the host name mirror.invalid could not be resolved ([Errno -2] Name or service not known)"
    assert hint.startswith("hint: check the host name") and "--source PATH" in hint
    assert not (tmp_path / "new").exists()


def test_a_failed_download_leaves_no_empty_folder(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/cifar-10-python.tar.gz"  # closed once the block ends
    with pytest.raises(DataError, match="after 1 attempt"):
        fetch_archive(url, tmp_path / "root" / "cifar-10-python.tar.gz", expected_md5=None, timeout_s=5, retries=0)
    assert list(tmp_path.iterdir()) == []


def test_table_titles_never_wrap() -> None:
    from cifarcli.commands.lr_find_results import suggestion_table

    out = io.StringIO()
    console = Console(file=out, width=120, markup=False)
    console.print(metrics_table("test set, best checkpoint (best.pt)", [("top-1", "91.2%")]))
    result = SimpleNamespace(suggestions={"valley": SimpleNamespace(name="valley", lr=1e-3, index=3, note="")}, burn_in_steps=0)
    console.print(suggestion_table(result, "valley"))  # type: ignore[arg-type]
    lines = out.getvalue().splitlines()
    assert "test set, best checkpoint (best.pt)" in lines[0]
    assert any("suggested peak LR (optim.lr)" in line for line in lines)


def _exit_code_of(command) -> int:
    with pytest.raises(typer.Exit) as stopped:
        friendly_errors(command)()
    return stopped.value.exit_code


def test_ctrl_c_is_reported_as_an_interruption_not_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted_run() -> None:
        raise Interrupted("stopped by Ctrl-C at epoch 2, step 5 of 10; state saved to runs/r/checkpoints/last.pt",
                          hint="continue with: cifar train --resume runs/r")  # fmt: skip

    def ctrl_c_elsewhere() -> None:
        raise KeyboardInterrupt

    assert _exit_code_of(interrupted_run) == 130
    assert capsys.readouterr().err == ("stopped by Ctrl-C at epoch 2, step 5 of 10; state saved to runs/r/checkpoints/last.pt\n"
                                       "hint: continue with: cifar train --resume runs/r\n")  # fmt: skip
    assert _exit_code_of(ctrl_c_elsewhere) == 130
    assert capsys.readouterr().err == "stopped by Ctrl-C\n"


def test_a_short_piped_task_prints_only_its_opening_line() -> None:
    clock = FakeClock()
    reporter, out = _piped(clock)
    with reporter.task("epoch 1/2", total=8) as task:
        for _ in range(8):
            clock.now += 1
            task.advance(1, loss="2.0")
    assert out.getvalue() == "epoch 1/2: 8 steps\n"  # the epoch's own line follows; no 100% line of 8 s
