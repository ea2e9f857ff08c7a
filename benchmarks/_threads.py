"""The thread settings a benchmark ran with: printed at the start, stored in its JSON.

With another process on one of two cores, torch's default of one thread per core runs
10-130x slower, so every timing is meaningless without these numbers.
"""

from __future__ import annotations

import os

import torch

ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")


def thread_settings() -> dict:
    """torch's intra-/inter-op thread counts, the environment that sets them, the cores, and
    the CPU (``cpu``: :func:`optical_lib.experiment.cpu_name`, the string every grid run
    records, so that a benchmark and a run can be put side by side)."""
    from optical_lib.experiment import cpu_name

    return {"torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(),
            **{name: os.environ.get(name) for name in ENV_VARS},
            "cpu_count": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else None,
            "cpu": cpu_name()}


def describe(settings: dict | None = None) -> str:
    s = thread_settings() if settings is None else settings
    env = ", ".join(f"{k}={s[k] if s[k] is not None else 'unset'}" for k in ENV_VARS)
    return (f"# threads: torch {s['torch_threads']} (inter-op {s['torch_interop_threads']}), "
            f"{env}; {s['cpu_count']} cores, {s['affinity']} usable; "
            f"{s['cpu']}")


def add_run_arguments(parser, repeats: int = 3) -> None:
    """The options every per-run benchmark shares: ``--repeats``, ``--threads``, ``--json``."""
    from pathlib import Path

    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)


def start(args) -> dict:
    """Apply ``--threads``, print the thread settings and return them (for the JSON)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = thread_settings()
    print(describe(settings))
    return settings
