"""The results page of design v2 (book: "Results, version 2", ``notebooks/study.py``).

:func:`inventory` lists a grid profile's settings, their group (the core, its arms, the
baselines) and what finished; :func:`analyse_slice` runs the estimates of
:mod:`optical_lib.analysis_v2` on one slice of a group (inference only on draws complete in
every cell, a descriptive table otherwise); :func:`analyse_arm`, :func:`retrieval_table` and
:func:`gap_table` fill the other sections; :func:`slice_markdown`, :func:`primary_verdict`
and the ``*_display`` helpers turn them into text; :func:`execute` (``python -m
optical_lib.study_page --profile full``) writes ``book/study.ipynb``. Everything here reads
result files (and the run notebooks' papermill timings) and recomputes no metric.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .analysis_v2 import (
    COVARIATES,
    MIN_DRAWS,
    N_BOOT,
    REFERENCE_K,
    SLICE_COLUMNS,
    VC_FORMULA_LANG_DEPTH,
    CellBootstrap,
    CovariateFn,
    contrast_table,
    fmt,
    headline,
    hierarchical_bootstrap,
    k_effects,
    k_omnibus,
    language_deltas,
    load_deltas,
    mixed_model,
    sample_covariates,
    variance_sd,
    verdict,
    zero_shot_depth_curve,
)
from .calibration import (
    LEVEL_TOLERANCE,
    MIXED,
    MIXED_SENSITIVITY,
    REGIMES,
    level_at,
    min_test_draws,
    worst_levels,
)
from .layout import ResultsLayout
from .protocol import PRIMARY_METRIC

#: The slices of the primary analysis in reading order; the first is the primary one
#: (FLORES X->eng under OPTICAL's protocol), whose verdict the book quotes.
PAGE_SLICES: tuple[tuple[str, str], ...] = (
    ("flores-x-eng", "teacher"), ("flores-x-eng", "student"),
    ("flores-eng-x", "teacher"), ("flores-eng-x", "student"))
PRIMARY_SLICE = PAGE_SLICES[0]
#: The suites of "students that retrieve": passage retrieval, not sentence matching.
RETRIEVAL_TASKS = ("xquad-r-x-eng", "xquad-r-eng-eng")
#: What sets a group of trained settings apart: the profile's largest group is its *core*,
#: the others its *arms* (named by how they differ from the core, :func:`group_label`).
GROUP_KEYS = ("method", "teacher", "budget", "relatives", "sample", "split")
CORE = "core"
BASELINES = "baselines"
#: One row per planned setting of a profile (:func:`inventory`): column -> (dtype, meaning).
INVENTORY_COLUMNS: dict[str, tuple[str, str]] = {
    "run_id": ("string", "the setting's run id"),
    "title": ("string", "its short title"),
    "group": ("string", "core, an arm (e.g. '512 pairs'), or baselines"),
    "method": ("string", "distillation objective, none (zero-shot) or bm25"),
    "model": ("string", "the encoder family"),
    "layers": ("Int64", "student depth L (<NA> for BM25)"),
    "k_langs": ("Int64", "training languages k (<NA> when nothing is trained)"),
    "draw": ("Int64", "language draw (<NA> when nothing is trained)"),
    "teacher": ("string", "the frozen English teacher (<NA> for BM25)"),
    "budget": ("Int64", "training pairs (<NA> when nothing is trained)"),
    "relatives": ("boolean", "False: the 'no relatives' pool (<NA> when nothing is trained)"),
    "sample": ("string", "fixed or pool (<NA> when nothing is trained)"),
    "split": ("string", "eval or dev"),
    "amp": ("string", "autocast precision (<NA>: float32)"),
    "trains": ("bool", "whether the setting distils a student"),
    "retrieval": ("bool", "whether it is evaluated on XQuAD-R"),
    "finished": ("bool", "results.json and the executed notebook exist (grid.grid_status)"),
    "seconds": ("float64", "the run notebook's papermill duration (wall-clock seconds), plus "
                "the training seconds of earlier attempts where the run resumed"),
    "threads": ("Int64", "torch threads recorded in setting.json"),
    "device": ("string", "the device recorded in setting.json"),
    "cpu": ("string", "the CPU recorded in setting.json (experiment.cpu_name; <NA> for runs "
            "before it was recorded)"),
    "torch": ("string", "the torch version recorded in setting.json"),
    "bf16_kernels": ("string", "how a bf16 run's products ran (setting.json): native "
                     "(PyTorch's own bf16 kernel; every bf16 run before this was recorded) or "
                     "emulated (float32 products of bf16 operands, optical_lib.bf16); <NA> "
                     "for float32 runs and BM25"),
    "date": ("string", "when the run finished (setting.json, UTC)"),
}


def _group_key(config) -> tuple:
    return tuple(getattr(config, k) for k in GROUP_KEYS)


def group_label(key: Sequence, core: Sequence) -> str:
    """How a group of trained settings differs from the core: ``"512 pairs"``, ``"no
    relatives"``, ``"MiniLM teacher"`` (joined by commas), or ``"core"``."""
    from .distill import METHOD_LABELS
    from .experiment import TEACHER_LABELS

    this, ref = dict(zip(GROUP_KEYS, key, strict=True)), dict(zip(GROUP_KEYS, core, strict=True))
    if this == ref:
        return CORE
    words = {"budget": lambda v: f"{v:,} pairs",
             "relatives": lambda v: "with relatives" if v else "no relatives",
             "teacher": lambda v: TEACHER_LABELS.get(v, f"teacher {v}"),
             "method": lambda v: METHOD_LABELS.get(v, v),
             "sample": lambda v: f"{v} sample", "split": lambda v: f"{v} split"}
    return ", ".join(words[k](this[k]) for k in GROUP_KEYS if this[k] != ref[k])


def group_description(inv: pd.DataFrame, group: str = CORE) -> str:
    """A group's training setting in words: ``"centred OPTICAL + MSE, me5-small teacher,
    1,984 pairs, with relatives, bf16"`` (from the inventory; "" for an unknown group)."""
    from .distill import METHOD_LABELS
    from .experiment import TEACHER_LABELS

    g = inv[inv["group"] == group]
    if g.empty:
        return ""
    r = g.iloc[0]
    words = [METHOD_LABELS.get(r["method"], r["method"]), TEACHER_LABELS.get(r["teacher"],
                                                                           r["teacher"]),
             f"{int(r['budget']):,} pairs", "with relatives" if r["relatives"] else
             "no relatives"]
    if not pd.isna(r["amp"]):
        words.append(str(r["amp"]))
    return ", ".join(words)


def _run_record(layout: ResultsLayout, run_id: str) -> dict[str, Any]:
    """What a finished run recorded about its execution: papermill's duration of the run
    notebook (plus the training seconds of its earlier attempts), and the threads, device,
    CPU, torch version and date of its ``setting.json``."""
    out: dict[str, Any] = {}
    if layout.notebook(run_id).exists():
        out["seconds"] = layout.run_seconds(run_id)
    setting = json.loads(layout.setting_file(run_id).read_text())
    provenance = setting.get("provenance") or {}
    out["threads"] = provenance.get("threads", setting["config"].get("threads"))
    out["device"] = setting["config"].get("device")
    out["cpu"] = provenance.get("cpu")
    out["torch"] = provenance.get("torch")
    out["date"] = provenance.get("date")
    if setting["config"].get("amp") == "bf16" and setting["config"].get("method") != "bm25":
        # recorded since optical_lib.bf16 exists; every bf16 run before used PyTorch's kernel
        out["bf16_kernels"] = provenance.get("bf16_kernels", "native")
    return out


def inventory(results_dir: str | Path = "results", profile: str = "full",
              runs_dir: str | Path | None = None,
              settings: Sequence[dict] | None = None) -> pd.DataFrame:
    """Every planned setting of a grid profile and how far it got: one row per setting,
    the columns of :data:`INVENTORY_COLUMNS`.

    A setting is finished when its ``results.json`` and its executed notebook exist (as
    :func:`optical_lib.grid.grid_status` decides); ``runs_dir`` is where the notebooks are
    (default ``book/runs`` of the project). ``settings`` replaces the profile's parameter
    sets (:func:`optical_lib.grid.profile_settings`). The trained settings are grouped by
    :data:`GROUP_KEYS`; the largest group (the first in profile order on a tie) is the
    core, the others are arms named by :func:`group_label`, the rest ``baselines``.
    """
    from .grid import config_of, profile_settings

    params = profile_settings(profile) if settings is None else list(settings)
    layout = ResultsLayout(Path(results_dir), runs_dir)
    configs = list({c.run_id: c for c in map(config_of, params)}.values())
    trained_keys = [_group_key(c) for c in configs if c.trains]
    core = (max(dict.fromkeys(trained_keys), key=trained_keys.count) if trained_keys
            else None)
    rows = []
    for c in configs:
        lexical, trains = c.method == "bm25", c.trains
        finished = layout.is_finished(c.run_id)
        rows.append({
            "run_id": c.run_id, "title": c.title,
            "group": group_label(_group_key(c), core) if trains else BASELINES,
            "method": c.method, "model": c.model, "layers": None if lexical else c.layers,
            "k_langs": c.k_langs if trains else None, "draw": c.draw if trains else None,
            "teacher": None if lexical else c.teacher, "budget": c.budget if trains else None,
            "relatives": c.relatives if trains else None,
            "sample": c.sample if trains else None, "split": c.split, "amp": c.training.amp,
            "trains": trains, "retrieval": bool(c.eval_xquad), "finished": finished,
            **(_run_record(layout, c.run_id) if finished else {})})
    df = pd.DataFrame(rows, columns=list(INVENTORY_COLUMNS))
    return df.astype({col: dtype for col, (dtype, _) in INVENTORY_COLUMNS.items()})


