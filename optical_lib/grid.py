"""The experimental grid: one papermill run of ``notebooks/experiment.ipynb`` per setting.

Profiles (``--profile``):

* ``smoke``: 2 settings on 2 evaluation languages, a CI check that the pipeline runs.
* ``medium``: the first published run (design v1, archived): L in {2, 3, 6} x k in
  {1, 4, 16, 64} x OPTICAL x seeds {0, 1}, sentence-MSE at k = 16 (L = 3, 6, seed 0), and the
  zero-shot model at L in {2, 3, 6, 12}; Tatoeba evaluation only.
* ``full``: the study, design v2 (:func:`study_full`): depth {2, 3, 6, 12} x k in {1, 2, 4,
  8, 16, 64} x 10 language draws with the me5-small teacher at 1,984 pairs, and three arms
  (512 pairs, "no relatives", the MiniLM teacher) on fewer cells, with their baselines.
* ``quick``: a slice of ``full`` that runs in minutes (:func:`study_quick`): L2, k in {1, 8},
  one draw, 512 pairs, FLORES-200 only. It checks the pipeline; it answers nothing.
* ``baselines``, ``ablation``, ``curve``: design v2's zero-shot baselines (float32), the
  objective ablation (development languages) and the learning-curve arm.

Usage::

    python -m optical_lib.grid --profile quick [--dry-run] [--only RUN_ID ...] [--layers N ...]
        [--executor local|dask] [--scheduler ADDRESS] [--workers N] [--threads-per-worker T]
        [--device cuda]

**One code path.** :func:`plan` expands and validates the profile, :func:`run_setting` runs
one setting, :func:`record_outcome` keeps ``failures.json`` and :func:`write_summary` the
profile's summary. An *executor* only decides where :func:`run_setting` is called: in this
process, one setting after another (``local``, the default), or on ``dask.distributed``
workers (``dask``: a ``LocalCluster`` of ``--workers`` processes, or an existing scheduler at
``--scheduler``, e.g. one started by ``dask-jobqueue``'s ``SLURMCluster``). Files are laid out
by :class:`~optical_lib.layout.ResultsLayout`::

    results/runs/<run_id>/...        one setting (shared by the profiles that contain it)
    book/runs/<run_id>.ipynb         its executed notebook
    results/<profile>/summary.{csv,parquet}, grid.json, failures.json, failed/<run_id>.ipynb

**Resume.** Each setting has a run id (a content hash of its parameters). A setting is
finished only when its ``results.json`` *and* its notebook exist
(:meth:`ResultsLayout.is_finished`); finished settings are skipped, so the grid (or its
client) can be killed and restarted. The notebook executes into a temporary file that is
copied into place atomically (:func:`~optical_lib.layout.atomic_copy`) only when it
succeeded. A failed setting is recorded in ``failures.json`` (its partial notebook kept under
``failed/``) and the grid goes on.

**No setting runs twice at once.** Two mechanisms, both tested:

1. *Scheduler-side de-duplication*: the client submits each pending run id once, with the
   run id as the Dask task key (``optical-grid-<run_id>``), so the scheduler holds at most one
   task per setting, also when a second client submits the same grid to the same scheduler.
2. *An atomic claim file* ``results/claims/<run_id>.claim``, hard-linked into place
   (exclusive, never seen empty) by :func:`run_setting` (every executor) before it runs a setting
   and removed after (:func:`~optical_lib.layout.claim`). It holds host, pid and time, is
   refreshed while held, and is stale when its process is gone (same host) or it has not
   been refreshed for :data:`CLAIM_STALE_S` seconds (another host). This covers what the
   scheduler cannot see: a restarted client next to a worker still running an orphaned
   setting, a local and a Dask grid on one results folder, two schedulers. A setting whose
   claim is held by a live process waits for it, then is skipped if that run finished it.

**Faults.** A worker that dies mid-setting loses only that setting: the scheduler reruns it
on another worker, at most ``--retries`` times (``distributed.scheduler.allowed-failures``),
then it is recorded as failed (``KilledWorker``). An error inside the notebook is not
retried (it is deterministic): it is recorded as failed.

**Threads.** Every executor sets the torch/OpenMP threads of each setting explicitly
(``--threads-per-worker``, default 1): ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` and
``OMP_WAIT_POLICY=PASSIVE`` in the kernel's environment and the notebook parameter
``threads``. The count is recorded in the status table, ``grid.json`` and each setting's
``setting.json``. With two settings on two cores, torch's default of "all cores" per
process makes both 10-130x slower.

**Device.** ``--device cuda`` trains and encodes every setting on the GPU (checked before
anything runs). Like the threads, the device says how a setting is computed, not what: the
run ids stay the same (:data:`~optical_lib.experiment.HASHED_AS`), and ``setting.json``,
the status table and ``grid.json`` record where each setting ran. Results of one setting on
two devices are not bit-identical (bf16 is rounded differently). The same holds for a CPU
without bf16 instructions, where :mod:`optical_lib.bf16` computes the bf16 products with
float32 BLAS (``bf16_kernels`` in ``setting.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pandas as pd
from tqdm import tqdm

from .evaluate import read_results, write_results
from .experiment import DEFAULT_LR, ExperimentConfig, data_folders, tuned_v2, validate
from .layout import ResultsLayout, atomic_copy, atomic_write_json, claim
from .multiway import STUDY_BUDGETS
from .paths import CACHE_ENV, DATA_ENV, PROGRESS_ENV, PROJECT_ROOT, cache_dir, data_dir

TEMPLATE = PROJECT_ROOT / "notebooks" / "experiment.ipynb"
QUICK_EVAL = {"eval_xquad": []}
PROFILES = ("smoke", "quick", "medium", "full", "baselines", "ablation", "curve")
#: Design v2: every zero-shot depth under both teachers, the MiniLM teacher's own
#: reference, and BM25 (the matched baselines every v2 profile shares).
V2 = {"design": "v2"}
V2_DEPTHS = (2, 3, 6, 12)
#: The study's objective: what the objective rule (optical_lib.tune.choose_objective)
#: picks on the finished ablation profile; a test checks the two agree.
STUDY_METHOD = "optical+mse"
#: The arithmetic of the study's trained settings (benchmarks/bench_precision.py).
STUDY_AMP = "bf16"
#: Learning-curve budgets: 1,984 pairs (the core grid's), 4x, 16x, and the whole pool.
CURVE_BUDGETS = (1984, 7936, 31744, 0)
#: Epochs of a 1,984-pair run where no tuned value exists (the convergence check's choice).
CURVE_EPOCHS = 12
#: Design v2's study grid (``full``): k as a category (32 left out: the budget goes to
#: draws), language draws per core cell, draws that are also scored on Tatoeba and XQuAD-R.
STUDY_KS = (1, 2, 4, 8, 16, 64)
STUDY_DRAWS = 10
SECONDARY_DRAWS = 2
#: The study's arms (512 pairs, no relatives, the MiniLM teacher): fewer k, fewer draws.
ARM_KS = (1, 8, 64)
ARM_DRAWS = 4
ARM_DEPTHS = (2, 6)
SMALL_BUDGET = STUDY_BUDGETS[1]
EXECUTORS = ("local", "dask")
SMOKE_EVAL = {"eval_tatoeba": ["swh", "amh"], "eval_xquad": [], "n_boot": 200}
#: Seconds to wait for an external scheduler to answer.
CONNECT_TIMEOUT_S = 15.0
#: A claim not refreshed for this long (seconds) is stale (its holder died on another host).
CLAIM_STALE_S = 300.0


def profile_settings(profile: str) -> list[dict]:
    """The parameter sets of a profile, in run order (cheap settings first)."""
    if profile == "smoke":
        return [
            {"layers": 2, "method": "none", **SMOKE_EVAL},
            {"layers": 2, "method": "optical", "k_langs": 2, "budget": 64, "epochs": 1,
             **SMOKE_EVAL},
        ]
    if profile == "quick":
        return study_quick()
    if profile == "medium":
        base = [{"layers": n, "method": "none", **QUICK_EVAL} for n in (2, 3, 6, 12)]
        optical = [{"layers": n, "method": "optical", "k_langs": k, "seed": s, **QUICK_EVAL}
                   for s, n, k in itertools.product((0, 1), (2, 3, 6), (1, 4, 16, 64))]
        mse = [{"layers": n, "method": "mse", "k_langs": 16, "seed": 0, **QUICK_EVAL}
               for n in (3, 6)]
        return base + optical + mse
    if profile == "full":
        return study_full()
    if profile == "baselines":
        return v2_baselines()
    if profile == "ablation":
        # the objective ablation on the development languages (a method choice is never
        # judged on evaluation data): every objective per depth, one draw, k = 8, each
        # depth's learning rate, 8 epochs (the horizon of the GPU sweep)
        # (the v1 rates, pinned: the tuning of the chosen objective must not move them)
        trained = [{**V2, "layers": n, "method": m, "k_langs": 8, "draw": 0, "split": "dev",
                    "teacher": "me5-small", "epochs": 8, "lr": DEFAULT_LR[n]}
                   for n in (2, 3, 6) for m in ("optical", "optical-plain", "mse", "optical+mse")]
        zero = [{**V2, "layers": n, "method": "none", "split": "dev", "teacher": "me5-small"}
                for n in (2, 3, 6)]
        return zero + trained
    if profile == "curve":
        # the learning-curve arm: the study's objective per depth on growing prefixes of
        # the whole shuffled pool (NTREX-128 + Tatoeba; the English side is not held
        # fixed), up to all of it; one draw, bf16. Large budgets need a GPU or many
        # CPU-hours.
        return [{**V2, "layers": n, "method": STUDY_METHOD, "sample": "pool", "draw": 0,
                 "budget": b, "amp": STUDY_AMP, "epochs": curve_epochs(n, b)}
                for b in CURVE_BUDGETS for n in V2_DEPTHS]
    raise ValueError(f"Unknown profile {profile!r} (choose from {', '.join(PROFILES)})")


def study_full(draws: int = STUDY_DRAWS) -> list[dict]:
    """Design v2's study grid (the ``full`` profile), fixed before it runs.

    * **core**: depth {2, 3, 6, 12} x k in :data:`STUDY_KS` (a category) x ``draws``
      language draws, the me5-small teacher, the 1,984-pair budget, the study's objective
      in bf16, the tuned learning rate and epochs. The draws go outermost, so a grid cut
      short holds every cell at the draws it reached. Only the first
      :data:`SECONDARY_DRAWS` draws are also evaluated on Tatoeba and XQuAD-R (the
      "students that retrieve" question, per depth, needs no ten draws per k); every draw
      is evaluated on FLORES-200, the outcome of the k analysis.
    * **arms** on :data:`ARM_KS` x :data:`ARM_DRAWS` draws, FLORES-200 only: the 512-pair
      budget and the "no relatives" pool (depths 2 and 6), the MiniLM teacher (every
      depth; L12 is not its own teacher there).
    * the bf16 zero-shot baselines of every depth and teacher, and BM25, first.

    The objective ablation, the tuning sweep, the convergence check and the learning
    curve are profiles and tables of their own (``ablation``, ``curve``,
    ``results/tuning-v2``)."""
    trained = {**V2, "method": STUDY_METHOD, "amp": STUDY_AMP}
    flores_only = {"eval_tatoeba": [], "eval_xquad": []}
    core = [{**trained, "layers": n, "k_langs": k, "draw": d, "teacher": "me5-small",
             **({} if d < SECONDARY_DRAWS else flores_only)}
            for d in range(draws) for n in V2_DEPTHS for k in STUDY_KS]
    arms = []
    for d in range(ARM_DRAWS):
        arms += [{**trained, "layers": n, "k_langs": k, "draw": d, "teacher": "me5-small",
                  "budget": SMALL_BUDGET, **flores_only} for n in ARM_DEPTHS for k in ARM_KS]
        arms += [{**trained, "layers": n, "k_langs": k, "draw": d, "teacher": "me5-small",
                  "relatives": False, **flores_only} for n in ARM_DEPTHS for k in ARM_KS]
        arms += [{**trained, "layers": n, "k_langs": k, "draw": d, "teacher": "minilm-l6",
                  **flores_only} for n in V2_DEPTHS for k in ARM_KS]
    return study_baselines() + core + arms


def study_baselines() -> list[dict]:
    """:func:`v2_baselines` in the study's arithmetic (BM25 has none)."""
    return [p if p["method"] == "bm25" else {**p, "amp": STUDY_AMP} for p in v2_baselines()]


