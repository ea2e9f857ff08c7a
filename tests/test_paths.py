"""Data-directory resolution and checksum verification."""

from __future__ import annotations

import hashlib

import pytest

from optical_lib import fetch, paths


def test_env_var_wins(tmp_path):
    (tmp_path / "mine").mkdir()
    env = {paths.DATA_ENV: str(tmp_path / "mine")}
    assert paths.data_dir(env, project_root=tmp_path / "proj") == tmp_path / "mine"


def test_env_var_must_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        paths.data_dir({paths.DATA_ENV: str(tmp_path / "nope")}, project_root=tmp_path)


def test_shared_beside_project_then_local(tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    assert paths.data_dir({}, project_root=project) == project / "data"
    (tmp_path / "shared" / "data").mkdir(parents=True)
    assert paths.data_dir({}, project_root=project) == tmp_path / "shared" / "data"


def test_cache_dir_is_created(tmp_path):
    target = tmp_path / "c"
    assert paths.cache_dir({paths.CACHE_ENV: str(target)}) == target
    assert target.is_dir()


def test_require_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"tatoeba-v1/tatoeba\.xxx"):
        paths.require("tatoeba-v1/tatoeba.xxx-eng.xxx", base=tmp_path)


def _mini_manifest(tmp_path, content: bytes):
    root = tmp_path / "data"
    (root / "tatoeba-v1").mkdir(parents=True)
    (root / "tatoeba-v1" / "tatoeba.abc-eng.abc").write_bytes(content)
    digest = hashlib.sha256(b"the original\n").hexdigest()
    manifest = tmp_path / "SUMS"
    manifest.write_text(f"{digest}  ./tatoeba-v1/tatoeba.abc-eng.abc\n")
    return root, manifest


def test_fetch_accepts_intact_copy(tmp_path):
    root, manifest = _mini_manifest(tmp_path, b"the original\n")
    counts = fetch.fetch(root, manifest=manifest, allow_download=False, progress=False)
    assert counts == {"verified": 1, "downloaded": 0}


def test_fetch_refuses_corrupted_copy_naming_the_file(tmp_path):
    root, manifest = _mini_manifest(tmp_path, b"the original, edited\n")
    with pytest.raises(fetch.ChecksumError, match=r"tatoeba\.abc-eng\.abc"):
        fetch.fetch(root, manifest=manifest, allow_download=False, progress=False)


def test_fetch_offline_download_fails_clearly(tmp_path, monkeypatch):
    root, manifest = _mini_manifest(tmp_path, b"x")
    (root / "tatoeba-v1" / "tatoeba.abc-eng.abc").unlink()

    def no_network(*args, **kwargs):
        raise fetch.urllib.error.URLError("no route to host")

    monkeypatch.setattr(fetch.urllib.request, "urlopen", no_network)
    with pytest.raises(ConnectionError, match="offline"):
        fetch.fetch(root, manifest=manifest, progress=False)


def test_every_pinned_file_has_a_public_source():
    entries = fetch.read_manifest()
    assert len(entries) > 600
    urls = {e.url for e in entries}
    assert all(u.startswith("https://raw.githubusercontent.com/") for u in urls)
    swh = next(e for e in entries if e.path == "tatoeba-v1/tatoeba.swh-eng.swh")
    assert "LASER/74bc6ae7" in swh.url and swh.url.endswith("data/tatoeba/v1/tatoeba.swh-eng.swh")


@pytest.mark.slow
def test_real_data_directory_matches_pins(real_data_dir):
    counts = fetch.fetch(real_data_dir, folders=["tatoeba-v1", "xquad-r"], allow_download=False,
                         progress=False)
    assert counts["verified"] > 200


def test_progress_bars_can_be_vetoed_from_the_environment(monkeypatch):
    monkeypatch.delenv(paths.PROGRESS_ENV, raising=False)
    assert paths.progress_bars(True) and not paths.progress_bars(False)
    monkeypatch.setenv(paths.PROGRESS_ENV, "0")
    assert not paths.progress_bars(True)
