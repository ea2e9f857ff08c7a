"""Where the study's files live, and how every one of them is written (atomically).

One place for the results layout, so that the experiment, the grid (any executor), the
tuning sweep and the analysis cannot disagree about it::

    results/
      runs/<run_id>/            one setting (shared by every profile that contains it)
        results.json            tidy result rows; written last: its presence marks "finished"
        per_query.parquet       per-query metric values
        history.csv             the training loss curve
        setting.json            parameters, realised diversity, provenance
      <profile>/                one grid profile (smoke, quick, medium, full)
        summary.csv|parquet     every result row of the profile's settings
        grid.json               the profile's run ids, in run order
        failures.json           settings that failed, with the error
        failed/<run_id>.ipynb   their partial notebooks
      claims/<run_id>.claim     held while a process runs the setting (see :func:`claim`)
      tuning.csv                the learning-rate sweep on the development languages
    book/runs/<run_id>.ipynb    the executed notebook of each setting

A setting is *finished* when both its ``results.json`` and its notebook exist
(:meth:`ResultsLayout.is_finished`).

:func:`atomic_write` is the one way files are written: into a uniquely named temporary file
in the target's directory, then ``os.replace``. Two processes writing the same path never
see a partial file and never share a temporary name (the Dask executor runs settings in
parallel).

:func:`claim` is how two processes (two Dask workers, a restarted client next to an orphaned
worker, two people on one results folder) are kept from running the same setting: an
exclusive claim file (hard-linked into place, so created atomically and never seen empty),
refreshed while held and broken only when stale. :func:`file_lock` is a blocking ``flock``
for short critical sections on one host (e.g. building a shared cache once).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .paths import PROJECT_ROOT

__all__ = ["ClaimHeld", "ResultsLayout", "atomic_copy", "atomic_write", "atomic_write_json",
           "claim", "claim_holder", "file_lock"]


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any] | str | bytes) -> Path:
    """Write ``path`` atomically.

    ``write`` is the content (``str`` or ``bytes``) or a function that writes a file at the
    temporary path it is given (``lambda tmp: df.to_csv(tmp)``). The temporary file sits in
    the target's directory under a unique name (``.<name>.<random>.tmp``), is fsynced and
    then renamed over ``path``; on any error it is removed and an existing ``path`` is left
    intact. Parent directories are created. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # the mode a plain open() would give, not mkstemp's 0600
        if isinstance(write, (str, bytes)):
            with os.fdopen(fd, "wb") as fh:
                fh.write(write.encode() if isinstance(write, str) else write)
        else:
            os.close(fd)
            write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """:func:`atomic_write` of ``obj`` as indented JSON (non-JSON values via ``str``)."""
    return atomic_write(path, json.dumps(obj, indent=1, default=str) + "\n")


