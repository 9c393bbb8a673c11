"""Untrusted input never runs code or writes outside its folder: checkpoints, weights, pickled data
batches, archives and YAML, each fed through the CLI; and errors are one line unless debugging.

Every hostile payload here is live: where it can, a test first shows that a plain `pickle.loads`
or `torch.load(weights_only=False)` would run it (a marker file appears), then that `cifar`
refuses it and the marker never appears.
"""

from __future__ import annotations

import copyreg
import io
import os
import pickle
import subprocess
import sys
import tarfile
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cifarcli.cli import app
from cifarcli.data import archive as archive_module
from cifarcli.data.cache import MANIFEST_NAME
from conftest import TinyArchive, write_tar_gz
from run_fixtures import copy_run

runner = CliRunner()
BATCH = "cifar-10-batches-py/data_batch_1"


def one_clean_error(result, exit_code: int) -> str:
    """Assert the exit code, no traceback, and an error of one line plus at most a hint; return the error line."""
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert len(starts) == 1, result.stderr
    tail = lines[starts[0] :]
    assert len(tail) <= 2 and all(line.startswith("hint: ") for line in tail[1:]), result.stderr
    return tail[0]


def tree(folder: Path) -> dict[str, int]:
    """Every path under `folder` with its modification time (ns), to prove nothing else changed."""
    return {str(p.relative_to(folder)): p.lstat().st_mtime_ns for p in sorted(folder.rglob("*"))}


# --------------------------------------------------------------------------- checkpoints and weights


