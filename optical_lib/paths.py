"""Where the study's files live: the one place that reads the environment.

Input data (read-only, checksummed) is resolved by :func:`data_dir`::

    $OPTICAL_DATA_DIR  if set
    ../shared/data     if it exists next to the project (the offline mirror)
    data/              the project's own working data directory

Derived artefacts (the converted encoder, checkpoints) go to :func:`cache_dir`, which
is always writable: ``$OPTICAL_CACHE_DIR`` if set, else ``data/cache`` in the project.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_ENV = "OPTICAL_DATA_DIR"
CACHE_ENV = "OPTICAL_CACHE_DIR"
#: Set to 0 to switch the library's progress bars off (the grid does, in every setting's
#: kernel: each update of a bar would become an output of the published run page).
PROGRESS_ENV = "OPTICAL_PROGRESS"


def progress_bars(wanted: bool = True) -> bool:
    """Whether to draw a progress bar its caller wants (``$OPTICAL_PROGRESS`` can veto)."""
    return bool(wanted) and os.environ.get(PROGRESS_ENV, "1").strip() not in ("0", "false")


def data_dir(env: dict[str, str] | None = None, project_root: Path | None = None) -> Path:
    """Return the directory that holds the input data sets.

    ``env`` and ``project_root`` exist for tests; callers pass nothing.
    """
    env = os.environ if env is None else env
    root = PROJECT_ROOT if project_root is None else Path(project_root)
    if env.get(DATA_ENV):
        path = Path(env[DATA_ENV]).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(
                f"{DATA_ENV}={path} is not a directory. Unset it to use ../shared/data or "
                f"data/, or run `python -m optical_lib.fetch --dest {path}` to download."
            )
        return path
    shared = root.parent / "shared" / "data"
    if shared.is_dir():
        return shared
    return root / "data"


def cache_dir(env: dict[str, str] | None = None, project_root: Path | None = None) -> Path:
    """Return (and create) the writable directory for derived artefacts."""
    env = os.environ if env is None else env
    root = PROJECT_ROOT if project_root is None else Path(project_root)
    path = Path(env[CACHE_ENV]).expanduser() if env.get(CACHE_ENV) else root / "data" / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def require(relative: str, base: Path | None = None) -> Path:
    """Path to ``relative`` inside the data directory, or a clear error if it is missing."""
    base = data_dir() if base is None else Path(base)
    path = base / relative
    if not path.exists():
        raise FileNotFoundError(
            f"Missing data: {path}. The data directory is {base} (set {DATA_ENV} to change "
            f"it); run `make data` (python -m optical_lib.fetch) to verify or download it."
        )
    return path