def groups(inv: pd.DataFrame) -> list[str]:
    """The inventory's groups in reading order: the core, the arms (profile order), the
    baselines."""
    found = list(dict.fromkeys(inv["group"]))
    arms = [g for g in found if g not in (CORE, BASELINES)]
    return [g for g in (CORE, *arms, BASELINES) if g in found]


def arms(inv: pd.DataFrame) -> list[str]:
    """The arms of the inventory, in profile order."""
    return [g for g in groups(inv) if g not in (CORE, BASELINES)]


def complete_draws(inv: pd.DataFrame, group: str = CORE,
                   depths: Sequence[int] | None = None) -> list[int]:
    """The draws of a group that finished in every (depth, k) cell the group plans (of the
    ``depths`` given; None: all): the draws an analysis can use without unbalancing the
    cells."""
    g = inv[inv["group"] == group]
    if depths is not None:
        g = g[g["layers"].isin(list(depths))]
    cells = set(zip(g["layers"], g["k_langs"], strict=True))
    out = []
    for d, part in g.groupby("draw", sort=True):
        done = part[part["finished"]]
        if cells and set(zip(done["layers"], done["k_langs"], strict=True)) == cells:
            out.append(int(d))
    return out


def _depths(group_rows: pd.DataFrame) -> tuple[int, ...]:
    """The student depths a group's rows plan, in order."""
    return tuple(sorted(int(d) for d in group_rows["layers"].dropna().unique()))


def depths_ahead(inv: pd.DataFrame, group: str = CORE) -> dict[int, int]:
    """Per depth whose own k cells are complete in more draws than every cell of the group
    is, that number of draws (the depths running ahead of the others)."""
    everywhere = len(complete_draws(inv, group))
    return {L: n for L in _depths(inv[inv["group"] == group])
            if (n := len(complete_draws(inv, group, [L]))) > everywhere}