class _Touch:
    """Pickles as a call to os.system that creates `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Exec:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def _hostile_checkpoint(smoke_run: Path, marker: Path, where: str, payload: type) -> dict:
    state = torch.load(smoke_run / "checkpoints" / "best.pt", weights_only=True)
    if where == "model":
        state["model"] = {"conv": payload(marker)}
    elif where == "config":
        state["config"] = {**state["config"], "run": payload(marker)}
    else:  # "top": an extra key nobody reads
        state["extra"] = payload(marker)
    return state


@pytest.mark.parametrize("where, payload", [("model", _Touch), ("config", _Exec), ("top", _Touch)])
def test_checkpoint_that_needs_arbitrary_unpickling_is_refused_by_every_command(
    smoke_run: Path, tmp_path: Path, where: str, payload: type
) -> None:
    marker = tmp_path / "payload-ran"
    state = _hostile_checkpoint(smoke_run, marker, where, payload)
    control = tmp_path / "control.pt"
    torch.save(state, control)
    torch.load(control, weights_only=False)  # the payload is live: a trusting load runs it
    assert marker.exists()
    marker.unlink()

    run = copy_run(smoke_run, tmp_path / "copy")
    for name in ("best.pt", "last.pt"):
        torch.save(state, run / "checkpoints" / name)
    commands = [["evaluate", str(run)], ["evaluate", str(control)], ["train", "--resume", str(run)],
                ["report", str(run)], ["visualize-filters", str(run)]]  # fmt: skip
    for args in commands:
        result = runner.invoke(app, [*args, "--quiet"])
        error = one_clean_error(result, 1)
        assert error.startswith("error: refused to load ") and "arbitrary code" in error, (args, error)
        assert not marker.exists(), args


def test_pretrained_weights_that_need_arbitrary_unpickling_are_refused(
    cifar10_data_root: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "payload-ran"
    weights = tmp_path / "resnet18-evil.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.bias": _Touch(marker)}, weights)
    result = runner.invoke(app, ["train", "-c", "smoke", "--quiet", "--set", f"data.root={cifar10_data_root}",
                                 "--set", f"run.root={tmp_path / 'runs'}", "--set", "model.name=resnet18",
                                 "--set", f"model.pretrained={weights}", "--set", "run.tensorboard=false"])  # fmt: skip
    error = one_clean_error(result, 1)
    assert error.startswith(f"error: refused to load {weights}") and "arbitrary code" in error
    assert not marker.exists()
    assert not list((tmp_path / "runs").rglob("*.pt"))


# --------------------------------------------------------------------------- pickled data batches


def _text(value: str, protocol: int) -> bytes:
    if protocol == 0:
        return b"V" + value.encode("raw-unicode-escape") + b"\n"
    data = value.encode("utf-8")
    return b"X" + len(data).to_bytes(4, "little") + data


def _argument(value: object, protocol: int) -> bytes:
    if isinstance(value, str):
        return _text(value, protocol)
    if value is None:
        return b"N"
    if isinstance(value, bool):
        return (b"I01\n" if value else b"I00\n") if protocol == 0 else (b"\x88" if value else b"\x89")
    if isinstance(value, int):
        return b"I" + str(value).encode() + b"\n"
    if isinstance(value, dict) and not value:
        return b"(d" if protocol == 0 else b"}"
    if isinstance(value, (list, tuple)):
        items = b"".join(_argument(v, protocol) for v in value)
        return b"(" + items + (b"l" if isinstance(value, list) else b"t")
    raise TypeError(value)


def call_pickle(module: str, name: str, args: tuple, protocol: int) -> bytes:
    """Raw opcodes of `module.name(*args)` (GLOBAL + TUPLE + REDUCE), as protocol 0 or 2."""
    header = b"\x80\x02" if protocol == 2 else b""
    return header + b"c" + f"{module}\n{name}\n".encode() + _argument(tuple(args), protocol) + b"R."


@dataclass(frozen=True)
class Gadget:
    """A pickle that runs something when loaded; `live` says a plain pickle.loads shows its side effect."""

    name: str
    make: Callable[[Path, Path], bytes]  # (marker, scratch folder) -> pickle bytes
    refusal: str  # what the error names
    live: bool = True


def _evil_npy(marker: Path, folder: Path) -> Path:
    path = folder / "evil.npy"
    np.save(path, np.array([_Touch(marker)], dtype=object), allow_pickle=True)
    return path


def _write_marker_code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').write('ran')"


def _gadgets() -> list[Gadget]:
    gadgets: list[Gadget] = []
    for protocol in (0, 2):
        def call(module: str, name: str, *args: object, p: int = protocol) -> Callable[[Path, Path], bytes]:
            return lambda marker, folder: call_pickle(
                module, name, tuple(a(marker, folder) if callable(a) else a for a in args), p
            )

        touch = lambda marker, folder: f"touch {marker}"
        code = lambda marker, folder: _write_marker_code(marker)
        gadgets += [
            Gadget(f"os.system p{protocol}", call("os", "system", touch), "forbidden global os.system"),
            Gadget(f"posix.system p{protocol}", call("posix", "system", touch), "forbidden global posix.system"),
            Gadget(f"builtins.eval p{protocol}", call("builtins", "eval", code), "forbidden global builtins.eval"),
            Gadget(f"builtins.exec p{protocol}", call("builtins", "exec", code), "forbidden global builtins.exec"),
            Gadget(f"__builtin__.eval p{protocol}", call("__builtin__", "eval", code), "forbidden global __builtin__.eval"),
            Gadget(f"builtins.open p{protocol}", call("builtins", "open", lambda m, f: str(m), "w"), "forbidden global builtins.open"),
            Gadget(f"subprocess.Popen p{protocol}", call("subprocess", "Popen", lambda m, f: ["touch", str(m)]),
                   "forbidden global subprocess.Popen"),
            Gadget(f"subprocess.check_output p{protocol}", call("subprocess", "check_output", lambda m, f: ["touch", str(m)]),
                   "forbidden global subprocess.check_output"),
            Gadget(f"numpy.load p{protocol}", call("numpy", "load", lambda m, f: str(_evil_npy(m, f)), None, True),
                   "forbidden global numpy.load"),
            Gadget(f"numpy.testing.runstring p{protocol}", call("numpy.testing", "runstring", code, {}),
                   "forbidden global numpy.testing.runstring"),
            Gadget(f"numpy.lib.format.open_memmap p{protocol}",
                   call("numpy.lib.format", "open_memmap", lambda m, f: str(m), "w+", "u1", (4,)),
                   "forbidden global numpy.lib.format.open_memmap"),
            # allowed for Python 3's protocol-2 bytes, but only as latin-1 text -> bytes
            Gadget(f"_codecs.encode p{protocol}", call("_codecs", "encode", "abc", "rot13"),
                   "_codecs.encode may only turn latin-1 text into bytes", live=False),
            Gadget(f"copyreg._reconstructor p{protocol}",
                   lambda m, f, p=protocol: (b"\x80\x02" if p == 2 else b"") + b"ccopyreg\n_reconstructor\n(c__builtin__\nobject\n"
                   b"c__builtin__\nobject\nNtR.", "forbidden global copyreg._reconstructor", live=False),
            Gadget(f"builtins.getattr(__import__('os'), 'system') p{protocol}",
                   lambda m, f, p=protocol: (b"\x80\x02" if p == 2 else b"") + b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n("
                   + _text("os", p) + b"tR" + _text("system", p) + b"tR(" + _text(f"touch {m}", p) + b"tR.",
                   "forbidden global builtins.getattr"),
            Gadget(f"builtins.__import__ p{protocol}", call("builtins", "__import__", "os"), "forbidden global builtins.__import__",
                   live=False),
            Gadget(f"nested pickle.loads p{protocol}",
                   lambda m, f, p=protocol: (b"\x80\x02" if p == 2 else b"") + b"c_pickle\nloads\n("
                   + b"U" + bytes([len(inner := call_pickle("os", "system", (f"touch {m}",), 2))]) + inner + b"tR.",
                   "forbidden global _pickle.loads", live=False),
        ]
    touch_p0 = lambda marker: _text(f"touch {marker}", 0)
    gadgets += [
        Gadget("INST os.system", lambda m, f: b"(" + touch_p0(m) + b"ios\nsystem\n.", "forbidden global os.system"),
        Gadget("OBJ os.system", lambda m, f: b"(cos\nsystem\n" + touch_p0(m) + b"o.", "forbidden global os.system"),
        Gadget("NEWOBJ os._wrap_close", lambda m, f: b"\x80\x02cos\n_wrap_close\n)\x81.", "forbidden global os._wrap_close",
               live=False),
        Gadget("STACK_GLOBAL os.system p4",
               lambda m, f: b"\x80\x04\x8c\x02os\x8c\x06system\x93" + _text(f"touch {m}", 2) + b"\x85R.",
               "forbidden global os.system"),
        Gadget("NEWOBJ of the numpy.ndarray stand-in", lambda m, f: b"\x80\x02cnumpy\nndarray\n)\x81.",
               "not a readable CIFAR batch file", live=False),
        Gadget("BUILD on the numpy.ndarray stand-in", lambda m, f: b"\x80\x02cnumpy\nndarray\n}U\x03abcNsb.",
               "not a readable CIFAR batch file", live=False),
        Gadget("BINPERSID", lambda m, f: b"\x80\x02" + _text("anything", 2) + b"Q.", "persistent ids are not allowed", live=False),
    ]
    return gadgets


GADGETS = _gadgets()


@pytest.fixture
def registered_extension() -> None:
    """An EXT1 code the (hypothetical) attacker's interpreter registered for os.system."""
    copyreg.add_extension("os", "system", 241)
    yield
    copyreg.remove_extension("os", "system", 241)


