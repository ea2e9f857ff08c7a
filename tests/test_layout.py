"""The results layout's writers and claims: atomic under concurrent writers, exclusive claims
across processes, stale claims broken."""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time

import pytest

from optical_lib.layout import (
    ClaimHeld,
    ResultsLayout,
    atomic_copy,
    atomic_write,
    atomic_write_json,
    claim,
    claim_holder,
    file_lock,
)


def test_atomic_write_kinds_and_failure_leaves_target_intact(tmp_path):
    path = tmp_path / "a" / "b.txt"
    atomic_write(path, "text")
    assert path.read_text() == "text"
    atomic_write(path, b"bytes")
    assert path.read_bytes() == b"bytes"
    atomic_write(path, lambda tmp: open(tmp, "w").write("callable"))
    assert path.read_text() == "callable"

    def broken(tmp):
        open(tmp, "w").write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, broken)
    assert path.read_text() == "callable"
    assert sorted(p.name for p in path.parent.iterdir()) == ["b.txt"]  # no temporary left
    atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}
    atomic_copy(path, tmp_path / "other" / "copy.txt")
    assert (tmp_path / "other" / "copy.txt").read_text() == "callable"


def _writer(path, k, n):
    for _ in range(n):
        atomic_write(path, (str(k) * 200_000))


def test_concurrent_writers_never_expose_a_partial_file(tmp_path):
    path = tmp_path / "shared.txt"
    atomic_write(path, "0" * 200_000)
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(path, k, 30)) for k in range(1, 4)]
    for p in procs:
        p.start()
    seen = set()
    while any(p.is_alive() for p in procs):
        text = path.read_text()
        assert len(text) == 200_000 and len(set(text)) == 1, "partial or mixed file seen"
        seen.add(text[0])
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert len(seen) >= 2  # the reader really raced the writers
    assert [p.name for p in tmp_path.iterdir()] == ["shared.txt"]


def _count_under_claim(claim_path, counter, n):
    for _ in range(n):
        with claim(claim_path, wait=None, poll=0.001):
            value = int(counter.read_text())  # read-modify-write: lost updates without the claim
            time.sleep(0.0005)
            counter.write_text(str(value + 1))


def _start_counting(tmp_path, processes: int):
    """``processes`` forked processes each counting to 40 under the claim ``x.claim``."""
    counter, claim_path = tmp_path / "counter", tmp_path / "claims" / "x.claim"
    counter.write_text("0")
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_count_under_claim, args=(claim_path, counter, 40))
             for _ in range(processes)]
    for p in procs:
        p.start()
    return counter, claim_path, procs


def _join(procs) -> None:
    for p in procs:
        p.join()
        assert p.exitcode == 0


def test_claim_is_exclusive_across_processes(tmp_path):
    counter, claim_path, procs = _start_counting(tmp_path, 4)
    _join(procs)
    assert counter.read_text() == "160"
    assert not claim_path.exists()


def test_a_claim_is_never_seen_empty_and_is_released_only_by_its_holder(tmp_path):
    # an empty claim made a waiter take a released-then-renewed claim for the stale one it
    # had judged, and remove it: two processes inside one claim (about 1 run in 25)
    counter, claim_path, procs = _start_counting(tmp_path, 3)
    reads, seen = 0, set()
    while any(p.is_alive() for p in procs):
        with contextlib.suppress(FileNotFoundError):
            holder = json.loads(claim_path.read_bytes())  # raises on an empty or partial file
            reads += 1
            seen.add(holder["pid"])
    _join(procs)
    assert reads > 0 and len(seen) >= 2 and counter.read_text() == "120"
    # only the leftovers of the break lock remain: no temporary claim files
    assert sorted(p.name for p in claim_path.parent.iterdir()) in ([], [".break.lock"])
    # a holder whose claim was broken and replaced does not remove the new claim
    with claim(claim_path) as me:
        claim_path.unlink()
        claim_path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "other"}))
    assert json.loads(claim_path.read_text())["token"] == "other" != me["token"]


def test_claim_held_by_a_live_process_waits_or_raises(tmp_path):
    path = tmp_path / "c.claim"
    with claim(path, info={"profile": "smoke"}) as me:
        holder = claim_holder(path)
        assert holder["pid"] == os.getpid() and holder["profile"] == "smoke" and me == holder
        with pytest.raises(ClaimHeld, match=f"held by {socket.gethostname()}:{os.getpid()}"):
            with claim(path, wait=0.2, poll=0.05):
                pass
    assert not path.exists() and claim_holder(path) is None
    with pytest.raises(KeyError), claim(path):  # released on an exception too
        raise KeyError("boom")
    assert not path.exists()


def test_stale_claims_are_broken(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = tmp_path / "dead.claim"
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "time": "x"}))
    assert claim_holder(path) is None  # its process is gone
    with claim(path, wait=0) as me:
        assert json.loads(path.read_text())["pid"] == me["pid"] == os.getpid()
    # another host: judged by the age of its last refresh
    far = tmp_path / "far.claim"
    far.write_text(json.dumps({"host": "elsewhere", "pid": 1, "time": "x"}))
    assert claim_holder(far, stale_after=60)["host"] == "elsewhere"
    os.utime(far, (time.time() - 120, time.time() - 120))
    assert claim_holder(far, stale_after=60) is None
    with claim(far, stale_after=60, wait=0):
        pass


def test_claim_is_refreshed_while_held(tmp_path):
    path = tmp_path / "beat.claim"
    with claim(path, stale_after=0.5):
        os.utime(path, (time.time() - 100, time.time() - 100))
        time.sleep(0.2)  # the heartbeat (every stale_after / 10) touches it again
        assert time.time() - path.stat().st_mtime < 0.5


def _locked_increment(lock, counter, n):
    for _ in range(n):
        with file_lock(lock):
            value = int(counter.read_text())
            counter.write_text(str(value + 1))


def test_file_lock_serialises_processes(tmp_path):
    counter = tmp_path / "n"
    counter.write_text("0")
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_locked_increment, args=(tmp_path / ".lock", counter, 100))
             for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert counter.read_text() == "300"


def test_layout_paths(tmp_path):
    layout = ResultsLayout(tmp_path / "r", tmp_path / "nb")
    assert layout.summary("quick", ".csv") == tmp_path / "r" / "quick" / "summary.csv"
    assert layout.failed_notebook("quick", "x") == tmp_path / "r" / "quick" / "failed" / "x.ipynb"
    assert layout.claim_file("x") == tmp_path / "r" / "claims" / "x.claim"
    assert not layout.is_finished("x")