def study_quick() -> list[dict]:
    """The ``quick`` profile: a slice of the study that ``make study PROFILE=quick`` runs in
    minutes on two cores: BM25 and the zero-shot L2, and L2 students at k = 1 and k = 8 on
    draw 0 with the 512-pair budget, scored on FLORES-200 only. It shows the pipeline end
    to end; it answers nothing (one draw)."""
    flores_only = {"eval_tatoeba": [], "eval_xquad": []}
    base = [p for p in study_baselines()
            if p["method"] == "bm25" or (p.get("layers"), p.get("teacher")) == (2, "me5-small")]
    return base + [{**V2, "method": STUDY_METHOD, "amp": STUDY_AMP, "layers": 2,
                    "k_langs": k, "draw": 0, "teacher": "me5-small", "budget": SMALL_BUDGET,
                    **flores_only} for k in (1, 8)]


def curve_epochs(layers: int, budget: int, teacher: str = "me5-small") -> int:
    """Epochs of a learning-curve run: as many optimiser steps as the depth's tuned
    1,984-pair run (its tuned epochs, else :data:`CURVE_EPOCHS`), and one pass over the
    data at least. Larger budgets thus see more distinct pairs for at least the same
    compute, never the same pairs more often."""
    from .experiment import V2_BUDGET
    from .multiway import WHOLE_POOL, pool_size

    base = tuned_v2(teacher, STUDY_METHOD, layers).get("epochs", CURVE_EPOCHS)
    size = pool_size() if budget == WHOLE_POOL else budget
    return max(1, round(base * V2_BUDGET / size))


