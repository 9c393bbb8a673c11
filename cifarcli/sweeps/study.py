"""A sweep's Optuna study: its storage, samplers and pruner; creating, joining and reading it back.

The process that creates the study also creates every trial up front, as a WAITING trial (one
per grid point or variant, or one per search slot); `sweeps.trials` claims and runs them.
Other processes started with the same command join the study and check that it is theirs.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import optuna
from optuna.exceptions import DuplicatedStudyError
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState, create_trial

from cifarcli.errors import CifarError, UsageError
from cifarcli.fileio import exclusive_lock
from cifarcli.sweeps.spec import VARIANT_KEY, SweepSpec, value_at
from cifarcli.sweeps.summary import TrialRecord

STUDY_FILE = "study.db"  # the default storage, inside the sweep folder
JOURNAL_PREFIX = "journal:"
SQLITE_TIMEOUT_S = 60.0  # how long a write waits for another process's write to the SQLite file
READY_WAIT_S = 60.0  # how long a joining process waits for the creator to finish setting the study up
PRUNE_AFTER_TRIALS = 3  # MedianPruner: prune only once this many trials have finished
PRUNE_FROM_EPOCH = 2  # MedianPruner: never prune before this epoch
# Study attributes; the creating process sets them, the others check their own command against them.
ATTR_SPEC, ATTR_BASE, ATTR_FOLDER, ATTR_READY = "cifar_sweep", "cifar_base_config", "cifar_folder", "cifar_ready"

STATE_NAMES = {
    TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
    TrialState.RUNNING: "running", TrialState.WAITING: "waiting",
}  # fmt: skip


@dataclass(frozen=True)
class Storage:
    """An opened Optuna storage, and for an SQLite file the lock its processes claim trials under."""

    backend: BaseStorage
    # SQLite (through SQLAlchemy) reads a trial's state and writes it in two steps, so two processes
    # could both move one WAITING trial to RUNNING; they take turns under this lock instead. The
    # server databases lock the row, and the journal orders every write, so they need none.
    claim_lock: Optional[Path] = None


@dataclass
class Sweep:
    study: optuna.Study
    store: Storage
    spec: SweepSpec
    base_tree: dict[str, Any]  # the base config, dumped
    folder: Path

    @property
    def storage(self) -> BaseStorage:
        return self.store.backend

    @property
    def study_id(self) -> int:
        return self.storage.get_study_id_from_name(self.study.study_name)


# --------------------------------------------------------------------------- storage and study


def default_storage_url(folder: Path) -> str:
    return f"sqlite:///{(folder / STUDY_FILE).resolve()}"


def shown_url(url: str) -> str:
    """The storage URL with any password replaced by ***, fit to print or save."""
    if url.startswith(JOURNAL_PREFIX):
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not parseable: it is refused when opened; show nothing secret meanwhile
        return url.split("@")[-1]


def open_storage(url: str) -> Storage:
    """An Optuna RDB storage for a database URL, or a journal storage for `journal:PATH`."""
    if url.startswith(JOURNAL_PREFIX):
        path = Path(url[len(JOURNAL_PREFIX) :]).expanduser()
        if not path.name:
            raise UsageError(f"--storage {url}: give a file after journal:, e.g. journal:/shared/sweeps/lr.journal")
        path.parent.mkdir(parents=True, exist_ok=True)
        return Storage(JournalStorage(JournalFileBackend(str(path))))
    try:
        if not url.startswith("sqlite"):
            return Storage(optuna.storages.get_storage(RDBStorage(url)))
        database = _sqlite_file(url)
        lock = database.with_name(database.name + ".lock")
        with exclusive_lock(lock):  # opening creates the tables; two processes doing it at once collide
            backend = optuna.storages.get_storage(RDBStorage(url, engine_kwargs={"connect_args": {"timeout": SQLITE_TIMEOUT_S}}))
        return Storage(backend, lock)
    except ImportError as exc:
        raise UsageError(f"--storage {shown_url(url)}: its database driver is not installed ({exc.name or exc})",
                         hint="pip install the driver, e.g. psycopg2-binary for postgresql://") from exc  # fmt: skip
    except CifarError:
        raise
    except Exception as exc:  # SQLAlchemy raises many types for a bad URL or an unreachable server
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise UsageError(f"--storage {shown_url(url)}: cannot open it ({first})",
                         hint="pass an Optuna RDB URL (sqlite:////abs/path/study.db, postgresql://...) or journal:PATH") from exc  # fmt: skip


def _sqlite_file(url: str) -> Path:
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if not database or database == ":memory:":
        raise UsageError(f"--storage {url}: a shared sweep needs an SQLite file, e.g. sqlite:////shared/sweeps/study.db")
    path = Path(database).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    if not spec.prune:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=PRUNE_AFTER_TRIALS, n_warmup_steps=PRUNE_FROM_EPOCH)


class ClaimedGridSampler(optuna.samplers.GridSampler):
    """GridSampler for trials created up front with their grid_id; the loop, not the sampler, ends the sweep
    (GridSampler's after_trial calls study.stop(), which only works inside study.optimize)."""

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        return None


def sampler(spec: SweepSpec, trial_number: int) -> optuna.samplers.BaseSampler:
    """Grid and variants: GridSampler. Search: TPE seeded per trial, so a resumed or second process does not
    draw the same settings again, and a sweep run twice with one seed draws the same ones."""
    if spec.kind == "search":
        return optuna.samplers.TPESampler(seed=spec.seed + trial_number)
    return ClaimedGridSampler(spec.grid_axes())


def _load(store: Storage, name: str, spec: SweepSpec) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=store.backend, sampler=sampler(spec, 0), pruner=_pruner(spec))


