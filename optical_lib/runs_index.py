"""The index of every design-v2 run the book publishes (``book/runs_v2.md``).

One row per executed run notebook ``<runs>/v2-*.ipynb``: a linked title, the grid profiles
that plan the setting (a run no current profile plans is marked *superseded*: its result
files stay, nothing in the study reads them), what distinguishes it (split, depth, teacher,
k, draw, budget, epochs, precision), its macro nDCG@10 on FLORES-200 X→eng under the student
protocol, Δ over its zero-shot baseline under both protocols, and its papermill duration.
Everything is read from the result files; nothing is typed in::

    python -m optical_lib.runs_index        # writes book/runs_v2.md
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .layout import ResultsLayout, atomic_write

#: The profiles of design v2, in the order the index names them.
V2_PROFILES = ("quick", "full", "baselines", "ablation", "curve")
SUPERSEDED = "superseded"
#: The slice the index reports: macro nDCG@10, FLORES-200 X→eng.
TASK, METRIC = "flores-x-eng", "nDCG@10"
COLUMNS = ("setting", "profiles", "split", "L", "teacher", "k", "draw", "pairs", "epochs",
           "precision", "device", "nDCG@10", "Δ student", "Δ OPTICAL", "minutes")

PAGE = """# Every version 2 run

One executed notebook per design-v2 setting that has run, exactly as papermill ran it:
parameters, the realised training sample, the loss curve, per-language results with 95%
confidence intervals, the collapse diagnostics, and where the run came from (commit, date,
threads, data checksums). Run ids are content hashes of the parameters;
`python -m optical_lib.grid --profile PROFILE --only RUN_ID` reruns one.

*profiles* are the grid profiles that plan the setting; a *{superseded}* run is planned by no
current profile (an earlier version of a setting, kept because its files are committed; the
study does not read it). *nDCG@10* is macro nDCG@10 on FLORES-200 X→eng (the split's
languages) with the student encoding both sides (BM25: its own lexical ranking); the two
Δ columns are the gain over the same-depth zero-shot model under the student protocol and
under OPTICAL's (the teacher encodes the English side). *device* is where the run trained
and was evaluated (cuda: a lent GPU); its *minutes* are that device's, the training of
earlier attempts included for a run that resumed from a checkpoint. Written by `make analysis`
(`python -m optical_lib.runs_index`) from the result files; {n_runs} runs,
{hours} hours of papermill wall-clock time with earlier attempts ({device_hours}).

{table}
"""


def planned_by(profiles: Sequence[str] = V2_PROFILES) -> dict[str, list[str]]:
    """Run id → the profiles (of ``profiles``) whose settings include it."""
    from .grid import config_of, profile_settings

    out: dict[str, list[str]] = {}
    for profile in profiles:
        for params in profile_settings(profile):
            names = out.setdefault(config_of(params).run_id, [])
            if profile not in names:
                names.append(profile)
    return out


def _macro(rows: list[dict], task: str, metric: str, protocol: str) -> float | None:
    for r in rows:
        if (r.get("scope") == "macro" and r.get("task") == task and r.get("metric") == metric
                and r.get("protocol") == protocol):
            return r["value"]
    return None


def _row(layout: ResultsLayout, notebook: Path, plans: dict[str, list[str]]) -> dict:
    from .experiment import ME5_SMALL, ExperimentConfig

    run_id = notebook.stem
    setting = json.loads(layout.setting_file(run_id).read_text())
    flat = {k: v for k, v in setting["config"].items() if k != "training"}
    config = ExperimentConfig.from_parameters(**flat)
    rows = json.loads(layout.results_file(run_id).read_text())
    seconds = layout.run_seconds(run_id)  # earlier attempts' training included
    trains, lexical = config.trains, config.method == "bm25"
    return {
        "setting": f"[{config.title}](runs/{run_id}.ipynb)",
        "profiles": ", ".join(plans.get(run_id, [SUPERSEDED])),
        "split": config.split,
        "L": config.layers if config.model == ME5_SMALL and not lexical else None,
        "teacher": None if lexical else config.teacher,
        "k": config.k_langs if trains and config.sample != "pool" else None,
        "draw": config.draw if trains else None,
        "pairs": config.budget if trains else None,
        "epochs": config.training.epochs if trains else None,
        "precision": (config.training.amp or "fp32") if not lexical else None,
        "device": setting["config"].get("device") or "cpu",
        "nDCG@10": _macro(rows, TASK, METRIC, "lexical" if lexical else "student"),
        "Δ student": _macro(rows, TASK, f"delta:{METRIC}", "student"),
        "Δ OPTICAL": _macro(rows, TASK, f"delta:{METRIC}", "teacher"),
        "minutes": None if seconds is None else seconds / 60,
        "_order": min((V2_PROFILES.index(p) for p in plans.get(run_id, [])
                       if p in V2_PROFILES), default=len(V2_PROFILES)),
    }


def runs_index(results_dir: str | Path = "results", runs_dir: str | Path | None = None,
               profiles: Sequence[str] = V2_PROFILES,
               plans: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """One row per executed v2 run notebook (the columns of :data:`COLUMNS`), ordered by
    the first profile that plans it (superseded runs last), then depth and title.
    ``plans`` (run id → profiles) replaces :func:`planned_by` of ``profiles``.

    A notebook whose ``setting.json`` or ``results.json`` is missing is an error: the book
    must not link a run whose results are not committed."""
    layout = ResultsLayout(Path(results_dir), runs_dir)
    plans = planned_by(profiles) if plans is None else plans
    notebooks = sorted(Path(layout.notebooks).glob("v2-*.ipynb"))
    missing = [nb.stem for nb in notebooks if not layout.is_finished(nb.stem)]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} run notebook(s) in {layout.notebooks} have no result files in "
            f"{layout.root}: {', '.join(missing[:8])}")
    rows = [_row(layout, nb, plans) for nb in notebooks]
    table = pd.DataFrame(rows, columns=[*COLUMNS, "_order"])
    table = table.sort_values(["_order", "L", "setting"], na_position="first", kind="stable")
    return table.drop(columns="_order").reset_index(drop=True).astype(
        {c: "Int64" for c in ("L", "k", "draw", "pairs", "epochs")})


def write_page(results_dir: str | Path = "results", book_dir: str | Path = "book",
               runs_dir: str | Path | None = None,
               plans: dict[str, list[str]] | None = None) -> Path:
    """Write ``<book>/runs_v2.md`` from :func:`runs_index`."""
    from .analysis import markdown_table

    table = runs_index(results_dir, runs_dir, plans=plans)
    hours = table["minutes"].sum() / 60
    on = table.groupby("device")["minutes"].sum() / 60
    names = {"cpu": "on the CPU", "cuda": "on a GPU"}
    device_hours = ", ".join(f"{h:.1f} {names.get(d, 'on ' + d)}" for d, h in on.items())
    body = markdown_table(table, formats={"nDCG@10": ".3f", "Δ student": "+.3f",
                                          "Δ OPTICAL": "+.3f", "minutes": ".1f"})
    return atomic_write(Path(book_dir) / "runs_v2.md",
                        PAGE.format(superseded=SUPERSEDED, n_runs=len(table),
                                    hours=f"{hours:.1f}", device_hours=device_hours,
                                    table=body))


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=write_page.__doc__.splitlines()[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--book", default="book")
    parser.add_argument("--runs", default=None, help="the executed run notebooks "
                        "(default: book/runs)")
    args = parser.parse_args(argv)
    print(write_page(args.results, args.book, args.runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