def v2_baselines() -> list[dict]:
    """Design v2's baselines: zero-shot students (both teachers: the OPTICAL protocol uses
    the teacher), the MiniLM teacher encoding both sides, BM25."""
    zero = [{**V2, "layers": n, "method": "none", "teacher": t}
            for t in ("me5-small", "minilm-l6") for n in V2_DEPTHS]
    return ([{**V2, "method": "bm25"}] + zero
            + [{**V2, "model": "minilm-l6", "method": "none", "teacher": "minilm-l6"}])


def config_of(params: dict) -> ExperimentConfig:
    return ExperimentConfig.from_parameters(**params)


def project_path(path: Path) -> str:
    """``path`` relative to the project root when it lies inside it (what a published
    notebook records), else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class Setting:
    """One setting of a profile: its notebook parameters and their frozen config."""

    params: dict
    config: ExperimentConfig

    @property
    def run_id(self) -> str:
        return self.config.run_id

    @property
    def title(self) -> str:
        return self.config.title

    @property
    def depth(self) -> int | None:
        """The me5-small student's (or zero-shot model's) depth; None for BM25 and the
        MiniLM teacher's own baseline."""
        return self.params.get("layers")


def plan(profile: str) -> list[Setting]:
    """Every setting of ``profile``, in run order, each validated against the data (a bad
    setting raises ``ValueError`` before the first one runs)."""
    settings = [Setting(p, config_of(p)) for p in profile_settings(profile)]
    for s in settings:
        validate(s.config)
    return settings


def untuned(settings: list[Setting]) -> list[str]:
    """The trained design-v2 settings among ``settings`` whose learning rate is not given
    and that have no *used* tuning choice (:func:`optical_lib.experiment.tuned_v2`): they
    would train at a fallback rate for a fallback number of epochs. One line each."""
    out = []
    for s in settings:
        c = s.config
        if c.design != "v2" or not c.trains or "lr" in s.params:
            continue
        if not tuned_v2(c.teacher, c.method, c.training.student_layers):
            out.append(f"{s.run_id} (L{c.training.student_layers}, {c.teacher} teacher, "
                       f"{c.method})")
    return out