def create_study(store: Storage, name: str, spec: SweepSpec, base_tree: dict[str, Any], folder: Path) -> Sweep:
    """A new study holding every trial as WAITING; DuplicatedStudyError if `name` exists in the storage."""
    return _set_up(_new_study(store, name, spec), store, spec, base_tree, folder)


def _new_study(store: Storage, name: str, spec: SweepSpec) -> optuna.Study:
    return optuna.create_study(storage=store.backend, study_name=name, direction="maximize",
                               sampler=sampler(spec, 0), pruner=_pruner(spec))  # fmt: skip


def _set_up(study: optuna.Study, store: Storage, spec: SweepSpec, base_tree: dict[str, Any], folder: Path) -> Sweep:
    study.set_user_attr(ATTR_SPEC, spec.model_dump(mode="json"))
    study.set_user_attr(ATTR_BASE, base_tree)
    study.set_user_attr(ATTR_FOLDER, folder.name)
    axes = spec.grid_axes()
    for slot in range(spec.trials):
        system = {"grid_id": slot, "search_space": axes} if axes else {}
        study.add_trial(create_trial(state=TrialState.WAITING, system_attrs=system))
    study.set_user_attr(ATTR_READY, True)  # joining processes wait for this
    return Sweep(study, store, spec, base_tree, folder)


def join_or_create(
    store: Storage, name: str, spec: SweepSpec, base_tree: dict[str, Any], new_folder: Callable[[], Path], root: Path
) -> tuple[Sweep, bool]:
    """The study `name` in a shared storage: created (in `new_folder()`) by the first process, joined by the rest.

    A joining process checks that its sweep and base config are the ones the study was made with,
    and works in `root/<the creator's folder name>`. Returns the sweep and whether it was created.
    """
    try:
        study = _new_study(store, name, spec)  # atomic: exactly one process creates it
    except DuplicatedStudyError:
        study = _load(store, name, spec)
        attrs = _wait_until_ready(study)
        if attrs.get(ATTR_SPEC) != spec.model_dump(mode="json") or attrs.get(ATTR_BASE) != base_tree:
            raise UsageError(f"study {name!r} in this storage was started with another sweep or base config",
                             hint="run the same command as its first process, or pick another --name") from None  # fmt: skip
        folder = root / str(attrs[ATTR_FOLDER])
        folder.mkdir(parents=True, exist_ok=True)
        return Sweep(study, store, spec, base_tree, folder), False
    return _set_up(study, store, spec, base_tree, new_folder()), True


def _wait_until_ready(study: optuna.Study) -> dict[str, Any]:
    """The study's attributes once its creator has set it up (it is a few writes behind the creation)."""
    deadline = time.monotonic() + READY_WAIT_S
    while not study.user_attrs.get(ATTR_READY):
        if time.monotonic() > deadline:
            raise UsageError(f"study {study.study_name!r} exists in this storage but was never set up as a cifar sweep",
                             hint="pick another --name (its first process may have died while creating it)")  # fmt: skip
        time.sleep(0.2)
    return study.user_attrs


def reopen(store: Storage, name: str, folder: Path) -> Sweep:
    """An existing sweep's study (for --resume), with the sweep and base config it was made with."""
    try:
        study = optuna.load_study(study_name=name, storage=store.backend)
    except KeyError:
        raise UsageError(f"no study {name!r} in the sweep's storage", hint="check --storage; the study is made by the first `cifar sweep`") from None
    attrs = study.user_attrs
    if ATTR_SPEC not in attrs or ATTR_BASE not in attrs:
        raise UsageError(f"study {name!r} is not a cifar sweep (it lacks the sweep's definition)")
    spec = SweepSpec.model_validate(attrs[ATTR_SPEC])
    return Sweep(_load(store, name, spec), store, spec, attrs[ATTR_BASE], folder)


# --------------------------------------------------------------------------- reading it back


def val_curve(frozen: FrozenTrial) -> list[float]:
    """The validation accuracy the trial reported after each epoch, in epoch order."""
    return [float(frozen.intermediate_values[epoch]) for epoch in sorted(frozen.intermediate_values)]


def record(sweep: Sweep, frozen: FrozenTrial) -> TrialRecord:
    """A trial as the summary shows it: its settings are the base config's values at the sweep's keys."""
    attrs = frozen.user_attrs
    overrides = attrs.get("overrides") or (sweep.spec.overrides_for(frozen.params) if frozen.params else {})
    settings = {key: overrides.get(key, value_at(sweep.base_tree, key)) for key in sweep.spec.setting_keys()}
    if sweep.spec.kind == "variants":
        settings = {VARIANT_KEY: frozen.params.get(VARIANT_KEY, ""), **settings}  # the name first, as in setting_columns()
    return TrialRecord(
        number=frozen.number, name=str(attrs.get("folder", f"{frozen.number:03d}")), state=STATE_NAMES[frozen.state],
        settings=settings, val_curve=val_curve(frozen), test_accuracy=attrs.get("test_accuracy"),
        seconds=attrs.get("seconds"), error=str(attrs.get("error", "")), host=str(attrs.get("host", "")),
    )  # fmt: skip


def records(sweep: Sweep) -> list[TrialRecord]:
    """Every trial that has started, in trial order (waiting ones have no settings yet)."""
    return [record(sweep, t) for t in sweep.study.get_trials(deepcopy=False) if t.state != TrialState.WAITING]


def counts(sweep: Sweep) -> dict[str, int]:
    """Trials per state name, and `total`."""
    tally = {name: 0 for name in STATE_NAMES.values()}
    for frozen in sweep.study.get_trials(deepcopy=False):
        tally[STATE_NAMES[frozen.state]] += 1
    tally["total"] = sum(tally.values())
    return tally


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna logs every trial at INFO and each failure with a traceback; the sweep prints its own lines."""
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)
