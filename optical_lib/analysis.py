"""Analysis of a finished grid: tables, significance against the baseline, the scaling
regression and the answer to the research question. Reads result files only; never
recomputes a metric (those come from :mod:`optical_lib.evaluate`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .distill import METHOD_LABELS
from .evaluate import PER_QUERY_COLUMNS, aggregate_seeds, compare_systems, read_results
from .layout import ResultsLayout, atomic_write
from .paths import PROJECT_ROOT


@dataclass
class Study:
    """The result table of one grid profile and where its per-query files live."""

    layout: ResultsLayout
    profile: str
    summary: pd.DataFrame

    @property
    def macro(self) -> pd.DataFrame:
        return self.summary[self.summary["scope"] == "macro"]

    def per_query(self, run_id: str) -> pd.DataFrame:
        return read_results(self.layout.per_query_file(run_id), columns=PER_QUERY_COLUMNS)


def load_study(results_dir: str | Path = "results", profile: str = "medium") -> Study:
    """Read the summary and ``grid.json`` of ``profile`` written by the grid
    (:mod:`optical_lib.grid`) under ``results_dir``."""
    layout = ResultsLayout(root=Path(results_dir))
    summary_path = layout.summary(profile)
    if not summary_path.exists():
        raise FileNotFoundError(f"No {summary_path}: run the grid first "
                                f"(make grid PROFILE={profile}, or "
                                f"python -m optical_lib.grid --profile {profile})")
    grid = json.loads(layout.grid_file(profile).read_text())
    summary = pd.read_parquet(summary_path)
    summary = summary[summary["run_id"].isin(grid["run_ids"])].reset_index(drop=True)
    return Study(layout, grid["profile"], summary)


def settings_table(study: Study, metric: str = "RR@10") -> pd.DataFrame:
    """Macro metric per suite for every setting: mean over seeds, its spread (std, min,
    max) and t-interval across seeds (NaN with one seed; see
    :func:`optical_lib.evaluate.seed_summary`)."""
    df = study.macro[study.macro["metric"] == metric]
    table = aggregate_seeds(df)
    table["k_langs"] = table["k_langs"].fillna(0).astype(int)
    keys = ["task", "method", "layers", "nonemb_params", "k_langs"]
    columns = ["mean", "std", "min", "max", "ci_low", "ci_high", "n_seeds"]
    return table[keys + columns].sort_values(keys).reset_index(drop=True)


def class_table(study: Study, metric: str = "RR@10", task: str = "tatoeba") -> pd.DataFrame:
    """Macro metric within each resource class of the evaluation languages, per setting
    (mean over seeds); columns are the classes (``unknown`` where none could be sourced)."""
    df = study.summary[(study.summary["scope"] == "class") & (study.summary["metric"] == metric)
                       & (study.summary["task"] == task)].copy()
    df["k_langs"] = df["k_langs"].fillna(0).astype(int)
    return df.pivot_table(index=["method", "layers", "k_langs"], columns="resource_class",
                          values="value", aggfunc="mean").round(3)


def versus_baseline(study: Study, metric: str = "RR@10", task: str = "tatoeba",
                    n_perm: int = 10000) -> pd.DataFrame:
    """Paired per-language tests of each distilled run against the same-depth zero-shot
    baseline, on the same queries, Holm-corrected across languages within a run."""
    results = study.summary[(study.summary["scope"] == "language")
                            & (study.summary["task"] == task)]
    runs = results.drop_duplicates("run_id")
    base_ids = runs[runs["method"] == "none"].set_index("layers")["run_id"].to_dict()

    def by_lang(run_id: str) -> dict[str, dict[str, float]]:
        pq = study.per_query(run_id)
        pq = pq[(pq["metric"] == metric) & (pq["task"] == task)]
        return {lang: dict(zip(g["qid"], g["value"], strict=True))
                for lang, g in pq.groupby("query_lang")}

    rows = []
    for run in runs[runs["method"] != "none"].itertuples():
        if run.layers not in base_ids:
            continue
        table = compare_systems(by_lang(run.run_id), by_lang(base_ids[run.layers]),
                                n_perm=n_perm, seed=int(run.seed))
        table.insert(0, "run_id", run.run_id)
        for col in ("method", "layers", "k_langs", "seed"):
            table.insert(1, col, getattr(run, col))
        rows.append(table)
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def win_loss(tests: pd.DataFrame) -> pd.DataFrame:
    """Count significant gains and losses (Holm, randomisation test) per setting, over its
    languages and seeds (``tests`` = languages x seeds)."""
    if tests.empty:
        return tests
    t = tests.assign(win=tests["reject"] & (tests["diff"] > 0),
                     loss=tests["reject"] & (tests["diff"] < 0))
    return (t.groupby(["method", "layers", "k_langs"])
            .agg(languages=("lang", "nunique"), seeds=("seed", "nunique"),
                 tests=("lang", "size"), mean_gain=("diff", "mean"),
                 significant_gains=("win", "sum"), significant_losses=("loss", "sum"))
            .reset_index())


def scaling_regression(study: Study, metric: str = "RR@10", task: str = "tatoeba",
                       method: str = "optical",
                       interaction: bool = False) -> pd.DataFrame | None:
    """OLS of the macro metric on log2(non-embedding params) and log2(k).

    Each distilled run (every seed) is one observation. Coefficients are the change of the
    metric per doubling of model size and per doubling of the number of languages at a
    fixed budget. Returns ``term, coef, ci_low, ci_high, p, n`` (95% CIs), or ``None`` when
    the profile has fewer than 4 such runs or a single size or k (nothing to fit).
    """
    import statsmodels.formula.api as smf

    df = study.macro[(study.macro["metric"] == metric) & (study.macro["task"] == task)
                     & (study.macro["method"] == method)].copy()
    if len(df) < 4 or df["nonemb_params"].nunique() < 2 or df["k_langs"].nunique() < 2:
        return None
    df["log2_params"] = np.log2(df["nonemb_params"].astype(float))
    df["log2_k"] = np.log2(df["k_langs"].astype(float))
    formula = "value ~ log2_params * log2_k" if interaction else "value ~ log2_params + log2_k"
    fit = smf.ols(formula, data=df).fit()
    ci = fit.conf_int(0.05)
    return pd.DataFrame({"term": fit.params.index, "coef": fit.params.values,
                         "ci_low": ci[0].values, "ci_high": ci[1].values,
                         "p": fit.pvalues.values, "n": int(fit.nobs)})


def answer(study: Study, regression: pd.DataFrame | None, metric: str = "RR@10",
           task: str = "tatoeba") -> dict[str, str]:
    """Numbers and a one-line verdict for the book's answer, as strings to glue."""
    table = settings_table(study, metric)
    table = table[table["task"] == task]
    best = table[table["method"] != "none"].sort_values("mean").iloc[-1]
    base = table[(table["method"] == "none") & (table["layers"] == best["layers"])]
    out = {
        "profile": study.profile,
        "best_setting": f"{METHOD_LABELS.get(best['method'], best['method'])}, "
                        f"L{int(best['layers'])}, k = {int(best['k_langs'])}",
        "best_value": f"{best['mean']:.3f}",
        "best_baseline": f"{base['mean'].iloc[0]:.3f}" if len(base) else "n/a",
    }
    if regression is None:
        return {**out, "size_effect": "n/a", "diversity_effect": "n/a", "n_runs": "n/a",
                "verdict": "this profile has too few settings for the regression"}
    coef = regression.set_index("term")
    size, div = coef.loc["log2_params"], coef.loc["log2_k"]

    def fmt(row) -> str:
        return f"{row['coef']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"

    def excludes_zero(row) -> bool:
        return row["ci_low"] > 0 or row["ci_high"] < 0

    sig_size, sig_div = excludes_zero(size), excludes_zero(div)
    if sig_size and sig_div:
        bigger = "model size" if abs(size["coef"]) > abs(div["coef"]) else "data diversity"
        verdict = f"both effects are non-zero; per doubling, {bigger} has the larger one"
    elif sig_size:
        verdict = "only model size has an effect distinguishable from zero"
    elif sig_div:
        verdict = "only data diversity has an effect distinguishable from zero"
    else:
        verdict = "neither effect is distinguishable from zero at this sample size"
    return {**out, "size_effect": fmt(size), "diversity_effect": fmt(div), "verdict": verdict,
            "n_runs": str(int(coef["n"].iloc[0]))}