def select(settings: list[Setting], only: Iterable[str] | None,
           layers: Iterable[int] | None = None) -> list[Setting]:
    """The settings named by ``only`` (run ids; ``None``: all) whose depth is one of
    ``layers`` (``None``: any), in profile order. ``layers`` only chooses which part of a
    profile runs now (e.g. the cheap depths on a CPU, L12 on a GPU), never what it holds."""
    if only is not None:
        only = set(only)
        ids = [s.run_id for s in settings]
        if unknown := sorted(only - set(ids)):
            shown = ", ".join(ids[:8]) + (f", ... ({len(ids)} in all; --dry-run lists them)"
                                           if len(ids) > 8 else "")
            raise ValueError(f"Unknown run id(s) {unknown} for this profile (valid: {shown})")
        settings = [s for s in settings if s.run_id in only]
    if layers is not None:
        layers = set(layers)
        depths = {s.depth for s in settings} - {None}
        if unknown := sorted(layers - depths):
            whose = "the chosen settings have" if only else "this profile has"
            raise ValueError(f"--layers {unknown}: {whose} student depths {sorted(depths)} "
                             "only")
        settings = [s for s in settings if s.depth in layers]
    return settings


def grid_status(settings: list[Setting], layout: ResultsLayout) -> pd.DataFrame:
    """One row per setting: run id, title and ``done`` / ``pending``."""
    return pd.DataFrame({
        "run_id": [s.run_id for s in settings], "title": [s.title for s in settings],
        "state": ["done" if layout.is_finished(s.run_id) else "pending" for s in settings]})


# --------------------------------------------------------------------------- environment


def check_device(device: str | None, present: bool = True) -> None:
    """Raise ``ValueError`` before any compute if ``device`` is not a torch device the study
    runs on or (``present``) this machine has none of it (a dry run only checks the name)."""
    if device is None:
        return
    import torch

    try:
        kind = torch.device(device).type
    except RuntimeError as exc:
        raise ValueError(f"Unknown device {device!r} (e.g. cpu, cuda, cuda:1)") from exc
    if present and kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: torch sees no CUDA device on this machine")
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"--device {device}: the study runs on cpu or cuda only")


def thread_env(threads: int) -> dict[str, str]:
    """Environment that pins a setting's kernel to ``threads`` OpenMP/MKL threads."""
    n = str(int(threads))
    return {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n,
            "OMP_WAIT_POLICY": "PASSIVE"}


#: Variables a setting's kernel must not inherit. Dask's nanny starts its workers with
#: ``MALLOC_TRIM_THRESHOLD_=65536`` (``distributed.nanny.pre-spawn-environ``, so that workers
#: hand freed memory back to the OS); a kernel started by such a worker inherited it, and
#: glibc then unmaps and re-faults the large tensors of every training step. Measured on a
#: 2-core AVX2 machine, one torch thread: benchmarks/bench_train.py (L2, float32) 7% (OPTICAL)
#: and 18% (MSE) fewer pairs/s and 4x the system time with it; bf16-emulated training 3.5x the
#: system time; ``make study PROFILE=quick`` on two Dask workers trained at 1.8 s per L2 step
#: (0.8 s for the same depth under the local executor), 26 of its 86 CPU-minutes in the
#: kernel. The grid runs its kernels with glibc's default (adaptive) threshold; with it, a
#: Dask worker and a local process training L2 side by side took 1.13 and 1.12 s a step
#: (two local processes: 1.10 s).
KERNEL_ENV_UNSET = ("MALLOC_TRIM_THRESHOLD_",)


@contextlib.contextmanager
def _environ(env: dict[str, str | None]) -> Iterator[None]:
    """``env`` in ``os.environ`` for the block (a value of None: the variable unset)."""
    def apply(values: dict[str, str | None]) -> None:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    old = {k: os.environ.get(k) for k in env}
    apply(env)
    try:
        yield
    finally:
        apply(old)


def environment_problems(folders: Iterable[str] | None = None) -> list[str]:
    """What this machine lacks to run a setting: the data directory (the ``folders`` of it
    that the settings read, :func:`~optical_lib.experiment.data_folders`; None: every folder
    of the data manifest) and the converted model in the cache. Cheap: checks paths only."""
    from .fetch import read_manifest
    from .models import ME5_SMALL

    host, problems = socket.gethostname(), []
    try:
        root = data_dir()
    except FileNotFoundError as exc:
        problems.append(f"{host}: {exc}")
    else:
        if folders is None:
            folders = {e.path.split("/")[0] for e in read_manifest()}
        missing = [f for f in sorted(folders) if not (root / f).is_dir()]
        if missing:
            problems.append(f"{host}: the data directory {root} lacks {', '.join(missing)} "
                            f"(set {DATA_ENV} to a copy of the data, or run `make data`)")
    model = cache_dir() / ME5_SMALL
    if not (model / "build_info.json").is_file() or not (model / "model.safetensors").is_file():
        problems.append(f"{host}: the model cache {model} is missing: run `make model` where "
                        f"{CACHE_ENV} points to the same directory, or set {CACHE_ENV} to a "
                        "shared directory that holds it")
    return problems


def ensure_environment(problems: list[str], where: str) -> None:
    if problems:
        raise RuntimeError(f"Cannot run the grid ({where}):\n  " + "\n  ".join(problems))


