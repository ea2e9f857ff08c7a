"""The experimental grid: one papermill run of ``notebooks/experiment.ipynb`` per setting.

Profiles (``--profile``):

* ``smoke``: 2 settings on 2 evaluation languages, a CI check that the pipeline runs.
* ``quick``: the subset that finishes in about 10 minutes on 2 CPU cores (``make study``):
  students of L = 2 and 6 layers, k in {1, 16, 64} training languages, OPTICAL, seed 0,
  plus the zero-shot model at L = 2 and 6; Tatoeba evaluation only.
* ``medium``: the published run (about 40 minutes): L in {2, 3, 6} x k in {1, 4, 16, 64} x
  OPTICAL x seeds {0, 1}, sentence-MSE at k = 16 (L = 3, 6, seed 0), and the zero-shot
  model at L in {2, 3, 6, 12}; Tatoeba evaluation only. It contains ``quick``.
* ``full``: the study of DESIGN.md: L in {2, 3, 6, 12} x k in {1, 2, 4, 8, 16, 32, 64} x
  {MSE, OPTICAL} x seeds {0, 1, 2}, plus the zero-shot baseline at every L, evaluated on
  Tatoeba and XQuAD-R.

Each setting has a run id (a content hash of its parameters). A setting whose
``results/runs/<run_id>/results.json`` and ``book/runs/<run_id>.ipynb`` both exist is
skipped, so the grid can be killed and restarted without losing finished runs. A notebook
executes into a temporary file that is moved to ``book/runs/<run_id>.ipynb`` only when it
succeeded; a failed setting is
recorded in ``results/failures.json`` (its partial notebook kept under
``results/failed/``) and the grid goes on. At the end ``results/summary.{csv,parquet}``
holds every result row of the profile::

    python -m optical_lib.grid --profile quick [--dry-run]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pandas as pd
from tqdm import tqdm

from .evaluate import read_results, write_results
from .experiment import ExperimentConfig, validate
from .paths import PROJECT_ROOT

TEMPLATE = PROJECT_ROOT / "notebooks" / "experiment.ipynb"
QUICK_EVAL = {"eval_xquad": []}
PROFILES = ("smoke", "quick", "medium", "full")
SMOKE_EVAL = {"eval_tatoeba": ["swh", "amh"], "eval_xquad": [], "n_boot": 200}


def profile_settings(profile: str) -> list[dict]:
    """The parameter sets of a profile, in run order (cheap settings first)."""
    if profile == "smoke":
        return [
            {"layers": 2, "method": "none", **SMOKE_EVAL},
            {"layers": 2, "method": "optical", "k_langs": 2, "budget": 64, "epochs": 1,
             **SMOKE_EVAL},
        ]
    if profile == "quick":
        base = [{"layers": n, "method": "none", **QUICK_EVAL} for n in (2, 6)]
        return base + [{"layers": n, "method": "optical", "k_langs": k, "seed": 0, **QUICK_EVAL}
                       for n, k in itertools.product((2, 6), (1, 16, 64))]
    if profile == "medium":
        base = [{"layers": n, "method": "none", **QUICK_EVAL} for n in (2, 3, 6, 12)]
        optical = [{"layers": n, "method": "optical", "k_langs": k, "seed": s, **QUICK_EVAL}
                   for s, n, k in itertools.product((0, 1), (2, 3, 6), (1, 4, 16, 64))]
        mse = [{"layers": n, "method": "mse", "k_langs": 16, "seed": 0, **QUICK_EVAL}
               for n in (3, 6)]
        return base + optical + mse
    if profile == "full":
        base = [{"layers": n, "method": "none"} for n in (2, 3, 6, 12)]
        return base + [
            {"layers": n, "method": m, "k_langs": k, "seed": s}
            for s, n, m, k in itertools.product((0, 1, 2), (2, 3, 6, 12), ("optical", "mse"),
                                                (1, 2, 4, 8, 16, 32, 64))
        ]
    raise ValueError(f"Unknown profile {profile!r} (choose from {', '.join(PROFILES)})")


def config_of(params: dict) -> ExperimentConfig:
    return ExperimentConfig.from_parameters(**params)


def title_of(config: ExperimentConfig) -> str:
    what = "zero-shot baseline" if config.method == "none" else (
        f"{config.method.upper() if config.method == 'mse' else 'OPTICAL'}, "
        f"k = {config.k_langs} languages, {config.budget} pairs, seed {config.seed}")
    return f"L{config.layers} student, {what}"


def _prepare(template: Path, config: ExperimentConfig, path: Path) -> None:
    """Copy the template with this setting's own title (unique page titles in the book)."""
    nb = nbformat.read(template, as_version=4)
    nb.cells[0].source = (f"# {title_of(config)}\n\nRun `{config.run_id}` of the grid "
                          f"(profile `{config.profile}`); parameters below.")
    nbformat.write(nb, path)