def tuning_table(results_dir: str | Path = "results") -> pd.DataFrame | None:
    """The development-language sweep written by ``python -m optical_lib.tune`` (or None)."""
    path = ResultsLayout(root=Path(results_dir)).tuning
    if not path.exists():
        return None
    table = pd.read_csv(path).sort_values(["layers", "method", "lr"], na_position="first")
    columns = [c for c in ("dev_rr10", "dev_rr10_teacher_docs", "train_s") if c in table]
    return table.set_index(["layers", "method", "lr"])[columns].round(3)


def markdown_table(df: pd.DataFrame, digits: int = 3, index: bool = False,
                   formats: dict[str, str] | None = None) -> str:
    """A result table as Markdown for the book: floats to ``digits`` places (or the format
    spec ``formats[column]``, e.g. ``".0e"``), p-values below 0.001 as ``< 0.001``, integers
    and labels as they are, missing values empty."""
    formats = formats or {}

    def cell(column: str, value) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
            return ""
        if isinstance(value, (bool, np.bool_)):
            return "yes" if value else "no"
        if column in formats:
            return format(value, formats[column])
        if isinstance(value, (float, np.floating)):
            if column.lower() in ("p", "p_holm", "pvalue", "p_value") and value < 0.001:
                return "< 0.001"
            return f"{value:.{digits}f}"
        return str(value)

    if index:
        names = [name or ("" if df.index.nlevels == 1 else f"level_{i}")
                 for i, name in enumerate(df.index.names)]
        table = df.reset_index(names=names)
    else:
        table = df
    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(table[c]) else "---"
                          for c in table.columns) + "|"
    body = ["| " + " | ".join(cell(str(c), v) for c, v in zip(table.columns, row, strict=True))
            + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def settings_markdown(study: Study, metric: str = "RR@10") -> dict[str, str]:
    """:func:`settings_table` as one readable Markdown table per suite (method names, size in
    millions of non-embedding parameters)."""
    table = settings_table(study, metric)
    table["method"] = table["method"].map(lambda m: METHOD_LABELS.get(m, m))
    table["params (M)"] = table["nonemb_params"] / 1e6
    table = table.rename(columns={"layers": "L", "k_langs": "k", "n_seeds": "seeds"})
    columns = ["method", "L", "params (M)", "k", "mean", "std", "min", "max", "ci_low",
               "ci_high", "seeds"]
    return {suite: markdown_table(part[columns], formats={"params (M)": ".1f"})
            for suite, part in table.groupby("task", sort=True)}


def runs_table(study: Study, metric: str = "RR@10", link_dir: str = "runs") -> pd.DataFrame:
    """One row per setting of the study: a linked short title, depth, method, k, seed and
    the macro metric of each suite; sorted by method, depth, k and seed."""
    from .experiment import setting_title

    macro = study.macro[study.macro["metric"] == metric]
    values = macro.pivot_table(index="run_id", columns="task", values="value")
    runs = study.summary.drop_duplicates("run_id").set_index("run_id")
    order = {m: i for i, m in enumerate(METHOD_LABELS)}
    rows = []
    for run_id, run in runs.iterrows():
        k = None if pd.isna(run["k_langs"]) else int(run["k_langs"])
        title = setting_title(int(run["layers"]), run["method"], k, int(run["seed"]))
        rows.append({"setting": f"[{title}]({link_dir}/{run_id}.ipynb)",
                     "L": int(run["layers"]), "method": METHOD_LABELS.get(run["method"]),
                     "k": k, "seed": int(run["seed"]) if k is not None else None,
                     **{f"{metric} {suite}": values.loc[run_id, suite]
                        for suite in values.columns},
                     "_order": order.get(run["method"], 99)})
    table = pd.DataFrame(rows).sort_values(["_order", "L", "k", "seed"], na_position="first")
    return table.drop(columns="_order").reset_index(drop=True)


RUNS_PAGE = """# Every version 1 run

One executed notebook per setting of the **{profile}** profile, exactly as papermill ran it:
parameters, the realised training sample, the loss curve, per-language results with 95%
confidence intervals, and where the run came from (commit, date, threads, data checksums). Run
ids are content hashes of the parameters; `python -m optical_lib.grid --profile {profile} --only
RUN_ID` reruns one. The table is written by the analysis step (`make analysis`) from the result
files; the metric is macro {metric} over the evaluation languages of each suite.

{table}
"""


def execute(profile: str = "medium", results_dir: str | Path = "results",
            book_dir: str | Path = "book",
            template: str | Path = "notebooks/analysis.ipynb") -> Path:
    """Execute the analysis notebook on one profile's results into the book (papermill, in
    the project root, so relative paths resolve there): ``<book>/analysis.ipynb`` with the
    injected parameters cell hidden (``remove-cell``), the intro's headline figure
    ``<book>/figures/headline.svg`` and the runs index ``<book>/runs.md``."""
    import nbformat
    import papermill

    book = Path(book_dir)
    executed = papermill.execute_notebook(
        str(template), None, progress_bar=False, cwd=str(PROJECT_ROOT),
        parameters={"results_dir": str(results_dir), "profile": profile,
                    "figures_dir": str(book / "figures")})
    for cell in executed.cells:
        tags = cell.metadata.setdefault("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
    output = atomic_write(book / "analysis.ipynb", nbformat.writes(executed))
    study = load_study(results_dir, profile)
    table = markdown_table(runs_table(study), formats={"k": ".0f", "seed": ".0f"})
    atomic_write(book / "runs.md", RUNS_PAGE.format(profile=profile, metric="RR@10",
                                                   table=table))
    return output


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=execute.__doc__.splitlines()[0])
    parser.add_argument("--profile", default="medium")
    parser.add_argument("--results", default="results")
    parser.add_argument("--book", default="book", help="the book's folder (pages written)")
    args = parser.parse_args(argv)
    print(execute(args.profile, args.results, args.book))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