def prepare_model_cache() -> None:
    """Build the converted model once, here, before any setting starts (so that parallel
    settings never build it concurrently)."""
    from .models import ME5_SMALL, build_me5_small

    model = cache_dir() / ME5_SMALL
    if not (model / "build_info.json").is_file():
        build_me5_small()


# --------------------------------------------------------------------------- one setting


@dataclass(frozen=True)
class Job:
    """Everything a worker needs to run one setting (plain, picklable)."""

    run_id: str
    params: dict
    notebook: str  # the prepared notebook (JSON text, with the setting's own title)
    results: str  # ResultsLayout.root
    notebooks: str  # ResultsLayout.notebooks
    profile: str
    threads: int = 1
    kernel: str = "python3"
    claim_wait: float | None = None  # seconds to wait for a live claim (None: as needed)
    device: str | None = None  # torch device of the setting (None: the setting's own, cpu)
    template: str = "notebooks/experiment.ipynb"  # where the notebook came from (as recorded)


def prepare_notebook(template: Path, setting: Setting, profile: str) -> str:
    """The template with this setting's own title (unique page titles in the book)."""
    nb = nbformat.read(template, as_version=4)
    config = setting.config
    what = ("the un-distilled student" if config.method == "none" else
            f"{config.budget} training pairs from {config.k_langs} language(s)")
    nb.cells[0].source = (f"# {setting.title}\n\nRun `{setting.run_id}` of the grid (profile "
                          f"`{profile}`): the {config.layers}-layer student, {what}. The "
                          "cell below holds this run's parameters.")
    return nbformat.writes(nb)


def record_paths(notebook: Path, input_path: str, output_path: str) -> None:
    """Make an executed notebook publishable: its papermill metadata records where it came
    from and where it is published (not the temporary files it ran between), and any path
    under the project root in its outputs (a library warning's file name, say) is written
    relative to the project, so no page carries the machine that built it."""
    nb = nbformat.read(notebook, as_version=4)
    meta = nb.metadata.setdefault("papermill", {})
    meta["input_path"], meta["output_path"] = input_path, output_path
    root = f"{PROJECT_ROOT}/"
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if isinstance(output.get("text"), str):
                output["text"] = output["text"].replace(root, "")
    nbformat.write(nb, notebook)


@functools.cache
def kernel_manager_class():
    """The kernel manager papermill starts each setting's kernel with.

    On POSIX the kernel talks over Unix sockets named after its own connection file
    (``transport="ipc"``) instead of TCP ports on localhost. With TCP, a free port is
    picked and bound later, and kernels starting at the same moment (Dask workers, a
    restarted client) can lose that race ("ZMQError: Address already in use") and fail
    a setting before any of its cells ran."""
    import uuid

    from jupyter_client.manager import AsyncKernelManager
    from traitlets import CaselessStrEnum, default

    if os.name != "posix":
        return AsyncKernelManager

    class IPCKernelManager(AsyncKernelManager):
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

        @default("ip")
        def _unique_socket_prefix(self) -> str:
            # jupyter_client's default is "kernel-ipc" in the working directory when no
            # connection file is named yet: every kernel would share those sockets
            return os.path.join(tempfile.gettempdir(), f"optical-kernel-{uuid.uuid4().hex}")

    return IPCKernelManager


def run_setting(job: Job) -> dict:
    """Run one setting here, in this process (the same function for every executor).

    Holds the setting's claim while it runs, executes the notebook into a temporary file
    with the setting's thread count, and copies it into place atomically only on success.
    Returns an outcome record: ``{"run_id", "state": "ran" | "done" | "failed",
    "seconds", "error", "host", "pid", "threads", "device"}``; it never raises for a failed
    notebook.
    """
    import papermill

    layout = ResultsLayout(Path(job.results), Path(job.notebooks))
    outcome = {"run_id": job.run_id, "state": "done", "seconds": 0.0, "error": None,
               "host": socket.gethostname(), "pid": os.getpid(), "threads": job.threads,
               "device": job.device or job.params.get("device", "cpu")}
    if layout.is_finished(job.run_id):
        return outcome
    problems = environment_problems(data_folders(config_of(job.params)))
    if problems:
        return {**outcome, "state": "failed", "error": "; ".join(problems)}
    with claim(layout.claim_file(job.run_id), stale_after=CLAIM_STALE_S, wait=job.claim_wait,
               info={"profile": job.profile}):
        if layout.is_finished(job.run_id):  # finished by the previous holder of the claim
            return outcome
        with tempfile.TemporaryDirectory(prefix=f"grid-{job.run_id}-") as tmp:
            source, target = Path(tmp) / "input.ipynb", Path(tmp) / "output.ipynb"
            source.write_text(job.notebook)
            start = time.perf_counter()
            error = None
            try:
                with _environ({**thread_env(job.threads), PROGRESS_ENV: "0",
                               **dict.fromkeys(KERNEL_ENV_UNSET)}):
                    papermill.execute_notebook(
                        str(source), str(target), kernel_name=job.kernel, progress_bar=False,
                        kernel_manager_class=kernel_manager_class(),
                        parameters={**job.params, "threads": job.threads, "run_id": job.run_id,
                                    **({"device": job.device} if job.device else {}),
                                    "results_dir": project_path(layout.runs)},
                        cwd=str(PROJECT_ROOT))
                if not layout.results_file(job.run_id).exists():
                    error = (f"the notebook finished without writing "
                             f"{layout.results_file(job.run_id)}")
            except Exception as exc:  # keep the partial notebook, report, go on
                error = f"{type(exc).__name__}: {str(exc)[-2000:]}"
            seconds = time.perf_counter() - start
            if error is not None:
                if target.exists():
                    atomic_copy(target, layout.failed_notebook(job.profile, job.run_id))
                return {**outcome, "state": "failed", "seconds": seconds, "error": error}
            record_paths(target, job.template, project_path(layout.notebook(job.run_id)))
            atomic_copy(target, layout.notebook(job.run_id))
    return {**outcome, "state": "ran", "seconds": seconds}