def _download(root: Path, archive: Path, md5: str):
    return runner.invoke(app, ["download", "--source", str(archive), "--md5", md5, "--set", f"data.root={root}"])


def _feed_as_data_batch(tmp_path: Path, tiny: TinyArchive, payload: bytes) -> tuple:
    members = {**tiny.members, BATCH: payload}
    archive = tmp_path / "tampered.tar.gz"
    md5 = write_tar_gz(archive, members, "cifar-10-batches-py")
    root = tmp_path / "root"
    return _download(root, archive, md5), root / "cifar-10-python.tar.gz", root  # read from its verified copy


@pytest.mark.parametrize("gadget", GADGETS, ids=[g.name for g in GADGETS])
def test_every_pickle_gadget_is_refused_unrun_naming_the_batch_file(
    tmp_path: Path, tiny_cifar10_archive: TinyArchive, gadget: Gadget
) -> None:
    marker = tmp_path / "payload-ran"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    payload = gadget.make(marker, scratch)
    if gadget.live:
        loaded = pickle.loads(payload)
        if isinstance(loaded, subprocess.Popen):
            loaded.wait(timeout=30)
        if hasattr(loaded, "close"):
            loaded.close()
        assert marker.exists(), "the control load should have run the payload"
        marker.unlink()
    result, archive, root = _feed_as_data_batch(tmp_path, tiny_cifar10_archive, payload)
    error = one_clean_error(result, 1)
    assert error.startswith(f"error: {archive}:{BATCH}: "), error
    assert gadget.refusal in error, error
    assert not marker.exists()
    assert not (root / "cifar10" / MANIFEST_NAME).exists() and not archive.exists()  # no cache, no unusable archive


def test_a_registered_copyreg_extension_is_still_refused(
    tmp_path: Path, tiny_cifar10_archive: TinyArchive, registered_extension: None
) -> None:
    marker = tmp_path / "payload-ran"
    payload = b"\x80\x02\x82\xf1" + _text(f"touch {marker}", 2) + b"\x85R."  # EXT1 241 -> os.system
    pickle.loads(payload)
    assert marker.exists()
    marker.unlink()
    result, archive, _ = _feed_as_data_batch(tmp_path, tiny_cifar10_archive, payload)
    error = one_clean_error(result, 1)  # copyreg now caches 241 -> os.system, which the C unpickler would use unasked
    assert error.startswith(f"error: {archive}:{BATCH}: ") and "forbidden global behind extension code 241" in error
    assert not marker.exists()


