"""CPU that the grid's Dask cluster itself takes beside the settings it runs.

A grid worker's task is a papermill call that waits for its kernel, so whatever the worker
process and the client (which hosts the local scheduler) spend is taken from the settings.
One run holds one task for ``--hold`` seconds on each of two one-worker clusters started by
``grid.dask_client`` (with the dashboard when bokeh is installed), round-robin, and reports
the CPU seconds per wall second of the worker and of the client+scheduler process: Dask's
default settings (the reference) against the grid's ``grid.LOCAL_CLUSTER_CONFIG``::

    python benchmarks/bench_dask.py [--hold 60] [--repeats 1] [--json PATH]

Run it while the cores are busy (e.g. beside a grid) to see the cost the settings pay.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import psutil

from optical_lib.experiment import cpu_name

#: The two clusters differ only in their Dask settings: Dask's own defaults (the reference)
#: and the grid's (None: ``grid.LOCAL_CLUSTER_CONFIG``).
CONFIGS = {"dask defaults": {}, "grid.dask_client": None}


def _hold(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def measure(name: str, hold: float) -> dict:
    from optical_lib import grid

    with grid.dask_client(workers=1, config=CONFIGS[name]) as client:
        worker = psutil.Process(next(iter(client.run(os.getpid).values())))
        me = psutil.Process()
        time.sleep(3)  # start-up is not what the settings pay for
        w0, m0, t0 = _cpu(worker), _cpu(me), time.perf_counter()
        client.submit(_hold, hold, pure=False).result()
        wall = time.perf_counter() - t0
        return {"worker": (_cpu(worker) - w0) / wall, "client+scheduler": (_cpu(me) - m0) / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hold", type=float, default=60.0, help="seconds a task is held")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    names = tuple(CONFIGS)
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for _ in range(args.repeats):
        for name in names:
            runs[name].append(measure(name, args.hold))
    print(f"CPU seconds per wall second over a {args.hold:.0f} s task "
          f"(load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores)")
    print(f"{'cluster':<18} {'worker':>8} {'client+scheduler':>17} {'total':>7} {'ref/this':>9}")
    ref = sum(sum(r.values()) for r in runs["dask defaults"]) / args.repeats
    summary = {}
    for name in names:
        worker = sum(r["worker"] for r in runs[name]) / args.repeats
        client = sum(r["client+scheduler"] for r in runs[name]) / args.repeats
        summary[name] = {"worker": worker, "client+scheduler": client}
        print(f"{name:<18} {worker:>8.3f} {client:>17.3f} {worker + client:>7.3f} "
              f"{ref / (worker + client):>8.1f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"hold_s": args.hold, "repeats": args.repeats,
                                         "cpu": cpu_name(),
                                         "summary": summary, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