# --------------------------------------------------------------------------- bookkeeping


def load_failures(layout: ResultsLayout, profile: str) -> dict:
    path = layout.failures_file(profile)
    return json.loads(path.read_text()) if path.exists() else {}


def record_outcome(layout: ResultsLayout, profile: str, failures: dict, outcome: dict,
                   params: dict) -> None:
    """Update ``failures.json`` of the profile with one setting's outcome (client side: one
    writer)."""
    if outcome["state"] == "failed":
        failures[outcome["run_id"]] = {"params": params, "error": outcome["error"],
                                       "host": outcome.get("host")}
    elif failures.pop(outcome["run_id"], None) is None:
        return  # nothing changed
    atomic_write_json(layout.failures_file(profile), failures)


def write_summary(layout: ResultsLayout, profile: str, settings: list[Setting],
                  run_info: dict) -> pd.DataFrame | None:
    """``summary.{csv,parquet}`` (every result row of the profile's finished settings) and
    ``grid.json`` (its run ids in order, and how the last grid run that computed something was
    executed; ``run_info=None`` keeps what the file says, so re-running a finished grid
    rewrites the same bytes)."""
    finished = [layout.results_file(s.run_id) for s in settings if layout.is_finished(s.run_id)]
    if not finished:
        return None
    summary = pd.concat([read_results(p) for p in finished], ignore_index=True)
    for suffix in (".csv", ".parquet"):
        write_results(summary, layout.summary(profile, suffix), columns=list(summary.columns))
    write_grid_file(layout, profile, settings, run_info)
    return summary


def write_grid_file(layout: ResultsLayout, profile: str, settings: list[Setting],
                    run_info: dict | None) -> None:
    """``grid.json``: the profile's run ids in order and how the last grid run that computed
    something was executed (``run_info=None`` keeps what the file says)."""
    grid_file = layout.grid_file(profile)
    if run_info is None and grid_file.exists():  # nothing ran: keep how the results were made
        run_info = {k: v for k, v in json.loads(grid_file.read_text()).items()
                    if k not in ("profile", "run_ids")}
    atomic_write_json(grid_file, {
        "profile": profile, "run_ids": [s.run_id for s in settings], **(run_info or {})})


def refresh_grid_files(layout: ResultsLayout | None = None) -> dict[str, list[str]]:
    """Re-make the ``grid.json`` of every profile that has one and whose planned run ids
    changed: a new tuning choice (``tune --choose``) changes the ids of the settings it
    tunes, and a stale file would list settings no profile plans. Returns, per re-made
    profile, the *finished* runs that left it (superseded: their files stay, no profile
    reads them; empty when only pending settings changed)."""
    layout = layout or ResultsLayout()
    remade = {}
    for profile in PROFILES:
        grid_file = layout.grid_file(profile)
        if not grid_file.exists():
            continue
        settings = plan(profile)
        old = json.loads(grid_file.read_text())["run_ids"]
        new = [s.run_id for s in settings]
        if old == new:
            continue
        write_grid_file(layout, profile, settings, None)
        planned = set(new)
        remade[profile] = [r for r in old if r not in planned and layout.is_finished(r)]
    return remade


# --------------------------------------------------------------------------- executors


def _run_local(jobs: list[Job], bar: tqdm) -> Iterator[dict]:
    for job in jobs:
        bar.set_postfix_str(job.run_id)
        yield run_setting(job)


def task_key(run_id: str) -> str:
    """The Dask task key of a setting: one task per run id on a scheduler."""
    return f"optical-grid-{run_id}"


def _run_dask(jobs: list[Job], bar: tqdm, client) -> Iterator[dict]:
    """Submit settings so that each worker thread holds at most one (a window of the
    cluster's current thread count, refilled as settings finish): a worker that dies then
    takes only its own setting with it, never a queued one."""
    from distributed import as_completed

    waiting, futures = list(reversed(jobs)), {}
    done = as_completed()

    def refill():
        slots = max(1, sum(client.nthreads().values()))
        while waiting and len(futures) < slots:
            job = waiting.pop()
            future = client.submit(run_setting, job, key=task_key(job.run_id), retries=0)
            futures[future] = job
            done.add(future)

    try:
        refill()
        for future in done:
            job = futures.pop(future)
            try:
                outcome = future.result()
            except Exception as exc:  # KilledWorker (died too often), cancelled, ...
                outcome = {"run_id": job.run_id, "state": "failed", "seconds": None,
                           "error": f"{type(exc).__name__}: {exc}", "host": None, "pid": None,
                           "threads": job.threads, "device": job.device}
            future.release()
            refill()
            bar.set_postfix_str(job.run_id)
            yield outcome
    finally:
        client.cancel(list(futures))