# --------------------------------------------------------------------------- archives


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", data: bytes = b"") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, 0o644
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3  # /dev/null's numbers
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def _archive_with(path: Path, tiny: TinyArchive, extra: list[tuple[tarfile.TarInfo, bytes]], replace_batch: bool) -> str:
    """The tiny archive's members (data_batch_1 left out if `replace_batch`) plus `extra`; returns the md5."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in tiny.members.items():
            if replace_batch and name == BATCH:
                continue
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return _md5(path)


def _md5(path: Path) -> str:
    import hashlib

    return hashlib.md5(path.read_bytes()).hexdigest()


def _huge_header_archive(path: Path, tiny: TinyArchive) -> str:
    """A gzip'd tar whose last member claims 1 TiB (GNU base-256 size field) but holds a few bytes."""
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in tiny.members.items():
            if name != BATCH:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    body = plain.getvalue().rstrip(b"\0")
    body += b"\0" * (-len(body) % 512)
    huge = tarfile.TarInfo(BATCH)
    huge.size = 2**40
    body += huge.tobuf(format=tarfile.GNU_FORMAT) + b"x" * 512 + b"\0" * 1024
    compressor = zlib.compressobj(wbits=31)  # gzip framing
    path.write_bytes(compressor.compress(body) + compressor.flush())
    return _md5(path)


OUTSIDE = f"/tmp/cifar-untrusted-{uuid.uuid4().hex}"
ARCHIVE_CASES = {
    # name: (extra members, replace data_batch_1, expected words, limits to lower)
    "path traversal": ([_member("../evil-outside", data=b"x")], False, "outside the archive folder", {}),
    "nested traversal": ([_member("cifar-10-batches-py/../../evil-outside", data=b"x")], False, "outside the archive folder", {}),
    "backslash traversal": ([_member("cifar-10-batches-py\\..\\..\\evil-outside", data=b"x")], False, "outside the archive folder", {}),
    "absolute path": ([_member(f"{OUTSIDE}/evil", data=b"x")], False, "absolute path", {}),
    "symlink to /etc/passwd": ([_member(BATCH, tarfile.SYMTYPE, "/etc/passwd")], True, "symbolic link", {}),
    "symlink outside": ([_member(BATCH, tarfile.SYMTYPE, "../../evil-outside")], True, "symbolic link", {}),
    "hard link to /etc/passwd": ([_member(BATCH, tarfile.LNKTYPE, "/etc/passwd")], True, "hard link", {}),
    "hard link outside": ([_member(BATCH, tarfile.LNKTYPE, "../../evil-outside")], True, "hard link", {}),
    "character device": ([_member("cifar-10-batches-py/null", tarfile.CHRTYPE)], False, "device or special file", {}),
    "block device": ([_member("cifar-10-batches-py/disk", tarfile.BLKTYPE)], False, "device or special file", {}),
    "fifo": ([_member("cifar-10-batches-py/pipe", tarfile.FIFOTYPE)], False, "device or special file", {}),
    "zeros above the member limit": ([_member("cifar-10-batches-py/zeros", data=bytes(2**21))], False,
                                     f"is {2**21} bytes, above the {2**20} byte limit", {"MAX_MEMBER_BYTES": 2**20}),
    "zeros above the total limit": ([_member(f"cifar-10-batches-py/zeros{i}", data=bytes(2**19)) for i in range(4)], False,
                                    "decompression bomb", {"MAX_TOTAL_BYTES": 2**21}),
    "too many members": ([_member(f"cifar-10-batches-py/f{i}", data=b"x") for i in range(12)], False,
                         "more than 15 members", {"MAX_MEMBERS": 15}),
}  # fmt: skip


