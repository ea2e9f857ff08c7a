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
      tuning.csv                the learning-rate sweep on the development languages
    book/runs/<run_id>.ipynb    the executed notebook of each setting

A setting is *finished* when both its ``results.json`` and its notebook exist
(:meth:`ResultsLayout.is_finished`).

:func:`atomic_write` is the one way files are written: into a uniquely named temporary file
in the target's directory, then ``os.replace``. Two processes writing the same path never
see a partial file and never share a temporary name (the Dask executor runs settings in
parallel).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .paths import PROJECT_ROOT

__all__ = ["ResultsLayout", "atomic_copy", "atomic_write", "atomic_write_json"]


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
    notebooks: Path = PROJECT_ROOT / "book" / "runs"

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))
        object.__setattr__(self, "notebooks", Path(self.notebooks))

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

    # study-wide
    @property
    def tuning(self) -> Path:
        return self.root / "tuning.csv"
