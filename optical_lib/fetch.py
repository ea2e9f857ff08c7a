"""Verify the data directory against pinned SHA-256 sums and download what is missing.

The pinned list ``SHA256SUMS`` (shipped inside the package) names every file of the
offline profile. A file that exists must match its sum; a file that is absent is
downloaded from its public source (the repository and commit below), verified, and
only then moved into place. Nothing is ever silently accepted.

Usage::

    python -m optical_lib.fetch            # verify the resolved data directory
    python -m optical_lib.fetch --dest DIR # verify DIR, downloading missing files
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .paths import data_dir

MANIFEST = Path(__file__).with_name("SHA256SUMS")

# top-level folder -> (raw URL prefix at a pinned commit); the file's path below the
# folder is appended. Commits as recorded in the mirror's README.
SOURCES = {
    "tatoeba-v1": "https://raw.githubusercontent.com/facebookresearch/LASER/"
    "74bc6ae7ffb7cba670fe0f428d0ede9f666fb821/data/tatoeba/v1/",
    "xquad-r": "https://raw.githubusercontent.com/google-research-datasets/lareqa/"
    "9bc8c7fb6dd8d01d72a05a93c2cb96882b0d299c/xquad-r/",
    "bible-corpus": "https://raw.githubusercontent.com/christos-c/bible-corpus/"
    "44e5fca1bfb369a5da2ee23ebc6f421c88489c5c/",
    "webfaq-reference": "https://raw.githubusercontent.com/padas-lab-de/webfaq/"
    "be90c0c176175a422820f926c5396c65f6fc3384/",
    # the mirror's ntrex-128/ is the repository root (NTREX-128/, LICENSE.md, ...)
    "ntrex-128": "https://raw.githubusercontent.com/MicrosoftTranslator/NTREX/"
    "8561f6a622db9edad1217683e5c83daefd8bb2bf/",
    # an unmodified copy of the official FLORES-200 tarball (devtest/, README, metadata)
    "flores-200": "https://raw.githubusercontent.com/Helsinki-NLP/OPUS-MT-testsets/"
    "ac0f19c0be3cb4e0d9450fcb2d7a9847c4bdd180/datasets/facebook/flores/flores200_dataset/",
}


class ChecksumError(RuntimeError):
    """A data file does not match its pinned SHA-256."""


@dataclass(frozen=True)
class Entry:
    path: str  # relative to the data directory, e.g. "tatoeba-v1/tatoeba.swh-eng.swh"
    sha256: str

    @property
    def url(self) -> str:
        folder, _, rest = self.path.partition("/")
        if folder not in SOURCES:
            raise KeyError(f"No public source known for {self.path}")
        return SOURCES[folder] + rest


def read_manifest(path: Path = MANIFEST, folders: list[str] | None = None) -> list[Entry]:
    """Parse a ``sha256sum``-style file; optionally keep only some top-level folders."""
    entries = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or len(parts[0]) != 64:
            raise ValueError(f"{path}:{lineno}: not a 'SHA256  path' line: {line!r}")
        rel = parts[1].strip().lstrip("*")
        rel = rel[2:] if rel.startswith("./") else rel
        if folders is None or rel.split("/", 1)[0] in folders:
            entries.append(Entry(rel, parts[0].lower()))
    return entries


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_file(root: Path, entry: Entry) -> None:
    """Raise :class:`ChecksumError` naming the file if it does not match its pin."""
    path = Path(root) / entry.path
    actual = sha256_of(path)
    if actual != entry.sha256:
        raise ChecksumError(
            f"Checksum mismatch for {path}: expected {entry.sha256}, got {actual}. "
            f"The copy is corrupted or modified; delete it and run "
            f"`python -m optical_lib.fetch --dest {root}` to download it again."
        )


def download(entry: Entry, root: Path, timeout: float = 30.0) -> None:
    """Download one file to a temporary name, verify it, then move it into place."""
    target = Path(root) / entry.path
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        with urllib.request.urlopen(entry.url, timeout=timeout) as response:
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".part-")
            with os.fdopen(fd, "wb") as out:
                while block := response.read(1 << 20):
                    out.write(block)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        if tmp is not None:  # no half-written file is left behind
            os.unlink(tmp)
        raise ConnectionError(
            f"Cannot download {entry.path} from {entry.url} ({exc}). This machine seems to be "
            f"offline: point OPTICAL_DATA_DIR at a copy of the data (e.g. ../shared/data)."
        ) from exc
    actual = sha256_of(Path(tmp))
    if actual != entry.sha256:
        os.unlink(tmp)
        raise ChecksumError(
            f"Downloaded {entry.url} but its SHA-256 is {actual}, expected {entry.sha256}."
        )
    os.replace(tmp, target)


def fetch(
    root: Path | None = None,
    folders: list[str] | None = None,
    manifest: Path = MANIFEST,
    allow_download: bool = True,
    progress: bool = True,
) -> dict[str, int]:
    """Verify every pinned file under ``root``; download the absent ones.

    Returns counts ``{"verified": n, "downloaded": m}``. Raises on the first corrupted
    file (naming it) and, when a download is needed but impossible, with one message.
    """
    root = data_dir() if root is None else Path(root)
    entries = read_manifest(manifest, folders)
    missing = [e for e in entries if not (root / e.path).exists()]
    if missing and not allow_download:
        names = ", ".join(e.path for e in missing[:5])
        raise FileNotFoundError(f"{len(missing)} data files missing under {root}: {names} ...")
    counts = {"verified": 0, "downloaded": 0}
    for entry in tqdm(entries, desc=f"verify {root}", unit="file", disable=not progress):
        if entry in missing:
            download(entry, root)
            counts["downloaded"] += 1
        else:
            verify_file(root, entry)
        counts["verified"] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=None, help="data directory")
    parser.add_argument("--only", nargs="*", default=None, help="top-level folders to check")
    parser.add_argument("--no-download", action="store_true")
    args = parser.parse_args(argv)
    try:
        counts = fetch(args.dest, args.only, allow_download=not args.no_download)
    except (ChecksumError, ConnectionError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    root = args.dest or data_dir()
    print(f"{root}: {counts['verified']} files verified, {counts['downloaded']} downloaded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