def analysed_cells(inv: pd.DataFrame, group: str = CORE, min_draws: int = MIN_DRAWS
                   ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The depths and draws a group's analysis uses, ``(depths, draws)``: the draws
    complete in every cell of those depths, so the cells stay balanced.

    All planned depths when at least ``min_draws`` draws are complete in every cell (the
    rule of the finished grid). Otherwise, for an interim analysis (the grid runs depths on
    different machines: the deep students on GPUs, the others on CPUs, so one depth can be
    far ahead of another), the subset of depths whose common complete draws are at least
    ``min_draws`` and that uses the most runs (depths x k x draws; on a tie, more depths,
    then the shallower ones). ``draws`` is empty when no depth has ``min_draws`` complete
    draws. Fixed before the grid ran beyond one draw; it only chooses what is shown before
    the grid is complete, never the finished grid's analysis."""
    g = inv[inv["group"] == group]
    planned = _depths(g)
    everywhere = complete_draws(inv, group)
    if len(everywhere) >= min_draws or not planned:
        return planned, tuple(everywhere)
    n_k = {int(L): int(part["k_langs"].nunique()) for L, part in g.groupby("layers")}
    best, best_key = ((), ()), None
    for r in range(1, len(planned) + 1):
        for depths in itertools.combinations(planned, r):
            draws = complete_draws(inv, group, depths)
            if len(draws) < min_draws:
                continue
            key = (sum(n_k[L] for L in depths) * len(draws), len(depths),
                   tuple(-L for L in depths))
            if best_key is None or key > best_key:
                best, best_key = (depths, tuple(draws)), key
    return best


def page_state(inv: pd.DataFrame) -> str:
    """``"empty"`` (no trained setting finished), ``"complete"`` (every core setting
    finished: the verdict may be printed) or ``"interim"``."""
    if not (inv["trains"] & inv["finished"]).any():
        return "empty"
    core = inv[inv["group"] == CORE]
    return "complete" if len(core) and bool(core["finished"].all()) else "interim"


def _on_gpu(part: pd.DataFrame) -> pd.Series:
    """Which of the runs ran on a GPU (their recorded device is ``cuda``/``cuda:N``; a run
    that records none ran on the CPU)."""
    return part["device"].fillna("cpu").astype(str).str.startswith("cuda")


def gpu_busy_seconds(part: pd.DataFrame) -> float:
    """Seconds in which at least one of the runs that ran on a GPU was running: each run
    spans ``seconds`` up to its ``date`` (written as it finished), and runs that shared the
    GPU, so overlap in time, count once. NaN when no GPU run has both. Assumes one GPU at a
    time, as the study was lent: runs on two GPUs at once would count once too."""
    gpu = part[_on_gpu(part)].dropna(subset=["seconds", "date"])
    if gpu.empty:
        return float("nan")
    ends = pd.to_datetime(gpu["date"], utc=True)
    starts = ends - pd.to_timedelta(gpu["seconds"].astype(float), unit="s")
    spans = sorted(zip(starts, ends, strict=True))
    busy, (lo, hi) = 0.0, spans[0]
    for a, b in spans[1:]:
        if a > hi:  # a gap: close the current stretch of busy time
            busy += (hi - lo).total_seconds()
            lo, hi = a, b
        else:
            hi = max(hi, b)
    return busy + (hi - lo).total_seconds()


def device_note(runs: pd.DataFrame) -> str:
    """A note when the depths of ``runs`` were computed on different kinds of device (the
    grid gives a GPU whole depths): a contrast between depths then carries the device's
    rounding too. Empty when every depth ran on one kind, the same for all."""
    where = pd.Series(np.where(_on_gpu(runs), "a GPU", "the CPU"), index=runs.index)
    per_depth = where.groupby(runs["layers"]).agg(lambda s: " and ".join(sorted(set(s))))
    if per_depth.nunique() <= 1:
        return ""
    each = "; ".join(f"L{int(L)} on {d}" for L, d in per_depth.items())
    return (f"The depths ran on different devices ({each}): a difference between depths also "
            "carries the device's rounding, whose size the protocol page measures (*The same "
            "setting computed twice*); a contrast of k within a depth does not.")


def _hours(part: pd.DataFrame) -> tuple[float, float, float]:
    """Wall-clock hours of the runs, CPU-hours of those that ran on a CPU (duration times
    threads) and GPU-hours of those that ran on a GPU (the hours in which at least one of
    them ran, :func:`gpu_busy_seconds`: settings that shared the GPU count once)."""
    seconds = part["seconds"].astype(float)
    cpu = (seconds * part["threads"].astype(float))[~_on_gpu(part)].sum(min_count=1)
    return seconds.sum(min_count=1) / 3600, cpu / 3600, gpu_busy_seconds(part) / 3600


def status_table(inv: pd.DataFrame) -> pd.DataFrame:
    """Per group (core, arms, baselines) and in total: settings planned, finished and
    pending, the draws complete in every cell, and the wall-clock, CPU and GPU hours of
    the finished ones (papermill's duration of each run notebook; on a CPU times its
    threads)."""
    rows = []
    for group in [*groups(inv), "total"]:
        g = inv if group == "total" else inv[inv["group"] == group]
        done = g[g["finished"]]
        wall, cpu, gpu = _hours(done)
        draws = ""
        if group not in (BASELINES, "total"):
            draws = f"{len(complete_draws(inv, group))} of {g['draw'].nunique()}"
            if ahead := depths_ahead(inv, group):
                draws += f" ({', '.join(f'L{L} {n}' for L, n in ahead.items())})"
        rows.append({"group": group, "settings": len(g), "finished": len(done),
                     "pending": len(g) - len(done), "draws complete": draws,
                     "wall-hours": wall, "CPU-hours": cpu, "GPU-hours": gpu})
    return pd.DataFrame(rows)


def _hours_text(hours: float) -> str:
    if pd.isna(hours):
        return "0"
    return f"{hours:,.1f}" if hours >= 10 else f"{hours:.2f}"


def _values(series: pd.Series) -> str:
    found = [str(v) for v in dict.fromkeys(series.dropna())]
    return ", ".join(found) if found else "not recorded"


def to_go(inv: pd.DataFrame) -> pd.DataFrame:
    """The pending trained settings per (depth, budget) and what they would cost:
    ``layers``, ``budget``, ``pending``; on a CPU ``timed`` (finished CPU runs of that depth
    and budget, any group), ``cpu_minutes`` (their median duration times threads),
    ``cpu_low`` and ``cpu_high`` (the fastest and slowest of them: CPUs differ, e.g. in native
    or emulated bf16 kernels) and ``cpu_hours`` (pending x that median); on a GPU
    ``gpu_timed`` (finished GPU runs of that depth and budget with a recorded span: duration
    and date), ``gpu_minutes`` (the GPU's busy time over them, :func:`gpu_busy_seconds`, per
    setting: the pace of settings that shared it) and ``gpu_hours`` (pending x that). An
    extrapolation from measured runs only: NaN where no run of that depth and budget finished
    on that kind of device."""
    trained = inv[inv["trains"]]
    columns = ["layers", "budget", "pending", "timed", "cpu_minutes", "cpu_low", "cpu_high",
               "cpu_hours", "gpu_timed", "gpu_minutes", "gpu_hours"]
    pending = trained[~trained["finished"]]
    if pending.empty:
        return pd.DataFrame(columns=columns)
    done = trained[trained["finished"]]
    on_cpu = done[~_on_gpu(done)]
    minutes = (on_cpu["seconds"].astype(float) * on_cpu["threads"].astype(float) / 60)
    measured = minutes.groupby([on_cpu["layers"], on_cpu["budget"]]).agg(
        ["median", "size", "min", "max"])
    on_gpu = done[_on_gpu(done)].dropna(subset=["seconds", "date"])  # what a span times
    rows = []
    for (layers, budget), part in pending.groupby(["layers", "budget"]):
        median, timed, low, high = (measured.loc[(layers, budget)]
                                    if (layers, budget) in measured.index
                                    else (np.nan, 0, np.nan, np.nan))
        gpu = on_gpu[(on_gpu["layers"] == layers) & (on_gpu["budget"] == budget)]
        gpu_minutes = gpu_busy_seconds(gpu) / 60 / len(gpu) if len(gpu) else np.nan
        rows.append({"layers": int(layers), "budget": int(budget), "pending": len(part),
                     "timed": int(timed), "cpu_minutes": median, "cpu_low": low,
                     "cpu_high": high, "cpu_hours": len(part) * median / 60, "gpu_timed": len(gpu),
                     "gpu_minutes": gpu_minutes, "gpu_hours": len(part) * gpu_minutes / 60})
    return pd.DataFrame(rows, columns=columns)


def _range_text(low: float, high: float, fmt: str) -> str:
    """", range 14–50" for :func:`_priced`; empty where the two print alike."""
    low_text, high_text = f"{low:{fmt}}", f"{high:{fmt}}"
    return f", range {low_text}–{high_text}" if low_text != high_text else ""


def _priced(rows: pd.DataFrame, minutes: str, fmt: str, timed_by: str | None = None,
            spread: tuple[str, str] | None = None) -> str:
    """"L2 at 1,984 pairs: 65 × 16 min; ..." for :func:`to_go_sentence` (with ``timed_by``,
    each also says from how many finished settings; with ``spread``, the columns of the
    fastest and slowest finished one, said where they differ)."""
    return "; ".join(f"L{r.layers} at {r.budget:,} pairs: {r.pending} × "
                     f"{getattr(r, minutes):{fmt}} min"
                     + (_range_text(*(getattr(r, c) for c in spread), fmt) if spread else "")
                     + (f", from {getattr(r, timed_by)} finished" if timed_by else "")
                     for r in rows.itertuples())


def to_go_sentence(inv: pd.DataFrame) -> str:
    """:func:`to_go` in words, for the status paragraph."""
    table = to_go(inv)
    if table.empty:
        return "No trained setting is pending."
    timed = table[table["timed"] > 0]
    on_gpu = table[(table["timed"] == 0) & (table["gpu_timed"] > 0)]
    untimed = table[(table["timed"] == 0) & (table["gpu_timed"] == 0)]
    parts = []
    if len(timed):
        parts.append(f"At the median CPU time of the finished settings of the same depth and "
                     f"budget, {int(timed['pending'].sum())} of the "
                     f"{int(table['pending'].sum())} pending trained settings need about "
                     f"{_hours_text(timed['cpu_hours'].sum())} CPU-hours "
                     f"({_priced(timed, 'cpu_minutes', '.0f', spread=('cpu_low', 'cpu_high'))})"
                     + ("; a range is that of the finished settings (fastest to "
                        "slowest), which ran on CPUs of different speed"
                        if any(_range_text(r.cpu_low, r.cpu_high, ".0f")
                               for r in timed.itertuples())
                        else "") + ".")
    if len(on_gpu):
        parts.append(f"On a GPU, at its busy time per finished setting of the same depth and "
                     f"budget (settings shared it), {int(on_gpu['pending'].sum())} pending "
                     f"trained settings need about {_hours_text(on_gpu['gpu_hours'].sum())} "
                     f"GPU-hours ({_priced(on_gpu, 'gpu_minutes', '.1f', 'gpu_timed')}).")
    if len(untimed):
        which = ", ".join(f"L{r.layers} at {r.budget:,} pairs ({r.pending})"
                          for r in untimed.itertuples())
        n = int(untimed["pending"].sum())
        parts.append(f"The other {n} have no finished setting of their depth and budget "
                     f"to time them by yet: {which}." if parts else
                     f"None of the {n} pending trained settings has a finished setting of "
                     f"its depth and budget to time it by yet: {which}.")
    return " ".join(parts)


#: How :func:`kernels_phrase` names the ``bf16_kernels`` of the inventory.
KERNEL_WORDS = {"native": "PyTorch's bf16 kernels",
                "emulated": "float32 products of bf16 operands (optical_lib.bf16)"}


def kernels_phrase(done: pd.DataFrame) -> str:
    """``"; bf16 products by PyTorch's bf16 kernels in 40 runs, float32 products of bf16
    operands (optical_lib.bf16) in 9"`` for the finished runs ``done`` (empty when none
    ran in bf16)."""
    if "bf16_kernels" not in done:
        return ""
    counts = done["bf16_kernels"].dropna().value_counts()
    if counts.empty:
        return ""
    parts = [f"{KERNEL_WORDS.get(k, k)} in {n} run{'s' * (n != 1)}" for k, n in counts.items()]
    return "; bf16 products by " + ", ".join(parts)


def status_facts(inv: pd.DataFrame, profile: str) -> dict[str, str]:
    """The page's status as strings to glue: counts, state, hours, threads, machine."""
    done = inv[inv["finished"]]
    core = inv[inv["group"] == CORE]
    state = page_state(inv)
    wall, cpu, gpu = _hours(done)
    per_group = "; ".join(f"{g}: {int(inv[inv['group'] == g]['finished'].sum())} of "
                          f"{int((inv['group'] == g).sum())}" for g in groups(inv))
    timed = int(done["seconds"].notna().sum())
    stage = {"empty": "No trained setting of this profile has finished yet.",
             "interim": (f"Interim: {int(core['finished'].sum())} of {len(core)} core "
                         f"settings have finished."),
             "complete": f"All {len(core)} core settings have finished."}[state]
    dates = done["date"].dropna().sort_values()
    return {
        "study_profile": profile,
        "study_state": state,
        "study_stage": stage,
        "study_status": (f"{len(done)} of {len(inv)} settings of the {profile} profile have "
                         f"finished ({per_group})"),
        "study_finished": str(len(done)),
        "study_planned": str(len(inv)),
        "core_finished": str(int(core["finished"].sum())),
        "core_planned": str(len(core)),
        "core_description": group_description(inv, CORE) or "no trained setting",
        "core_draws_planned": str(core["draw"].nunique()),
        "study_wall_hours": _hours_text(wall),
        "study_cpu_hours": _hours_text(cpu),
        "study_gpu_hours": _hours_text(gpu),
        "study_timed": f"{timed} of {len(done)}",
        "study_threads": _values(done["threads"]),
        "study_machine": (f"device {_values(done['device'])}, torch {_values(done['torch'])}"
                          + kernels_phrase(done) if len(done) else "no finished run"),
        "study_dates": (f"{dates.iloc[0][:10]} to {dates.iloc[-1][:10]}" if len(dates)
                        else "no finished run"),
        "study_to_go": to_go_sentence(inv),
    }


def profile_rows(results_dir: str | Path, inv: pd.DataFrame) -> pd.DataFrame:
    """The result rows (``results.json``) of the inventory's finished settings, with the
    inventory's ``group``; an empty frame when none finished."""
    from .evaluate import read_results

    layout = ResultsLayout(root=Path(results_dir))
    done = inv[inv["finished"]]
    frames = [read_results(layout.results_file(r)) for r in done["run_id"]]
    if not frames:
        return pd.DataFrame()
    rows = pd.concat(frames, ignore_index=True)
    return rows.merge(done[["run_id", "group"]], on="run_id", how="left")


# --------------------------------------------------------------------------- one slice


_CELL_COLUMNS = ["layers", "k_langs", "n_draws", "n_runs", "delta", "delta_se",
                 "delta_ci_low", "delta_ci_high", "value", "value_se", "value_ci_low",
                 "value_ci_high"]
_RUN_COLUMNS = ["run_id", "layers", "k_langs", "draw", "delta", "value"]


@dataclass(frozen=True)
class SliceResult:
    """The analysis of one slice (task x protocol) of one group (:func:`analyse_slice`).

    ``cells``: per (depth, k) cell the number of draws and runs, mean Δ and mean absolute
    metric (mean over runs of the mean over languages of the mean over queries) with
    bootstrap SE and 95% CI (NaN without inference); ``runs``: per run the mean over
    languages; ``lang``: :func:`language_deltas` (with covariates where available);
    ``boot``, ``omnibus``, ``effects``, ``contrasts``: the estimators' output, None where
    they could not run (``notes`` say why; ``reason``: why there are no contrasts);
    ``variance``: the mixed model's fitted SD per variance component (component, sd).
    ``draws``, ``depths``: the complete draws and the depths the inference used
    (:func:`analysed_cells`); ``complete``: every planned setting of the group finished.
    """

    task: str
    protocol: str
    group: str
    metric: str
    planned: int
    finished: int
    planned_draws: int
    complete: bool
    used: tuple[str, ...] = ()
    draws: tuple[int, ...] = ()
    depths: tuple[int, ...] = ()
    cells: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=_CELL_COLUMNS))
    runs: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=_RUN_COLUMNS))
    lang: pd.DataFrame = field(default_factory=pd.DataFrame)
    boot: CellBootstrap | None = None
    omnibus: pd.DataFrame | None = None
    effects: pd.DataFrame | None = None
    contrasts: pd.DataFrame | None = None
    variance: pd.DataFrame | None = None
    notes: tuple[str, ...] = ()
    reason: str = ""

    @property
    def empty(self) -> bool:
        return self.cells.empty

    @property
    def inference(self) -> bool:
        return self.boot is not None

    @property
    def interim(self) -> bool:
        return not self.complete