@pytest.mark.parametrize("case", [*ARCHIVE_CASES, "header claims 1 TiB"])
def test_unsafe_archive_is_refused_and_nothing_is_written_outside(
    tmp_path: Path, tiny_cifar10_archive: TinyArchive, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    archive = tmp_path / "evil.tar.gz"
    if case == "header claims 1 TiB":
        md5, words = _huge_header_archive(archive, tiny_cifar10_archive), f"is {2**40} bytes, above the"
    else:
        extra, replace, words, limits = ARCHIVE_CASES[case]
        md5 = _archive_with(archive, tiny_cifar10_archive, extra, replace)
        for limit, value in limits.items():
            monkeypatch.setattr(archive_module, limit, value)
    root = tmp_path / "data" / "root"
    before = tree(tmp_path)
    result = _download(root, archive, md5)
    error = one_clean_error(result, 1)
    assert error.startswith(f"error: refusing archive {root / 'cifar-10-python.tar.gz'}: ") and words in error, error
    assert "hint: the archive is not an intact CIFAR archive" in result.stderr
    after = tree(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("data")} == before  # nothing written outside data/
    assert set(after) - set(before) <= {"data", "data/root"}  # the verified copy of the archive was removed again
    assert not (root / "cifar10").exists()
    assert not Path(OUTSIDE).exists() and not (tmp_path.parent / "evil-outside").exists()
    assert not (tmp_path / "evil-outside").exists()


# --------------------------------------------------------------------------- YAML


YAML_TAGS = {
    "object/apply at the top": "!!python/object/apply:os.system ['touch {marker}']\n",
    "object/apply in a field": "optim:\n  lr: !!python/object/apply:os.system ['touch {marker}']\n",
    "object/new": "train:\n  epochs: !!python/object/new:os.system ['touch {marker}']\n",
    "object": "run: !!python/object:argparse.Namespace {{name: x}}\n",
    "name": "optim:\n  name: !!python/name:os.system\n",
    "module": "model: !!python/module:os\n",
    "tuple": "optim:\n  betas: !!python/tuple [0.9, 0.99]\n",
    "exec through subprocess": "data: !!python/object/apply:subprocess.check_output [['touch', '{marker}']]\n",
}


@pytest.mark.parametrize("command", ["train", "evaluate"])
@pytest.mark.parametrize("case", list(YAML_TAGS))
def test_python_yaml_tags_are_refused(smoke_run: Path, tmp_path: Path, case: str, command: str) -> None:
    marker = tmp_path / "payload-ran"
    config = tmp_path / "evil.yaml"
    config.write_text(YAML_TAGS[case].format(marker=marker))
    args = ["train", "--print-config", "-c", str(config)] if command == "train" else ["evaluate", str(smoke_run), "-c", str(config)]
    result = runner.invoke(app, args)
    error = one_clean_error(result, 2)
    assert error.startswith(f"error: {config}:") and "YAML tag refused" in error, error
    assert "hint: configs hold plain values only; remove the !! tag" in result.stderr
    assert not marker.exists()


def test_python_yaml_tag_in_a_set_value_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    result = runner.invoke(app, ["train", "--print-config", "--set", f"optim.lr=!!python/object/apply:os.system ['touch {marker}']"])
    assert "optim.lr" in one_clean_error(result, 2) and "not valid YAML" in result.stderr
    assert not marker.exists()


# --------------------------------------------------------------------------- one line, unless debugging


def _child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CIFAR_DEBUG"}
    env.update(OMP_NUM_THREADS="1", **extra)
    return env


def test_errors_are_one_line_and_cifar_debug_shows_the_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-run"
    command = [sys.executable, "-m", "cifarcli", "evaluate", str(missing)]
    plain, debug = (
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_child_env(**extra))
        for extra in ({}, {"CIFAR_DEBUG": "1"})
    )  # started together: two interpreter starts for the price of one
    plain_out, plain_err = plain.communicate(timeout=120)
    _, debug_err = debug.communicate(timeout=120)
    assert plain.returncode == 2
    assert plain_err.splitlines() == [f"error: no such run folder or checkpoint: {missing}",
                                      f"hint: pass a folder under {tmp_path}, `latest`, the start of a run's name, or a .pt file"]  # fmt: skip
    assert "Traceback" not in plain_err + plain_out
    assert debug.returncode != 0
    assert "Traceback (most recent call last)" in debug_err
    assert f"cifarcli.errors.UsageError: no such run folder or checkpoint: {missing}" in debug_err
    assert "runs.py" in debug_err  # the frames point at the code that raised


def test_debug_flag_lets_the_exception_through(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-run"
    quiet = runner.invoke(app, ["evaluate", str(missing)], env={"CIFAR_DEBUG": None})
    assert quiet.exit_code == 2 and isinstance(quiet.exception, SystemExit)
    loud = runner.invoke(app, ["--debug", "evaluate", str(missing)], env={"CIFAR_DEBUG": None})
    assert loud.exit_code == 1 and type(loud.exception).__name__ == "UsageError"
    assert "error: " not in loud.output  # not swallowed into a one-line message
    assert "no such run folder" in str(loud.exception)
    assert os.environ.get("CIFAR_DEBUG") is None  # the flag did not leak into this process