def atomic_copy(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Copy ``source`` to ``target`` atomically, also across file systems (unlike
    ``shutil.move``, which copies in place when the two differ)."""
    return atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))


@dataclass(frozen=True)
class ResultsLayout:
    """The results folder and the executed-notebook folder of a study (see module doc)."""

    root: Path = PROJECT_ROOT / "results"
    notebooks: Path | None = PROJECT_ROOT / "book" / "runs"  # None: this default

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))
        notebooks = PROJECT_ROOT / "book" / "runs" if self.notebooks is None else self.notebooks
        object.__setattr__(self, "notebooks", Path(notebooks))

    # one setting
    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def run_dir(self, run_id: str) -> Path:
        return self.runs / run_id

    def results_file(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "results.json"

    def per_query_file(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "per_query.parquet"

    def history_file(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "history.csv"

    def setting_file(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "setting.json"

    def notebook(self, run_id: str) -> Path:
        return self.notebooks / f"{run_id}.ipynb"

    def notebook_seconds(self, run_id: str) -> float | None:
        """Papermill's wall-clock duration of the executed notebook (None when the notebook
        or the record is missing)."""
        notebook = self.notebook(run_id)
        if not notebook.exists():
            return None
        return json.loads(notebook.read_text()).get("metadata", {}).get("papermill", {}).get(
            "duration")

    def earlier_attempts_s(self, run_id: str) -> float:
        """Training seconds a run spent in attempts before the one its notebook records (a
        setting cut short resumes from its checkpoint: ``history.csv`` numbers each step's
        attempt and keeps the training clock across them); 0 for a run trained in one go.
        The minutes between an attempt's last checkpoint and its end were lost and are not
        counted."""
        import csv

        path = self.history_file(run_id)
        if not path.exists():
            return 0.0
        with path.open(newline="") as f:
            rows = [(int(r["attempt"]), float(r["wall_s"])) for r in csv.DictReader(f)
                    if r.get("attempt") not in (None, "") and r.get("wall_s") not in (None, "")]
        last = max((a for a, _ in rows), default=1)
        return max((w for a, w in rows if a < last), default=0.0)

    def run_seconds(self, run_id: str) -> float | None:
        """A run's compute time: :meth:`notebook_seconds` plus :meth:`earlier_attempts_s`
        (None without the notebook's record)."""
        seconds = self.notebook_seconds(run_id)
        return None if seconds is None else seconds + self.earlier_attempts_s(run_id)

    def is_finished(self, run_id: str) -> bool:
        """Results written *and* the executed notebook in place (a kill between the two
        would otherwise leave a result without its page in the book)."""
        return self.results_file(run_id).exists() and self.notebook(run_id).exists()

    # one profile of the grid
    def profile_dir(self, profile: str) -> Path:
        return self.root / profile

    def summary(self, profile: str, suffix: str = ".parquet") -> Path:
        return self.profile_dir(profile) / f"summary{suffix}"

    def grid_file(self, profile: str) -> Path:
        return self.profile_dir(profile) / "grid.json"

    def failures_file(self, profile: str) -> Path:
        return self.profile_dir(profile) / "failures.json"

    def failed_notebook(self, profile: str, run_id: str) -> Path:
        return self.profile_dir(profile) / "failed" / f"{run_id}.ipynb"

    def claim_file(self, run_id: str) -> Path:
        return self.root / "claims" / f"{run_id}.claim"

    # study-wide
    @property
    def tuning(self) -> Path:
        return self.root / "tuning.csv"

    @property
    def tuning_v2(self) -> Path:
        """Design v2's sweeps, convergence checks and the rule's choice (``chosen.json``)."""
        return self.root / "tuning-v2"


class ClaimHeld(RuntimeError):
    """Another live process holds the claim (``.holder`` says who)."""

    def __init__(self, path: Path, holder: dict):
        self.path, self.holder = path, holder
        super().__init__(f"{path.name} is held by {holder.get('host')}:{holder.get('pid')} "
                         f"since {holder.get('time')}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def claim_holder(path: str | os.PathLike, stale_after: float = 300.0) -> dict | None:
    """The holder of a live claim at ``path`` (``{"host", "pid", "time", "token"}``), or
    ``None`` when there is none or it is stale.

    A claim is stale when its holder was on this host and that process is gone, or when it
    has not been refreshed for ``stale_after`` seconds (a holder on another host that died:
    holders refresh the file's mtime every ``stale_after / 10`` s).
    """
    seen = _read_claim(Path(path))
    return None if seen is None else _live_holder(*seen, stale_after)


def _read_claim(path: Path) -> tuple[bytes, float] | None:
    """The claim file's bytes and mtime, or ``None`` when there is no claim file."""
    try:
        with open(path, "rb") as fh:
            return fh.read(), os.fstat(fh.fileno()).st_mtime  # one file, even if replaced
    except FileNotFoundError:
        return None


def _live_holder(content: bytes, mtime: float, stale_after: float) -> dict | None:
    """The holder that ``content`` names if that claim is live, ``None`` if it is stale."""
    try:
        holder = json.loads(content or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):  # not ours to judge: treat as live
        return {"host": "?", "pid": None, "time": None}
    if time.time() - mtime > stale_after:
        return None
    if holder.get("host") == socket.gethostname() and holder.get("pid"):
        if not _pid_alive(int(holder["pid"])):
            return None
    return holder


def _remove_claim(path: Path, content: bytes, stale_after: float | None = None) -> None:
    """Remove the claim at ``path`` if it still holds ``content`` (and, with
    ``stale_after``, is still stale): a holder releasing its own claim, or a breaker.

    Removers take turns (a ``flock`` on ``.break.lock`` beside the claims), so two breakers
    judging one dead claim cannot remove a new claim made in between, nor can a holder whose
    claim was broken remove the one that replaced it: a claim changes only when a remover
    removes it, and every claim's bytes are unique (its ``token``)."""
    with file_lock(path.parent / ".break.lock"):
        now = _read_claim(path)
        if now is None or now[0] != content:
            return
        if stale_after is None or _live_holder(*now, stale_after) is None:
            os.unlink(path)


@contextlib.contextmanager
def claim(path: str | os.PathLike, stale_after: float = 300.0, wait: float | None = 0.0,
          poll: float = 1.0, info: dict | None = None) -> Iterator[dict]:
    """Hold an exclusive claim on ``path`` for the duration of the ``with`` block.

    The claim file is written in full under a unique name and hard-linked into place (atomic
    and exclusive on local file systems and NFS), so it is never seen empty. It holds
    ``{"host", "pid", "time", "token", **info}`` (``token`` makes every claim's bytes unique)
    and has its mtime refreshed by a background thread while held; it is removed on exit,
    also on an exception, if it is still this claim. A stale claim (see
    :func:`claim_holder`) is broken (:func:`_remove_claim`) and taken over. While another
    live process holds it, wait up to ``wait`` seconds (``None``: as long as it takes),
    polling every ``poll`` s, then raise :class:`ClaimHeld`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {"host": socket.gethostname(), "pid": os.getpid(),
          "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "token": uuid.uuid4().hex,
          **(info or {})}
    deadline = None if wait is None else time.monotonic() + wait
    # the claim is written in full to a unique file and then hard-linked into place
    # (atomic, fails if the claim exists), so nobody ever reads an empty or partial claim
    content = json.dumps(me).encode()
    while True:
        try:
            _link_new(path, content)
            break
        except FileExistsError:
            pass
        seen = _read_claim(path)
        if seen is None:
            continue  # released since: try again at once
        holder = _live_holder(*seen, stale_after)
        if holder is None:
            _remove_claim(path, seen[0], stale_after)
            continue
        if deadline is not None and time.monotonic() >= deadline:
            raise ClaimHeld(path, holder)
        time.sleep(poll)
    stop = threading.Event()

    def refresh():
        while not stop.wait(stale_after / 10):
            with contextlib.suppress(FileNotFoundError):
                os.utime(path)

    beat = threading.Thread(target=refresh, name=f"claim {path.name}", daemon=True)
    beat.start()
    try:
        yield me
    finally:
        stop.set()
        beat.join()
        _remove_claim(path, content)  # not a claim that replaced a broken one


def _link_new(path: Path, content: bytes) -> None:
    """Create ``path`` holding ``content``, atomically, or raise ``FileExistsError``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".new", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
        os.link(tmp, path)  # atomic and exclusive, NFS included (unlike rename)
    finally:
        os.unlink(tmp)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[Path]:
    """Block until this process holds an exclusive ``flock`` on ``path`` (created if
    missing); released on exit or when the process dies. For short critical sections such as
    building a shared cache once: ``with file_lock(cache / ".me5-small.lock"): build()``.
    ``flock`` is reliable on one host; across hosts on NFS prefer :func:`claim`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield path
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