def _language_table(deltas: pd.DataFrame, covariates: CovariateFn | None,
                    notes: list[str]) -> pd.DataFrame:
    if covariates is not None:
        try:
            return language_deltas(deltas, covariates)
        except FileNotFoundError as exc:
            notes.append(f"The covariates could not be rebuilt ({exc}); the mixed model runs "
                         "without them.")
    return language_deltas(deltas, None)


def _warnings(fit) -> str:
    """A mixed-model fit's warnings in one line: the first line of each, joined."""
    return "; ".join(w.splitlines()[0][:200].rstrip(".") for w in fit.warnings)


def _fit_model(lang: pd.DataFrame, notes: list[str]
               ) -> tuple[pd.DataFrame | None, pd.DataFrame | None, pd.DataFrame | None]:
    """(omnibus, effects, variance) of the mixed model, None where they could not be had;
    ``variance``: the fitted standard deviation of each variance component."""
    try:
        fit = mixed_model(lang, covariates=[c for c in COVARIATES if c in lang.columns])
    except ValueError as exc:
        notes.append(f"Mixed model not fitted: {exc}.")
        return None, None, None
    if fit.warnings:
        notes.append(f"The mixed model's fit warned: {_warnings(fit)}.")
    variance = variance_sd(fit)
    if lang["k_langs"].nunique() < 2:
        return None, None, variance
    try:
        omnibus, effects = k_omnibus(fit), k_effects(fit)
    except ValueError as exc:
        notes.append(f"No k test: {exc}.")
        return None, None, variance
    if lang["layers"].nunique() > 1:
        omnibus = pd.concat([omnibus, _sensitivity(lang, variance, notes)], ignore_index=True)
    return omnibus, effects, variance


#: How the omnibus table marks the tests of the sensitivity model.
SENSITIVITY = " (+ language × depth; sensitivity)"


def _sensitivity(lang: pd.DataFrame, variance: pd.DataFrame, notes: list[str]
                 ) -> pd.DataFrame | None:
    """k tests of the sensitivity model (:data:`VC_FORMULA_LANG_DEPTH`, not pre-registered),
    named with :data:`SENSITIVITY`, and a note with its language x depth and residual SD
    beside the pre-registered model's residual SD (``variance``); None if it cannot be fit."""
    try:
        fit = mixed_model(lang, covariates=[c for c in COVARIATES if c in lang.columns],
                          vc_formula=VC_FORMULA_LANG_DEPTH)
        tests = k_omnibus(fit)
    except ValueError as exc:
        notes.append(f"Sensitivity model not fitted: {exc}.")
        return None
    sd = variance_sd(fit).set_index("component")["sd"]
    before = variance.set_index("component")["sd"].get("residual", np.nan)
    warned = f" Its fit warned: {_warnings(fit)}." if fit.warnings else ""
    notes.append("Sensitivity, not pre-registered (added on 2026-11-29, when L12 joined the "
                 "interim analysis): the same model with a language × depth intercept "
                 f"(SD {fmt(sd['lang_depth'], signed=False)}; the residual SD "
                 f"{fmt(before, signed=False)} becomes "
                 f"{fmt(sd['residual'], signed=False)}); its tests of k are the rows "
                 f"marked 'sensitivity'.{warned}")
    tests["test"] = tests["test"] + SENSITIVITY
    return tests


#: The mixed model's variance components as the calibration's regimes name them
#: (:data:`optical_lib.calibration.REGIMES`), in words.
_COMPONENTS = {"draw": ("sd_draw", "between draws"),
               "lang_k": ("sd_lang_k", "language × k"),
               "residual": ("residual", "a run's language mean (residual)")}


def regime_ranges(regimes: dict[str, dict[str, float]] | None = None,
                  n_queries: int | None = None, mixed: pd.DataFrame | None = None
                  ) -> dict[str, tuple[float, float]]:
    """The smallest and largest SD the calibration's regimes plant for each component the
    mixed model estimates: between draws, language x k, and the residual SD of a run's
    language mean (run x language, and the query noise averaged over the calibration
    grid's :data:`~optical_lib.calibration.CAL_QUERIES` queries). ``mixed``: the mixed
    model's calibration table; where it records the residual SD the pre-registered model
    fitted on the simulated grids (``residual_sd``), the residual's range is that: what a
    regime puts there includes the terms the model lacks (the 'depths' regime's language
    x depth intercept)."""
    from .calibration import CAL_QUERIES

    regimes = REGIMES if regimes is None else regimes
    n_queries = CAL_QUERIES if n_queries is None else n_queries
    values: dict[str, list[float]] = {"sd_draw": [], "sd_lang_k": [], "residual": []}
    for r in regimes.values():
        values["sd_draw"].append(r["sd_draw"])
        values["sd_lang_k"].append(r["sd_lang_k"])
        values["residual"].append(float(np.hypot(r.get("sd_run_lang", 0.0),
                                                 r["sd_query"] / np.sqrt(n_queries))))
    fitted = _fitted_residuals(mixed)
    if fitted:
        values["residual"] = fitted
    return {key: (min(v), max(v)) for key, v in values.items()}


def _fitted_residuals(mixed: pd.DataFrame | None) -> list[float]:
    """The residual SDs the pre-registered model fitted on the simulated grids, as the mixed
    model's calibration table records them (none in a table without them)."""
    if mixed is None or "residual_sd" not in mixed:
        return []
    return mixed.loc[mixed["method"] == MIXED, "residual_sd"].dropna().tolist()


def variance_sentence(results: Sequence[SliceResult],
                      ranges: dict[str, tuple[float, float]] | None = None,
                      mixed: pd.DataFrame | None = None) -> str:
    """The mixed model's fitted SDs on each slice with a fit, against the range the
    calibration's regimes simulate (:func:`regime_ranges`, with the mixed model's
    calibration table ``mixed``), and whether any exceeds it."""
    from .report import PROTOCOL_LABELS, SUITE_LABELS

    fitted = (" (the residual as the pre-registered model fits it on the simulated grids)"
              if ranges is None and _fitted_residuals(mixed) else "")
    ranges = regime_ranges(mixed=mixed) if ranges is None else ranges
    said, beyond = [], []
    for result in results:
        if result.variance is None:
            continue
        sd = dict(zip(result.variance["component"], result.variance["sd"], strict=True))
        name = (f"{SUITE_LABELS.get(result.task, result.task)}, "
                f"{PROTOCOL_LABELS.get(result.protocol, result.protocol)}")
        parts = []
        for comp, (key, words) in _COMPONENTS.items():
            if comp in sd:
                parts.append(f"{words} {fmt(sd[comp], signed=False)}")
                if sd[comp] > ranges[key][1]:
                    beyond.append(f"{words} on {name}")
        said.append(f"{name}: " + ", ".join(parts))
    if not said:
        return ("No mixed model has been fitted on real runs yet, so the regimes cannot be "
                "compared with the grid's own variance.")
    span = ", ".join(f"{words} {fmt(ranges[key][0], signed=False)}–"
                     f"{fmt(ranges[key][1], signed=False)}"
                     for key, words in _COMPONENTS.values())
    verdict = ("Every fitted SD lies within or below the range the regimes simulate."
               if not beyond else
               "Larger than every simulated regime: " + "; ".join(beyond) + ", so the "
               "simulated levels may understate how often the tests reject a true zero "
               "there.")
    return (f"The grid's own variance, fitted by the mixed model on the runs analysed below "
            f"(SD per component): {'; '.join(said)}. The regimes simulate {span}{fitted}. "
            + verdict)


def _depth_words(depths: Sequence[int]) -> str:
    return ", ".join(f"L{d}" for d in depths)


def _no_inference_note(draws: Sequence[int], planned_draws: int,
                       per_depth: dict[int, int] | None = None) -> str:
    """Why a slice has no inference; ``per_depth``: complete draws of each depth that is
    ahead of the draws complete everywhere."""
    if planned_draws < MIN_DRAWS:
        return (f"One draw: no inference (the bootstrap and the mixed model need at least "
                f"{MIN_DRAWS} draws per cell); the table shows the cell means.")
    ahead = "; ".join(f"L{L}: {n}" for L, n in sorted((per_depth or {}).items()))
    return (f"{len(draws)} of {planned_draws} draws are complete in every cell"
            + (f" ({ahead} in all of its own k cells)" if ahead else "")
            + f": no inference before {MIN_DRAWS} (in every cell, or in every cell of some "
            "depths); the table shows the means over the draws finished in each cell.")