#: Dask settings of the grid's own LocalCluster. A worker's task here is a papermill call that
#: waits for its kernel, so the worker's statistical profiler (every 10 ms) and the event-loop
#: tick (every 20 ms) only take CPU from the settings. Measured on the 2-core AVX2 machine
#: with both cores training (benchmarks/bench_dask.py: a task held 60 s), worker and
#: client+scheduler used 5.8% and 5.1% of a core with Dask's defaults, 1.1% and 1.8% with
#: these (benchmarks/README.md); a grid run on one worker had used 13% of a core beside its
#: kernel for 45 minutes.
LOCAL_CLUSTER_CONFIG = {"distributed.worker.profile.enabled": False,
                        "distributed.admin.tick.interval": "1s"}


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None, threads: int = 1,
                retries: int = 2, timeout: float | None = None,
                config: dict | None = None) -> Iterator:
    """A ``distributed.Client``: to the scheduler at ``scheduler``, or to a new
    ``LocalCluster`` of ``workers`` processes (default: cores // threads) with one setting at a
    time each and ``threads`` OpenMP threads per setting. ``retries`` bounds how often a
    setting is rerun after its worker died (the local scheduler's ``allowed-failures``; an
    external scheduler uses its own configuration). ``config``: the Dask settings of a new
    LocalCluster (default ``LOCAL_CLUSTER_CONFIG``; ``{}`` keeps Dask's own defaults, the
    reference of benchmarks/bench_dask.py)."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        timeout = CONNECT_TIMEOUT_S if timeout is None else timeout
        try:
            client = Client(scheduler, timeout=f"{timeout}s")
        except (OSError, TimeoutError) as exc:
            raise RuntimeError(
                f"Cannot reach the Dask scheduler at {scheduler} ({type(exc).__name__}: {exc}). "
                "Start one (`dask scheduler`, or a dask-jobqueue SLURMCluster: see "
                "book/reproducibility.md), check the address and firewall, or leave "
                "--scheduler out to start a LocalCluster on this machine.") from exc
        with client:
            yield client
        return
    workers = workers or max(1, (os.cpu_count() or 1) // threads)
    config = LOCAL_CLUSTER_CONFIG if config is None else config
    with dask.config.set({**config, "distributed.scheduler.allowed-failures": retries}):
        try:
            import bokeh  # noqa: F401  (the dashboard needs it)
            dashboard = True
        except ImportError:
            dashboard = False
        # The scheduler serves HTTP whether or not it has a dashboard; on a free port, since
        # Dask's fixed 8787 clashes (with a warning) with any other cluster on the machine:
        # a second grid, parallel tests.
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0", scheduler_kwargs={"dashboard": dashboard},
                               env=thread_env(threads))
    with cluster, Client(cluster) as client:
        yield client


# --------------------------------------------------------------------------- the grid


def run_grid(profile: str, results_dir: Path, notebooks_dir: Path, dry_run: bool = False,
             template: Path = TEMPLATE, kernel: str = "python3", progress: bool = True,
             executor: str = "local", scheduler: str | None = None, workers: int | None = None,
             threads: int | None = None, only: Iterable[str] | None = None, retries: int = 2,
             client=None, device: str | None = None,
             layers: Iterable[int] | None = None) -> pd.DataFrame:
    """Run every pending setting of ``profile`` (or those in ``only``, of depths ``layers``)
    with ``executor``;
    return a status table (one row each). ``client``: an existing ``distributed.Client``
    (implies the Dask executor). ``device``: the torch device every setting trains and
    encodes on (e.g. ``cuda``; None: each setting's own, the CPU); not part of run ids."""
    if executor not in EXECUTORS:
        raise ValueError(f"Unknown executor {executor!r} (choose from {', '.join(EXECUTORS)})")
    if executor == "local" and client is None and (scheduler or (workers or 1) > 1):
        raise ValueError("--scheduler and --workers > 1 need --executor dask")
    threads = 1 if threads is None else int(threads)
    check_device(device, present=not dry_run)
    layout = ResultsLayout(Path(results_dir), Path(notebooks_dir))
    settings = plan(profile)
    chosen = select(settings, only, layers)
    status = grid_status(chosen, layout)
    if dry_run:
        return status
    missing = untuned([s for s in chosen if not layout.is_finished(s.run_id)])
    if missing:
        raise ValueError(
            f"{len(missing)} pending setting(s) would train without a settled tuning choice "
            f"(results/tuning-v2/chosen.json has none that is used for them): "
            f"{'; '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}. Run the sweep "
            "(python -m optical_lib.tune --design v2 ...) and tune --choose first, or pick "
            "the tuned settings with --only")
    by_id = {s.run_id: s for s in chosen}
    jobs = [Job(s.run_id, s.params, prepare_notebook(Path(template), s, profile),
                str(layout.root), str(layout.notebooks), profile, threads, kernel,
                template=project_path(Path(template)), device=device)
            for s in chosen if not layout.is_finished(s.run_id)]
    failures = load_failures(layout, profile)
    outcomes = {}
    bar_args = {"total": len(jobs), "desc": f"grid {profile}", "unit": "run",
                "disable": not progress, "smoothing": 0}
    folders = sorted({f for job in jobs for f in data_folders(config_of(job.params))})
    with open_executor(executor, bool(jobs), threads, scheduler, workers, retries, client,
                       progress, folders) as (run, info), tqdm(**bar_args) as bar:
        for outcome in run(jobs, bar):
            record_outcome(layout, profile, failures, outcome, by_id[outcome["run_id"]].params)
            outcomes[outcome["run_id"]] = outcome
            bar.update()
    for i, run_id in enumerate(status["run_id"]):
        if run_id in outcomes:
            o = outcomes[run_id]
            status.loc[i, "state"] = (f"ran in {o['seconds']:.0f}s" if o["state"] == "ran"
                                      else o["state"])
    status["threads"] = threads
    status["device"] = [outcomes.get(r, {}).get("device") for r in status["run_id"]]
    status["host"] = [outcomes.get(r, {}).get("host") for r in status["run_id"]]
    write_summary(layout, profile, settings, {**info, "device": device or "cpu"}
                  if outcomes else None)
    return status


@contextlib.contextmanager
def open_executor(executor: str, work: bool, threads: int, scheduler: str | None = None,
                  workers: int | None = None, retries: int = 2, client=None,
                  progress: bool = True, folders: list[str] | None = None) -> Iterator[tuple]:
    """Yield ``(run, info)``: ``run(jobs, bar)`` yields one outcome of :func:`run_setting`
    per job, wherever the executor runs it; ``info`` records how (for ``grid.json``). When
    there is ``work``, the environment is checked (and the model cache built once, here)
    before any setting starts."""
    if client is None and work:
        prepare_model_cache()  # once, on the client: never built by two settings at once
    if executor == "local" and client is None:
        if work:
            ensure_environment(environment_problems(folders), "this machine")
        yield _run_local, {"executor": "local", "workers": 1, "threads_per_worker": threads}
        return
    with contextlib.ExitStack() as stack:
        if client is None:
            client = stack.enter_context(dask_client(scheduler, workers, threads, retries))
        if work:
            _check_workers(client, progress, folders)
        info = {"executor": "dask", "workers": len(client.scheduler_info().get("workers", {})),
                "threads_per_worker": threads, "scheduler": scheduler}
        yield functools.partial(_run_dask, client=client), info


def _check_workers(client, progress: bool, folders: list[str] | None = None,
                   wait: float = 120.0) -> None:
    """Every connected worker has the data and the model cache (before any setting runs)."""
    try:
        client.wait_for_workers(1, timeout=wait)
    except TimeoutError as exc:
        raise RuntimeError(f"No Dask worker joined the scheduler within {wait:.0f} s "
                           "(are the worker jobs queued? `squeue -u $USER`)") from exc
    problems = [p for found in client.run(environment_problems, folders).values()
                for p in found]
    ensure_environment(sorted(set(problems)), "on the Dask workers")
    if progress:
        info = client.scheduler_info()
        if "dashboard" in info.get("services", {}):
            print(f"Dask dashboard: {client.dashboard_link}", file=sys.stderr)
        print(f"Dask: {len(info.get('workers', {}))} worker(s) at {info.get('address')}",
              file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the study's grid with papermill.")
    parser.add_argument("--profile", default="quick", choices=PROFILES)
    parser.add_argument("--dry-run", action="store_true", help="list the settings and stop")
    parser.add_argument("--only", nargs="+", metavar="RUN_ID",
                        help="run just these settings of the profile")
    parser.add_argument("--layers", nargs="+", type=int, metavar="N",
                        help="run just the settings of these student depths (e.g. 2 3 6 on "
                             "a CPU, 12 on a GPU); BM25 and the MiniLM teacher have none")
    parser.add_argument("--executor", default="local", choices=EXECUTORS,
                        help="where settings run: this process (local) or dask.distributed")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="address of a running Dask scheduler (default: a LocalCluster)")
    parser.add_argument("--workers", type=int, default=None,
                        help="LocalCluster worker processes (default: cores // threads)")
    parser.add_argument("--threads-per-worker", type=int, default=None, dest="threads",
                        help="torch/OpenMP threads per setting (default 1)")
    parser.add_argument("--device", default=None,
                        help="torch device of every setting, e.g. cuda (default: the CPU); "
                             "not part of run ids, recorded in setting.json and grid.json")
    parser.add_argument("--retries", type=int, default=2,
                        help="reruns of a setting whose worker died (LocalCluster)")
    parser.add_argument("--results", type=Path, default=ResultsLayout().root)
    parser.add_argument("--notebooks", type=Path, default=ResultsLayout().notebooks)
    parser.add_argument("--template", type=Path, default=TEMPLATE, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        status = run_grid(args.profile, args.results, args.notebooks, dry_run=args.dry_run,
                          template=args.template, executor=args.executor,
                          scheduler=args.scheduler, workers=args.workers, threads=args.threads,
                          only=args.only, retries=args.retries, device=args.device,
                          layers=args.layers)
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(status.to_string(index=False))
    if args.dry_run:
        layout = ResultsLayout(args.results, args.notebooks)
        pending = [s for s in select(plan(args.profile), args.only, args.layers)
                   if not layout.is_finished(s.run_id)]
        if missing := untuned(pending):
            print(f"warning: {len(missing)} pending setting(s) have no settled tuning choice "
                  "and would be refused: " + "; ".join(missing[:5])
                  + (" ..." if len(missing) > 5 else ""), file=sys.stderr)
    failed = (status["state"] == "failed").sum()
    if failed:
        path = ResultsLayout(args.results, args.notebooks).failures_file(args.profile)
        print(f"{failed} setting(s) failed: see {path}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