def _atomic_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


def run_grid(profile: str, results_dir: Path, notebooks_dir: Path, dry_run: bool = False,
             template: Path = TEMPLATE, kernel: str = "python3",
             progress: bool = True) -> pd.DataFrame:
    """Run every pending setting of ``profile``; return a status table (one row each)."""
    import papermill

    results_dir, notebooks_dir = Path(results_dir), Path(notebooks_dir)
    settings = profile_settings(profile)
    configs = [config_of(p) for p in settings]
    for config in configs:  # every setting is checked before the first one runs
        validate(config)
    runs_dir = results_dir / "runs"
    # finished = results written AND the executed notebook in place (a kill between the two
    # would otherwise leave a result without its page in the book)
    done = [(runs_dir / c.run_id / "results.json").exists()
            and (notebooks_dir / f"{c.run_id}.ipynb").exists() for c in configs]
    status = pd.DataFrame({"run_id": [c.run_id for c in configs],
                           "title": [title_of(c) for c in configs],
                           "state": ["done" if d else "pending" for d in done]})
    if dry_run:
        return status
    runs_dir.mkdir(parents=True, exist_ok=True)
    failures_path = results_dir / "failures.json"
    failures = json.loads(failures_path.read_text()) if failures_path.exists() else {}
    notebooks_dir.mkdir(parents=True, exist_ok=True)
    pending = [i for i, d in enumerate(done) if not d]
    bar = tqdm(pending, desc=f"grid {profile}", unit="run", disable=not progress)
    for i in bar:
        config, params = configs[i], settings[i]
        bar.set_postfix_str(config.run_id)
        with tempfile.TemporaryDirectory() as tmp:
            source, target = Path(tmp) / "input.ipynb", Path(tmp) / "output.ipynb"
            _prepare(template, config, source)
            start = time.perf_counter()
            try:
                papermill.execute_notebook(
                    str(source), str(target), kernel_name=kernel, progress_bar=False,
                    parameters={**params, "results_dir": str(runs_dir.resolve())},
                    cwd=str(PROJECT_ROOT))
            except Exception as exc:  # record, keep the partial notebook, go on
                failed = results_dir / "failed"
                failed.mkdir(parents=True, exist_ok=True)
                if target.exists():
                    shutil.move(target, failed / f"{config.run_id}.ipynb")
                failures[config.run_id] = {"params": params, "error": f"{type(exc).__name__}: "
                                           f"{str(exc)[-2000:]}"}
                _atomic_json(failures_path, failures)
                status.loc[i, "state"] = "failed"
                continue
            shutil.move(target, notebooks_dir / f"{config.run_id}.ipynb")
        failures.pop(config.run_id, None)
        _atomic_json(failures_path, failures)
        status.loc[i, "state"] = f"ran in {time.perf_counter() - start:.0f}s"
    bar.close()
    finished = [runs_dir / c.run_id / "results.json" for c in configs
                if (runs_dir / c.run_id / "results.json").exists()]
    if finished:
        summary = pd.concat([read_results(p) for p in finished], ignore_index=True)
        for suffix in (".csv", ".parquet"):
            write_results(summary, results_dir / f"summary{suffix}",
                          columns=list(summary.columns))
        _atomic_json(results_dir / "grid.json", {"profile": profile,
                                                 "run_ids": [c.run_id for c in configs]})
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the study's grid with papermill.")
    parser.add_argument("--profile", default="quick", choices=PROFILES)
    parser.add_argument("--dry-run", action="store_true", help="list the settings and stop")
    parser.add_argument("--results", type=Path, default=PROJECT_ROOT / "results")
    parser.add_argument("--notebooks", type=Path, default=PROJECT_ROOT / "book" / "runs")
    args = parser.parse_args(argv)
    status = run_grid(args.profile, args.results, args.notebooks, dry_run=args.dry_run)
    print(status.to_string(index=False))
    failed = (status["state"] == "failed").sum()
    if failed:
        print(f"{failed} setting(s) failed: see {args.results / 'failures.json'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