def tests_withheld_note(levels: pd.DataFrame | None, draws: int,
                        planned: int | None = None) -> str:
    """Why a slice with ``draws`` complete draws (of ``planned``) shows no tests, or ""
    when the committed calibration (``levels``, :mod:`optical_lib.calibration`) allows them
    (or is None)."""
    if levels is None or levels.empty:
        return ""
    need = min_test_draws(levels)
    if need is not None and draws >= need:
        return ""
    if need is None:
        when = "no simulated number of draws holds the level"
    elif planned is not None and planned < need:
        when = (f"the tests need {need} draws and this group plans {planned}: its intervals "
                "stay descriptive")
    else:
        when = f"tests appear from {need} complete draws on"
    level = level_at(levels, draws)
    if level is None:
        return f"Tests withheld with {draws} complete draws (fewer than simulated); {when}."
    return (f"Tests withheld with {draws} complete draws: in simulation (results/calibration) "
            f"the page's test (t interval) of a k contrast that is zero rejects {level:.1%} "
            f"of the time at the 5% level with {draws} draws (the worst of "
            f"{levels['regime'].nunique()} variance regimes; this page accepts at most "
            f"{LEVEL_TOLERANCE:.1%}), and the 95% intervals below cover a zero contrast only "
            f"{1 - level:.0%} of the time; {when}.")


#: How the page names the tests of the calibration table (:data:`calibration.METHODS`).
TEST_LABELS = {"percentile": "percentile (pre-registered)", "t": "t (used)"}


def calibration_display(levels: pd.DataFrame) -> pd.DataFrame:
    """The calibration table for reading: per simulated number of draws, the level of each
    test of a zero k contrast (nominal 5%) in each variance regime, the test used last."""
    table = levels.pivot_table(index="draws", columns=["method", "regime"], values="level")
    order = [m for m in TEST_LABELS if m in table.columns.get_level_values(0)]
    table = table[order]
    out = table.map(lambda x: f"{x:.1%}")
    out.columns = [f"{TEST_LABELS[m]}, '{r}'" for m, r in table.columns]
    n = levels.groupby("draws")["n_contrasts"].min()
    out["zero contrasts per cell"] = n.astype(int).astype(str)
    return out.rename_axis("draws").reset_index()


def mixed_model_sentence(mixed: pd.DataFrame) -> str:
    """The mixed models' calibration in a sentence: the k test's worst level over the
    regimes at each simulated number of draws, of the pre-registered model and (where the
    table has it) of the sensitivity model."""
    def levels(method: str) -> str:
        worst = worst_levels(mixed, method)
        return ", ".join(f"{level:.1%} with {draws} draws" for draws, level in worst.items())

    said = (f"The mixed model's F test of k, simulated the same way on "
            f"{int(mixed['n_sims'].min())} grids per cell (results/calibration/"
            f"mixed_model_level.csv), rejects {levels(MIXED)} (the worst regime)")
    if "method" in mixed and (mixed["method"] == MIXED_SENSITIVITY).any():
        said += (f"; the sensitivity model's (+ language × depth) "
                 f"{levels(MIXED_SENSITIVITY)}")
    return said + "."


def calibration_facts(levels: pd.DataFrame, planned_draws: int) -> dict[str, str]:
    """Glue values of the calibration: the fewest draws with tests, and the worst level of
    the test used (``cal_level_*``) and of the pre-registered one (``cal_pct_level_*``) at
    two draws and at the planned number of draws."""
    need = min_test_draws(levels)

    def at(draws: int, method: str) -> str:
        level = level_at(levels, draws, method)
        return "(not simulated)" if level is None else f"{level:.1%}"

    pct = level_at(levels, planned_draws, "percentile")
    answer = ("Not as pre-registered." if pct is not None and pct > LEVEL_TOLERANCE else
              "The pre-registered test does with the planned draws, but not with few.")
    return {"cal_answer": answer, "cal_min_draws": "none" if need is None else str(need),
            "cal_level_two": at(2, "t"), "cal_level_planned": at(planned_draws, "t"),
            "cal_pct_level_two": at(2, "percentile"),
            "cal_pct_level_planned": at(planned_draws, "percentile"),
            "cal_planned_draws": str(planned_draws),
            "cal_tolerance": f"{LEVEL_TOLERANCE:.1%}",
            "cal_sims": str(int(levels["n_sims"].min())),
            "cal_n_regimes": str(levels["regime"].nunique()),
            "cal_regimes": regimes_text([r for r in REGIMES if r in set(levels["regime"])])}


def regimes_text(names: Sequence[str]) -> str:
    """The calibration's regimes in words, from :data:`optical_lib.calibration.REGIMES`:
    the planted SD of each component of a Δ."""
    def one(name: str) -> str:
        r = REGIMES[name]
        run, depth = r.get("sd_run_lang", 0.0), r.get("sd_lang_depth", 0.0)
        return (f"'{name}': SD between draws {fmt(r['sd_draw'], signed=False)}, language × k "
                f"{fmt(r['sd_lang_k'], signed=False)}"
                + (f", run × language {fmt(run, signed=False)}" if run else "")
                + (f", language × depth {fmt(depth, signed=False)}" if depth else ""))
    return "; ".join(one(n) for n in names)


def analyse_slice(results_dir: str | Path, inv: pd.DataFrame, task: str, protocol: str,
                  group: str = CORE, metric: str = PRIMARY_METRIC, n_boot: int = N_BOOT,
                  seed: int = 0, covariates: CovariateFn | None = sample_covariates,
                  model: bool = True, levels: pd.DataFrame | None = None) -> SliceResult:
    """Analyse one slice (``task``, ``protocol``) of one group of an :func:`inventory`.

    With at least :data:`MIN_DRAWS` draws complete in every cell (:func:`complete_draws`)
    the runs of those draws get the :func:`hierarchical_bootstrap` (cell means and CIs),
    :func:`contrast_table` and, with ``model``, the :func:`mixed_model` with
    :func:`k_omnibus` and :func:`k_effects`; finished runs of other draws wait (a note
    counts them). Otherwise every finished run enters a descriptive table of cell means
    without CIs. ``levels``: the committed calibration of the bootstrap test
    (:func:`optical_lib.calibration.read_levels`); with fewer complete draws than it
    allows (:func:`optical_lib.calibration.min_test_draws`) the tests (contrasts and mixed
    model) are withheld and the intervals carry a note on their coverage. Reads the
    per-query files of the runs it uses, nothing else.
    """
    g = inv[inv["group"] == group]
    done = g[g["finished"]]
    base = {"task": task, "protocol": protocol, "group": group, "metric": metric,
            "planned": len(g), "finished": len(done),
            "planned_draws": int(g["draw"].nunique()),
            "complete": bool(len(g)) and len(done) == len(g)}
    if done.empty:
        what = "the core grid" if group == CORE else f"the {group} arm"
        note = f"No setting of {what} has finished yet."
        return SliceResult(**base, notes=(note,), reason=note)
    depths, draws = analysed_cells(inv, group)
    inference = len(draws) >= MIN_DRAWS
    used = (done[done["draw"].isin(draws) & done["layers"].isin(depths)] if inference
            else done)
    notes: list[str] = []
    if inference and tuple(depths) != _depths(g):
        notes.append(f"Interim inference on {_depth_words(depths)} only: the depths whose "
                     f"cells are complete for at least {MIN_DRAWS} common draws (the most "
                     "runs); the other depths wait.")
    if inference and (said := device_note(used)):
        notes.append(said)
    try:
        deltas = load_deltas(results_dir, used["run_id"].tolist(), metric, tasks=[task],
                             protocols=[protocol])
    except ValueError as exc:
        note = f"No {metric} rows of {task} under the {protocol} protocol: {exc}."
        return SliceResult(**base, notes=(note,), reason=note)
    if inference and len(used) < len(done):
        notes.append(f"{len(done) - len(used)} finished run(s) outside those cells and "
                     "draws wait for their draw or depth to complete.")
    reason = ""
    if not inference:
        reason = _no_inference_note(complete_draws(inv, group), base["planned_draws"],
                                    depths_ahead(inv, group))
        notes.append(reason)
    lang = _language_table(deltas, covariates, notes)
    runs = (lang.groupby(["run_id", "layers", "k_langs", "draw"], sort=True)
            [["delta", "value"]].mean().reset_index())
    boot = omnibus = effects = contrasts = variance = None
    if inference:
        boot = hierarchical_bootstrap(deltas, n_boot=n_boot, seed=seed, metric=metric)
        cells = boot.summary()
        withheld = tests_withheld_note(levels, len(draws), base["planned_draws"])
        if withheld:
            reason = withheld
            notes.append(withheld)
        else:
            try:
                contrasts = contrast_table(boot)
            except ValueError as exc:
                reason = f"No contrasts: {exc}."
                notes.append(reason)
            if model:
                omnibus, effects, variance = _fit_model(lang, notes)
    else:
        cells = (runs.groupby(["layers", "k_langs"], sort=True)
                 .agg(n_draws=("draw", "nunique"), n_runs=("run_id", "size"),
                      delta=("delta", "mean"), value=("value", "mean")).reset_index())
        for col in _CELL_COLUMNS:
            if col not in cells:
                cells[col] = np.nan
    return SliceResult(**base, used=tuple(used["run_id"]),
                       draws=tuple(draws) if inference else (),
                       depths=tuple(depths) if inference else (),
                       cells=cells[_CELL_COLUMNS], runs=runs, lang=lang, boot=boot,
                       omnibus=omnibus, effects=effects, contrasts=contrasts,
                       variance=variance, notes=tuple(notes), reason=reason)


def depth_means(result: SliceResult) -> pd.DataFrame:
    """Per depth: mean Δ over the slice's k (equal weight per k) with the bootstrap's 95%
    CI (NaN without inference). Columns: layers, delta, ci_low, ci_high."""
    rows = []
    for L, part in result.cells.groupby("layers", sort=True):
        row = {"layers": int(L), "delta": part["delta"].mean(), "ci_low": np.nan,
               "ci_high": np.nan}
        if result.boot is not None:  # the cells are the bootstrap's columns, in order
            columns = np.flatnonzero(result.cells["layers"].to_numpy() == L)
            t = result.boot.t_stats(lambda b, c=columns: b.delta[:, c].mean(axis=1))
            row["ci_low"], row["ci_high"] = float(t["ci_low"]), float(t["ci_high"])
        rows.append(row)
    return pd.DataFrame(rows, columns=["layers", "delta", "ci_low", "ci_high"])


def stack_cells(results: Sequence[SliceResult]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The cells and the runs of several slices (e.g. one task under both protocols) in
    two frames with a ``protocol`` column, for :func:`optical_lib.plots.delta_by_k`."""
    cells = [r.cells.assign(protocol=r.protocol) for r in results if not r.empty]
    runs = [r.runs.assign(protocol=r.protocol) for r in results if not r.empty]
    if not cells:
        return (pd.DataFrame(columns=[*_CELL_COLUMNS, "protocol"]),
                pd.DataFrame(columns=[*_RUN_COLUMNS, "protocol"]))
    return pd.concat(cells, ignore_index=True), pd.concat(runs, ignore_index=True)


def stack_depths(results: Sequence[SliceResult]) -> pd.DataFrame:
    """:func:`depth_means` of several slices, with a ``protocol`` column."""
    frames = [depth_means(r).assign(protocol=r.protocol) for r in results if not r.empty]
    return (pd.concat(frames, ignore_index=True) if frames else
            pd.DataFrame(columns=["layers", "delta", "ci_low", "ci_high", "protocol"]))


def stack_languages(results: Sequence[SliceResult]) -> pd.DataFrame:
    """The per-(run, language) tables of several slices in one frame."""
    frames = [r.lang for r in results if not r.lang.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def zero_shot_rows(rows: pd.DataFrame, inv: pd.DataFrame, task: str,
                   metric: str = PRIMARY_METRIC) -> pd.DataFrame:
    """:func:`zero_shot_depth_curve` of one task, for the core's teacher under OPTICAL's
    protocol; an empty frame where no zero-shot run finished."""
    core = inv[inv["group"] == CORE]
    teacher = core["teacher"].iloc[0] if len(core) else "me5-small"
    try:
        curve = zero_shot_depth_curve(rows, metric)
    except ValueError:
        return pd.DataFrame(columns=["task", "protocol", "teacher", "layers", "value",
                                     "ci_low", "ci_high"])
    curve = curve[curve["task"] == task]
    return curve[(curve["protocol"] == "student") | (curve["teacher"] == teacher)
                 ].reset_index(drop=True)


def slug(text: str) -> str:
    """A glue-name part: ``"512 pairs"`` -> ``"512-pairs"``, ``"MiniLM teacher"`` ->
    ``"minilm-teacher"``."""
    return "-".join("".join(ch if ch.isalnum() else " " for ch in text.lower()).split())


# --------------------------------------------------------------------------- formatting


def fmt_ci(estimate: float, low: float = np.nan, high: float = np.nan) -> str:
    """``+.031 [+.012, +.050]``: an estimate with its 95% CI, signed, three decimals; the
    estimate alone where the CI is missing, ``""`` where the estimate is."""
    if pd.isna(estimate):
        return ""
    if pd.isna(low) or pd.isna(high):
        return fmt(estimate)
    return f"{fmt(estimate)} [{fmt(low)}, {fmt(high)}]"


def fmt_p(p: float) -> str:
    """``< .001``, ``.012`` (``""`` for NaN)."""
    if pd.isna(p):
        return ""
    return "< .001" if p < 0.001 else fmt(p, signed=False)


def _depth_by_k(cells: pd.DataFrame, what: str, low: str, high: str) -> pd.DataFrame:
    """Depth (rows ``L2`` ...) x k (columns ``k = 1`` ...) of :func:`fmt_ci` strings."""
    text = cells.assign(text=[fmt_ci(r[what], r[low], r[high]) for _, r in cells.iterrows()])
    table = text.pivot(index="layers", columns="k_langs", values="text").fillna("")
    table.index = [f"L{int(L)}" for L in table.index]
    table.columns = [f"k = {int(k)}" for k in table.columns]
    return table


def cell_table(result: SliceResult, what: str = "delta") -> pd.DataFrame:
    """Depth (rows ``L2`` ...) x k (columns ``k = 1`` ...) of :func:`fmt_ci` strings of the
    cell means of ``what`` (``delta`` or ``value``); empty cells where nothing finished."""
    if result.cells.empty:
        return pd.DataFrame()
    return _depth_by_k(result.cells, what, f"{what}_ci_low", f"{what}_ci_high")


def omnibus_display(omnibus: pd.DataFrame) -> pd.DataFrame:
    """:func:`k_omnibus` for reading: test, F(df, df_denom), its p, and the Wald chi2's."""
    return pd.DataFrame({
        "test": omnibus["test"],
        "F": [f"F({int(r['df'])}, {int(r['df_denom'])}) = {r['F']:.2f}"
              for _, r in omnibus.iterrows()],
        "p": omnibus["p"].map(fmt_p),
        "Wald chi2": [f"{r['chi2']:.1f} (df {int(r['df'])}, p {fmt_p(r['p_chi2'])})"
                      for _, r in omnibus.iterrows()]})


def effects_display(effects: pd.DataFrame) -> pd.DataFrame:
    """:func:`k_effects` for reading: k, estimate [95% CI], p."""
    return pd.DataFrame({
        "k": effects["k_langs"].astype(int),
        f"vs k = {REFERENCE_K} [95% CI]": [fmt_ci(r["estimate"], r["ci_low"], r["ci_high"])
                                           for _, r in effects.iterrows()],
        "p": effects["p"].map(fmt_p)})


def contrast_display(contrasts: pd.DataFrame) -> pd.DataFrame:
    """:func:`contrast_table` for reading: contrast, family, estimate [95% CI], bootstrap
    p, Holm p, rejected at α, MDE (empty p for the descriptive contrasts)."""
    label = [(f"{r['subject']} vs {r['reference']}" if r["reference"] else r["subject"])
             + (f", {r['where']}" if r["where"] else "") for _, r in contrasts.iterrows()]
    return pd.DataFrame({
        "contrast": label,
        "family": contrasts["family"].replace("", "descriptive"),
        "estimate [95% CI]": [fmt_ci(r["estimate"], r["ci_low"], r["ci_high"])
                              for _, r in contrasts.iterrows()],
        "p": contrasts["p"].map(fmt_p), "Holm p": contrasts["p_holm"].map(fmt_p),
        "rejected": [("yes" if r["reject"] else "no") if r["family"] else ""
                     for _, r in contrasts.iterrows()],
        "MDE": contrasts["mde"].map(lambda x: fmt(x, signed=False))})


def _md(df: pd.DataFrame, index: bool = False) -> str:
    from .analysis import markdown_table

    return markdown_table(df, index=index)


def _slice_head(result: SliceResult) -> str:
    """What a non-empty slice's cell table shows, *interim* while its group is incomplete."""
    head = (f"**Interim estimates** ({result.finished} of {result.planned} settings "
            "finished). " if result.interim else "")
    draws = (f"{_depth_words(result.depths)}, draws {', '.join(map(str, result.draws))}"
             if result.inference else "every finished draw")
    ci = "with 95% hierarchical-bootstrap CIs" if result.inference else "(no CIs)"
    return (f"{head}{len(result.runs)} runs ({draws}). Cell means of Δ {result.metric} {ci}; "
            "rows: student depth, columns: training languages k.")


def slice_markdown(result: SliceResult) -> str:
    """One slice as Markdown: what was analysed, the cell table (Δ [95% CI]), the mixed
    model's k tests and effects, the contrasts; every estimate labelled *interim* while
    the group's grid is not complete."""
    if result.empty:
        return " ".join(result.notes)
    parts = [_slice_head(result), _md(cell_table(result), index=True)]
    if result.omnibus is not None:
        parts += ["Mixed model (Δ per run and language; draw, language and language x k "
                  "random intercepts): tests of k.", _md(omnibus_display(result.omnibus))]
    if result.effects is not None:
        parts += ["Its marginal k effects (mean over depths, at fixed covariates):",
                  _md(effects_display(result.effects))]
    if result.contrasts is not None:
        parts += ["Pre-registered contrasts (t intervals from the hierarchical bootstrap; "
                  "Holm within each family; MDE at 80% power):",
                  _md(contrast_display(result.contrasts))]
    if result.notes:
        parts.append(" ".join(result.notes))
    return "\n\n".join(parts)


def primary_verdict(result: SliceResult, headline_only: bool = False) -> str:
    """The verdict of a slice as text: :func:`verdict`'s sentences (only its
    :func:`headline` with ``headline_only``) when every setting of its group finished and
    the contrasts exist; otherwise one sentence saying why not (while the group runs: that
    it waits for the full grid, whatever the interim estimates show)."""
    if result.interim and not result.empty:
        return (f"The verdict waits for the full grid: {result.finished} of "
                f"{result.planned} {result.group} settings have finished, and every estimate "
                "on the results page is interim.")
    if result.contrasts is None:
        return f"No verdict. {result.reason.rstrip('.') or 'No contrasts'}."
    if headline_only:
        return headline(result.contrasts)
    return " ".join(verdict(result.contrasts))


def interim_sentence(result: SliceResult) -> str:
    """While the group runs and a slice has inference: its cell means at the smallest and
    the largest k per analysed depth, with their 95% intervals, labelled interim and not a
    verdict (for the intro, next to :func:`primary_verdict`). Empty otherwise."""
    from .report import PROTOCOL_LABELS, SUITE_LABELS

    if not result.interim or not result.inference or result.cells.empty:
        return ""
    parts = []
    for L, part in result.cells.sort_values(["layers", "k_langs"]).groupby("layers"):
        ends = [part.iloc[0], part.iloc[-1]] if len(part) > 1 else [part.iloc[0]]
        parts.append(f"L{int(L)} " + " and ".join(
            f"{fmt_ci(r['delta'], r['delta_ci_low'], r['delta_ci_high'])} at k = "
            f"{int(r['k_langs'])}" for r in ends))
    draws = ", ".join(str(d) for d in result.draws)
    paired = ""
    if result.contrasts is not None:
        marginal = result.contrasts[result.contrasts["name"] == "k_vs_ref"]
        if len(marginal):
            top = marginal.loc[marginal["k_langs"].astype(int).idxmax()]
            paired = (f"; paired over draws, languages and queries, {top['subject']} − "
                      f"{top['reference']} is "
                      f"{fmt_ci(top['estimate'], top['ci_low'], top['ci_high'])}")
    return (f"Interim, not a verdict ({_depth_words(result.depths)}, draws {draws}): "
            f"Δ {result.metric} on {SUITE_LABELS.get(result.task, result.task)} under "
            f"{PROTOCOL_LABELS.get(result.protocol, result.protocol)} is "
            + "; ".join(parts) + paired
            + " (95% intervals; every cell and test on the results page).")


# --------------------------------------------------------------------------- arms


#: The core's cells of a joint bootstrap (:func:`arm_difference`) keep their depth; the
#: arm's are offset by this, so the two never share a cell.
_ARM_OFFSET = 1000


def arm_difference(results_dir: str | Path, inv: pd.DataFrame, arm: str, task: str,
                   protocol: str, metric: str = PRIMARY_METRIC, n_boot: int = N_BOOT,
                   seed: int = 0) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """The arm's absolute metric minus the core's at matched cells: the same depth, k and
    draw, finished in both. Where every matched cell has at least :data:`MIN_DRAWS` such
    draws (the same draws in every cell), arm and core runs are resampled together by
    :func:`hierarchical_bootstrap` (draws, languages and queries shared: draw d of the arm
    and of the core go in or out together) and the difference gets a 95% CI; otherwise it
    is the plain difference of the means.

    Where arm and core share the zero-shot baseline (same depth and protocol, and the
    same teacher under OPTICAL's protocol) this is also the difference in Δ.

    Returns (table, notes); the table has one row per matched cell (layers, k_langs,
    n_draws, arm, core, difference, ci_low, ci_high) and a last row with ``layers`` <NA>:
    the mean over matched cells.
    """
    a = inv[(inv["group"] == arm)]
    c = inv[(inv["group"] == CORE)]
    keys = ["layers", "k_langs", "draw"]
    cells = a[["layers", "k_langs"]].drop_duplicates().merge(
        c[["layers", "k_langs"]].drop_duplicates())
    both = a[a["finished"]][[*keys, "run_id"]].merge(c[c["finished"]][[*keys, "run_id"]],
                                                     on=keys, suffixes=("_arm", "_core"))
    both = both.merge(cells)
    if both.empty:
        return pd.DataFrame(), (f"No matched cell (depth, k, draw) has finished in both the "
                                f"{arm} arm and the core yet.",)
    complete = [int(d) for d, part in both.groupby("draw")
                if len(part[["layers", "k_langs"]].drop_duplicates()) == len(cells)]
    joint = len(complete) >= MIN_DRAWS
    if joint:
        both = both[both["draw"].isin(complete)]
    ids = [*both["run_id_arm"], *both["run_id_core"]]
    deltas = load_deltas(results_dir, ids, metric, tasks=[task], protocols=[protocol])
    is_arm = deltas["run_id"].isin(set(both["run_id_arm"]))
    deltas = deltas.drop(columns=[col for col in SLICE_COLUMNS
                                  if col not in ("task", "protocol")])
    deltas["layers"] = deltas["layers"] + _ARM_OFFSET * is_arm.astype(int)
    notes: list[str] = []
    if joint:
        boot = hierarchical_bootstrap(deltas, n_boot=n_boot, seed=seed, metric=metric)
        values, order = boot.value, boot.cells
    else:  # the same estimator without resampling: runs <- languages <- queries
        per_lang = deltas.groupby(["run_id", "layers", "k_langs", "query_lang"])["value"].mean()
        means = (per_lang.groupby(level=["run_id", "layers", "k_langs"]).mean()
                 .groupby(level=["layers", "k_langs"]).mean())
        order = means.index.to_frame(index=False)
        values = means.to_numpy()[None, :]
        notes.append(f"Fewer than {MIN_DRAWS} matched draws complete in every matched cell: "
                     "differences of means, no CIs.")
    column = {(int(r["layers"]), int(r["k_langs"])): i for i, r in order.iterrows()}
    matched = [(int(L), int(k), part["draw"].nunique())
               for (L, k), part in both.groupby(["layers", "k_langs"], sort=True)]

    def differences(v: np.ndarray) -> np.ndarray:
        """(B + 1, cells) absolute metric -> (B + 1, matched + 1) arm minus core per
        matched cell, and their mean."""
        d = np.stack([v[:, column[(L + _ARM_OFFSET, k)]] - v[:, column[(L, k)]]
                      for L, k, _ in matched], axis=1)
        return np.hstack([d, d.mean(axis=1, keepdims=True)])

    estimate = differences(values)[0]
    nan = np.full(len(estimate), np.nan)
    t = (boot.t_stats(lambda b: differences(b.value)) if joint
         else {"ci_low": nan, "ci_high": nan})
    rows = [{"layers": L, "k_langs": k, "n_draws": n,
             "arm": values[0, column[(L + _ARM_OFFSET, k)]], "core": values[0, column[(L, k)]]}
            for L, k, n in matched]
    rows.append({"layers": pd.NA, "k_langs": pd.NA, "n_draws": both["draw"].nunique(),
                 "arm": np.mean([r["arm"] for r in rows]),
                 "core": np.mean([r["core"] for r in rows])})
    for i, row in enumerate(rows):
        row.update(difference=estimate[i], ci_low=float(t["ci_low"][i]),
                   ci_high=float(t["ci_high"][i]))
    table = pd.DataFrame(rows).astype({"layers": "Int64", "k_langs": "Int64"})
    return table, tuple(notes)


@dataclass(frozen=True)
class ArmResult:
    """One arm on one slice: its own :class:`SliceResult` and its difference from the core
    at matched cells (:func:`arm_difference`)."""

    arm: str
    result: SliceResult
    difference: pd.DataFrame
    notes: tuple[str, ...] = ()

    @property
    def mean_difference(self) -> str:
        """The mean difference over matched cells as ``+.012 [-.004, +.030]`` ("" if none)."""
        if self.difference.empty:
            return ""
        r = self.difference.iloc[-1]
        return fmt_ci(r["difference"], r["ci_low"], r["ci_high"])


def analyse_arm(results_dir: str | Path, inv: pd.DataFrame, arm: str,
                task: str = PRIMARY_SLICE[0], protocol: str = PRIMARY_SLICE[1],
                metric: str = PRIMARY_METRIC, n_boot: int = N_BOOT, seed: int = 0,
                levels: pd.DataFrame | None = None) -> ArmResult:
    """An arm's Δ by depth x k (:func:`analyse_slice`, without the mixed model) and its
    difference from the core (:func:`arm_difference`); ``levels`` as for
    :func:`analyse_slice`."""
    result = analyse_slice(results_dir, inv, task, protocol, group=arm, metric=metric,
                           n_boot=n_boot, seed=seed, covariates=None, model=False,
                           levels=levels)
    difference, notes = arm_difference(results_dir, inv, arm, task, protocol, metric,
                                       n_boot, seed)
    return ArmResult(arm, result, difference, notes)


def arm_markdown(arm: ArmResult) -> str:
    """An arm as Markdown: its cell table of Δ and the table of its difference from the
    core (arm minus core, absolute metric) at matched cells."""
    from .report import PROTOCOL_LABELS, SUITE_LABELS

    r = arm.result
    where = f"{SUITE_LABELS.get(r.task, r.task)}, {PROTOCOL_LABELS.get(r.protocol, r.protocol)}"
    if r.empty:
        parts = [f"**{arm.arm}** ({where}). " + " ".join(r.notes)]
    else:
        parts = [f"**{arm.arm}** ({where}). " + _slice_head(r),
                 _md(cell_table(r), index=True), *([" ".join(r.notes)] if r.notes else [])]
    if arm.difference.empty:
        parts.append(" ".join(arm.notes))
        return "\n\n".join(parts)
    d = arm.difference
    table = _depth_by_k(d[d["layers"].notna()], "difference", "ci_low", "ci_high")
    parts += [f"Arm minus core, {r.metric} of the students at matched cells (same depth, k "
              f"and draw; {int(d.iloc[-1]['n_draws'])} draw(s)); mean over the matched "
              f"cells: {arm.mean_difference}.", _md(table, index=True)]
    if arm.notes:
        parts.append(" ".join(arm.notes))
    return "\n\n".join(parts)


# --------------------------------------------------------------------------- retrieval


def retrieval_table(rows: pd.DataFrame, inv: pd.DataFrame, metric: str = PRIMARY_METRIC,
                    group: str = CORE, tasks: Sequence[str] = RETRIEVAL_TASKS
                    ) -> pd.DataFrame:
    """Do the students still retrieve? Per suite of ``tasks``, protocol and depth, from the
    macro rows of ``results.json``: the zero-shot model, the group's distilled students
    (mean over k of the mean over the draws evaluated on the suite), the best k cell (the
    largest of those per-k means, with its k: a description of the grid, not a choice)
    and BM25. Columns: suite, protocol, L, zero-shot, students, runs, best k cell, best
    k, BM25."""
    columns = ["suite", "protocol", "L", "zero-shot", "students", "runs", "best k cell",
               "best k", "BM25"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    from .report import SUITE_LABELS

    macro = rows[(rows["scope"] == "macro") & (rows["metric"] == metric)
                 & rows["task"].isin(tasks)]
    core = inv[inv["group"] == group]
    teacher = core["teacher"].iloc[0] if len(core) else None
    students = macro[macro["run_id"].isin(set(core["run_id"]))]
    zero = macro[(macro["method"] == "none") & (macro["model"] == "me5-small")]
    bm25 = macro[macro["method"] == "bm25"].groupby("task")["value"].first()
    out = []
    dense = macro[macro["protocol"] != "lexical"][["task", "protocol"]].drop_duplicates()
    order = {t: i for i, t in enumerate(tasks)}
    for task, protocol in sorted(dense.itertuples(index=False),
                                 key=lambda tp: (order[tp[0]], tp[1] != "student")):
        z = zero[(zero["task"] == task) & (zero["protocol"] == protocol)]
        if protocol != "student":
            z = z[z["teacher"] == teacher]
        s = students[(students["task"] == task) & (students["protocol"] == protocol)]
        depths = sorted({int(x) for x in [*z["layers"].dropna(), *s["layers"].dropna()]})
        for L in depths:
            zs = z[z["layers"] == L]["value"]
            per_k = s[s["layers"] == L].groupby("k_langs")["value"].mean()
            out.append({"suite": SUITE_LABELS.get(task, task), "protocol": protocol, "L": L,
                        "zero-shot": zs.iloc[0] if len(zs) else np.nan,
                        "students": per_k.mean() if len(per_k) else np.nan,
                        "runs": int((s["layers"] == L).sum()),
                        "best k cell": per_k.max() if len(per_k) else np.nan,
                        "best k": int(per_k.idxmax()) if len(per_k) else pd.NA,
                        "BM25": bm25.get(task, np.nan)})
    table = pd.DataFrame(out, columns=columns)
    return table.astype({"best k": "Int64"})


def retrieval_sentences(table: pd.DataFrame) -> str:
    """What :func:`retrieval_table` says, per suite and protocol: at which depths the
    distilled students (mean over k) are above their zero-shot model and BM25, and at which
    they are below (a depth without the reference's score is left out)."""
    from .report import PROTOCOL_LABELS

    def names(part: pd.DataFrame) -> str:
        return ", ".join(f"L{L}" for L in part["L"])

    def against(part: pd.DataFrame, column: str, label: str) -> str:
        part = part[part[column].notna()]
        sides = {side: part[mask] for side, mask in (
            ("above", part["students"] > part[column]),
            ("below", part["students"] < part[column]),
            ("level with", part["students"] == part[column])) if mask.any()}
        if len(sides) == 1:
            side, found = next(iter(sides.items()))
            where = (f"{names(found)} (the one depth scored so far)" if len(found) == 1
                     else f"every depth scored ({names(found)})")
            return f"{side} {label} at {where}"
        said = [f"{side} {label if i == 0 else 'it'} at {names(found)}"
                for i, (side, found) in enumerate(sides.items())]
        return ", ".join(said[:-1]) + " and " + said[-1]

    out = []
    for (suite, protocol), part in table.groupby(["suite", "protocol"], sort=False):
        part = part[part["students"].notna()]
        said = [against(part, column, label)
                for column, label in (("zero-shot", "their zero-shot model"), ("BM25", "BM25"))
                if part[column].notna().any()]
        if not said:
            continue
        out.append(f"{suite}, {PROTOCOL_LABELS.get(protocol, protocol)}: the students are "
                   f"{'; '.join(said)}.")
    return " ".join(out) if out else "No distilled student has been scored on XQuAD-R yet."


def gap_table(rows: pd.DataFrame, inv: pd.DataFrame, metric: str = PRIMARY_METRIC,
              group: str = CORE,
              tasks: Sequence[str] = (PRIMARY_SLICE[0], *RETRIEVAL_TASKS)) -> pd.DataFrame:
    """The share of the teacher's gap the group's students close
    (:func:`optical_lib.report.gap_share`), mean over runs per suite, protocol and depth:
    rows (suite, protocol), columns ``L2`` ..., cells ``42% (n = 20)``; empty where no
    student or no teacher row finished."""
    from .report import SUITE_LABELS, gap_share

    if rows.empty:
        return pd.DataFrame()
    share = gap_share(rows[rows["task"].isin(tasks)], metric)
    core = inv[(inv["group"] == group) & inv["finished"]][["run_id", "layers"]]
    if share.empty:
        return pd.DataFrame()
    share = share.merge(core, on="run_id")
    if share.empty:
        return pd.DataFrame()
    stats_ = (share.groupby(["task", "protocol", "layers"])["share"]
              .agg(["mean", "count"]).reset_index())
    stats_["text"] = [f"{m:.0%} (n = {n})" if n else ""
                      for m, n in zip(stats_["mean"], stats_["count"], strict=True)]
    table = stats_.pivot(index=["task", "protocol"], columns="layers", values="text")
    table = table.fillna("")
    table.columns = [f"L{int(L)}" for L in table.columns]
    order = {t: i for i, t in enumerate(tasks)}
    table = table.reset_index().sort_values(
        ["task", "protocol"], key=lambda s: s.map(order) if s.name == "task" else s)
    table["task"] = table["task"].map(lambda t: SUITE_LABELS.get(t, t))
    return table.rename(columns={"task": "suite"}).reset_index(drop=True)


def baselines_markdown(rows: pd.DataFrame, metric: str = PRIMARY_METRIC) -> str:
    """The profile's finished baselines (zero-shot depths, the teacher, BM25) per suite
    under the student protocol and, for the zero-shot students, OPTICAL's protocol with
    each teacher (:func:`optical_lib.report.baselines_table`)."""
    from .report import TEACHER_NAMES, baselines_table

    if rows.empty:
        return "No baseline of this profile has finished yet."
    base = rows[rows["method"].isin(["none", "bm25"])]
    if base.empty:
        return "No baseline of this profile has finished yet."
    parts = [f"Student protocol and BM25 (macro {metric}):",
             _md(baselines_table(base, "student", metric=metric), index=True)]
    for name, label in TEACHER_NAMES.items():
        part = base[(base["protocol"] == "teacher") & (base["teacher"] == name)]
        if len(part):
            parts += [f"OPTICAL's protocol, teacher {label}:",
                      _md(baselines_table(part, "teacher", name, metric, lexical=False),
                          index=True)]
    return "\n\n".join(parts)


# --------------------------------------------------------------------------- execution


def execute(profile: str = "full", results_dir: str | Path = "results",
            book_dir: str | Path = "book", runs_dir: str | Path = "book/runs",
            n_boot: int = N_BOOT, template: str | Path | None = None) -> Path:
    """Execute the results page on one profile's results into ``<book>/study.ipynb``.

    Papermill runs ``notebooks/study.ipynb`` in the project root (relative paths resolve
    there) with ``results_dir``, ``profile``, ``runs_dir`` and ``n_boot``; the injected
    parameters cell is hidden (``remove-cell``) and the page is written atomically."""
    import nbformat
    import papermill

    from .grid import project_path, record_paths
    from .layout import atomic_write
    from .paths import PROJECT_ROOT

    template = PROJECT_ROOT / "notebooks" / "study.ipynb" if template is None else template
    executed = papermill.execute_notebook(
        str(template), None, progress_bar=False, cwd=str(PROJECT_ROOT),
        parameters={"results_dir": str(results_dir), "profile": profile,
                    "runs_dir": str(runs_dir), "n_boot": int(n_boot)})
    for cell in executed.cells:
        tags = cell.metadata.setdefault("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
    output = atomic_write(Path(book_dir) / "study.ipynb", nbformat.writes(executed))
    # the published page records project-relative paths, as the grid's run notebooks do
    record_paths(output, project_path(Path(template)), project_path(output))
    return output


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=execute.__doc__.splitlines()[0])
    parser.add_argument("--profile", default="full")
    parser.add_argument("--results", default="results")
    parser.add_argument("--book", default="book", help="the book's folder (page written)")
    parser.add_argument("--runs", default="book/runs", help="the executed run notebooks")
    parser.add_argument("--n-boot", type=int, default=N_BOOT, dest="n_boot")
    args = parser.parse_args(argv)
    print(execute(args.profile, args.results, args.book, args.runs, args.n_boot))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
