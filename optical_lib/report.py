"""Protocol v2's committed results as tables and figures: the matched baselines (zero-shot
students, the teacher, BM25), the tuning sweep and convergence check, the objective ablation.

Everything here reads result files only (``results/runs/<run_id>/results.json`` of a grid
profile's settings, ``results/tuning-v2/*.csv``) and recomputes no metric. The book page
``book/protocol.ipynb`` is ``notebooks/protocol.ipynb`` executed by :func:`execute`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .distill import METHOD_LABELS
from .evaluate import read_results
from .layout import ResultsLayout, atomic_write
from .paths import PROJECT_ROOT
from .protocol import DELTA, PRIMARY_METRIC

#: Suites in reading order, with the names the book uses.
SUITE_LABELS = {
    "flores-x-eng": "FLORES X→eng",
    "flores-eng-x": "FLORES eng→X",
    "tatoeba-x-eng": "Tatoeba X→eng",
    "xquad-r-x-eng": "XQuAD-R X→eng",
    "xquad-r-eng-eng": "XQuAD-R eng→eng",
}
TEACHER_NAMES = {"me5-small": "me5-small L12", "minilm-l6": "MiniLM-L6"}


def load_profile(results_dir: str | Path, profile: str) -> tuple[pd.DataFrame, list[str]]:
    """Result rows of a profile's finished settings, and the run ids still missing."""
    from .grid import plan

    layout = ResultsLayout(root=Path(results_dir))
    frames, missing = [], []
    for setting in plan(profile):
        if layout.results_file(setting.run_id).exists():
            frames.append(read_results(layout.results_file(setting.run_id)))
        else:
            missing.append(setting.run_id)
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return rows, missing


def system(row) -> str:
    """A result row's system name: ``BM25``, ``L3 zero-shot``, ``MiniLM-L6 (teacher)``,
    ``L3 centred OPTICAL`` ..."""
    if row["method"] == "bm25":
        return "BM25"
    if row["model"] == "minilm-l6":
        return "MiniLM-L6 (teacher)"
    return f"L{int(row['layers'])} {METHOD_LABELS.get(row['method'], row['method'])}"


def languages_per_task(rows: pd.DataFrame) -> dict[str, int]:
    """How many languages besides English each task of the result rows scores (its
    per-language rows: the query's language, or the documents' where the queries are
    English); a task scored in English alone counts English. For the book's prose."""
    if rows.empty:
        return {}
    per = rows[rows["scope"] == "language"]
    other = per["query_lang"].where(per["query_lang"] != "eng", per["doc_lang"])
    return {task: int(n) for task, n in other.groupby(per["task"]).nunique().items()}


def _macro(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    df = rows[(rows["scope"] == "macro") & (rows["metric"] == metric)].copy()
    df["system"] = df.apply(system, axis=1)
    df["suite"] = df["task"].map(SUITE_LABELS).fillna(df["task"])
    return df


def _order(index) -> list[str]:
    def key(name: str):
        if name == "BM25":
            return (0, 0)
        if name.startswith("MiniLM"):
            return (2, 0)
        return (1, int(name.split()[0][1:]))

    return sorted(index, key=key)


def baselines_table(rows: pd.DataFrame, protocol: str = "student", teacher: str | None = None,
                    metric: str = PRIMARY_METRIC, lexical: bool = True) -> pd.DataFrame:
    """Macro ``metric`` per system (rows) and suite (columns) under one protocol; BM25's
    (lexical) row is added when ``lexical``. ``teacher`` picks the teacher of the OPTICAL
    protocol's runs (their English side)."""
    df = _macro(rows, metric)
    keep = df["protocol"] == protocol
    if teacher is not None:
        keep &= df["teacher"] == teacher
    if protocol == "student":  # the student protocol does not involve the teacher
        keep &= ~df.duplicated(["system", "task", "protocol"])
    if lexical:
        keep |= df["protocol"] == "lexical"
    table = df[keep].pivot_table(index="system", columns="suite", values="value")
    columns = [c for c in SUITE_LABELS.values() if c in table.columns]
    return table.loc[_order(table.index), columns]


def _budget_order(budget: pd.Series) -> pd.Series:
    """Sort key of learning-curve budgets: the pairs, the whole pool (budget 0) last. Result
    tables hold the budget as a nullable Int64 column, which cannot hold infinity."""
    budget = budget.astype(float)
    return budget.where(budget > 0, float("inf"))


def curve_system(layers: int, budget: int) -> str:
    """A learning-curve row's name: ``L2 · 1,984 pairs``, ``L6 · whole pool`` (budget 0)."""
    return f"L{int(layers)} · " + (f"{int(budget):,} pairs" if budget > 0 else "whole pool")


def curve_pending(missing: list[str]) -> list[str]:
    """The names (:func:`curve_system`) of the ``curve`` profile's settings in ``missing``
    (:func:`load_profile`'s second value), in the profile's order."""
    from .grid import plan

    left = set(missing)
    return [curve_system(s.config.layers, s.config.budget) for s in plan("curve")
            if s.run_id in left]


def curve_table(curve: pd.DataFrame, baselines: pd.DataFrame, protocol: str = "student",
                teacher: str = "me5-small", metric: str = PRIMARY_METRIC) -> pd.DataFrame:
    """The learning curve under one protocol: macro ``metric`` per (depth, budget) of the
    ``curve`` profile's rows (rows ``L2 · 1,984 pairs`` ..., ``L2 · whole pool``), each depth
    preceded by its zero-shot model and the table by BM25 (from ``baselines``, the
    ``baselines`` profile's rows); columns are the suites."""
    df = _macro(curve, metric)
    df = df[df["protocol"] == protocol]
    if protocol != "student":
        df = df[df["teacher"] == teacher]
    df["order"] = _budget_order(df["budget"])
    df["system"] = [curve_system(n, b) for n, b in zip(df["layers"], df["budget"], strict=True)]
    students = df.pivot_table(index=["layers", "order", "system"], columns="suite",
                              values="value").reset_index()
    base = baselines_table(baselines, protocol, None if protocol == "student" else teacher,
                           metric, lexical=True)
    parts = [base.loc[["BM25"]]] if "BM25" in base.index else []
    for depth, group in students.groupby("layers"):
        zero = f"L{int(depth)} zero-shot"
        if zero in base.index:
            parts.append(base.loc[[zero]])
        parts.append(group.sort_values("order").set_index("system")
                     .drop(columns=["layers", "order"]))
    table = pd.concat(parts)
    columns = [c for c in SUITE_LABELS.values() if c in table.columns]
    table.index.name = "system"
    return table[columns].dropna(axis=1, how="all")


#: The suites of the learning-curve figure: sentence matching, and passage retrieval in
#: both directions that involve English (where BM25 is a real competitor).
CURVE_FIGURE_SUITES = ("FLORES X→eng", "XQuAD-R X→eng", "XQuAD-R eng→eng")


def curve_points(curve: pd.DataFrame, baselines: pd.DataFrame, pool_pairs: int,
                 teacher: str = "me5-small", metric: str = PRIMARY_METRIC) -> pd.DataFrame:
    """The learning curve as tidy points for :func:`optical_lib.plots.learning_curve`:
    ``system`` ("student", "zero-shot" or "BM25"), ``layers`` (<NA> for BM25), ``pairs``
    (0 for the zero-shot model, ``pool_pairs`` for the whole pool, budget 0), ``protocol``
    ("student", "teacher" or "lexical"), ``suite`` (:data:`SUITE_LABELS`) and ``value``
    (macro ``metric``). OPTICAL's protocol keeps the rows of ``teacher``'s English side;
    the zero-shot and BM25 rows come from ``baselines`` (the ``baselines`` profile)."""
    if pool_pairs <= 0:
        raise ValueError(f"curve_points: pool_pairs must be the whole pool's size, got "
                         f"{pool_pairs}")
    columns = ["system", "layers", "pairs", "protocol", "suite", "value"]
    parts = []
    trained = _macro(curve, metric) if len(curve) else pd.DataFrame()
    zero = _macro(baselines, metric) if len(baselines) else pd.DataFrame()
    for df, kind in ((trained, "student"), (zero, "zero-shot")):
        if df.empty:
            continue
        if kind == "zero-shot":
            df = df[(df["method"] == "none") & (df["model"] != "minilm-l6")]
        df = df[(df["protocol"] == "student")
                | ((df["protocol"] == "teacher") & (df["teacher"] == teacher))]
        if kind == "student":
            budget = df["budget"].astype(float)
            pairs = budget.where(budget > 0, float(pool_pairs))
        else:
            pairs = pd.Series(0.0, index=df.index)
        parts.append(pd.DataFrame({"system": kind, "layers": df["layers"].astype("Int64"),
                                   "pairs": pairs, "protocol": df["protocol"],
                                   "suite": df["suite"], "value": df["value"]}))
    if len(zero):
        lexical = zero[zero["protocol"] == "lexical"]
        parts.append(pd.DataFrame({"system": "BM25", "layers": pd.array([pd.NA] * len(lexical),
                                                                        dtype="Int64"),
                                   "pairs": float("nan"), "protocol": "lexical",
                                   "suite": lexical["suite"], "value": lexical["value"]}))
    if not parts:
        return pd.DataFrame(columns=columns)
    out = pd.concat(parts, ignore_index=True)[columns]
    out = out.drop_duplicates(["system", "layers", "pairs", "protocol", "suite"])
    return out.sort_values(["system", "protocol", "layers", "pairs"],
                           ignore_index=True)


def join_words(items: list[str], word: str = "and") -> str:
    """["a", "b", "c"] -> "a, b and c" (``word`` between the last two)."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {word} {items[-1]}"


def _budgets(names: list[str]) -> str:
    """Curve budgets in words: ["1,984 pairs", "7,936 pairs", "whole pool"] ->
    "1,984 and 7,936 pairs and the whole pool"."""
    pairs = [n.removesuffix(" pairs") for n in names if n.endswith(" pairs")]
    text = f"{join_words(pairs)} pairs" if pairs else ""
    if "whole pool" in names:
        text += (" and " if text else "") + "the whole pool"
    return text


def _grouped(budgets: list[str], labels: list[str], order: tuple[str, ...]) -> str:
    """Budgets grouped by their label, in ``order``: "above it at 1,984 and 7,936 pairs,
    below it at the whole pool", or "<label> at every budget" when all share one."""
    found = [(label, [b for b, lab in zip(budgets, labels, strict=True) if lab == label])
             for label in order]
    found = [(label, b) for label, b in found if b]
    if len(found) == 1 and len(budgets) > 1:
        return f"{found[0][0]} at every budget"
    return ", ".join(f"{label} at {_budgets(b)}" for label, b in found)


def _the(budget: str) -> str:
    return "the whole pool" if budget == "whole pool" else budget


def _placement(trained: pd.Series, reference: float, tie: float) -> list[str]:
    """Clauses placing a depth's distilled rows (index "L2 · 1,984 pairs" ...) above, level
    with or below ``reference``, and its best row."""
    budgets = [name.split(" · ", 1)[1] for name in trained.index]
    labels = ["above it" if m > tie else "below it" if m < -tie else "level with it"
              for m in trained - reference]
    if trained.empty:
        return []
    best = _the(trained.idxmax().split(" · ", 1)[1])
    return [_grouped(budgets, labels, ("above it", "level with it", "below it")),
            f"best {trained.max():.3f} ({trained.max() - reference:+.3f}, {best})"]


def curve_sentences(table: pd.DataFrame, suites: tuple[str, ...] = ("XQuAD-R X→eng",
                                                                   "XQuAD-R eng→eng"),
                    tie: float = 0.0) -> str:
    """Where each depth stands against BM25 on ``suites`` (the passage-retrieval ones), read
    off a :func:`curve_table`: untrained (when its zero-shot model is above BM25), and at
    which budgets the distilled students are above, level with or below it. A margin of at
    most ``tie`` either way counts as level: what a rerun of one setting moves
    (:func:`rerun_spread`) cannot tell two single runs apart. The best distilled value and
    its budget close each depth's clause."""
    out = []
    for suite in suites:
        if suite not in table.columns or "BM25" not in table.index:
            continue
        col = table[suite].dropna()
        bm25 = col.get("BM25")
        if bm25 is None or pd.isna(bm25):
            continue
        parts = []
        depths = sorted({int(name.split()[0][1:]) for name in col.index if name != "BM25"})
        for depth in depths:
            zero = col.get(f"L{depth} zero-shot")
            trained = col[[name.startswith(f"L{depth} · ") for name in col.index]]
            said = []
            if zero is not None and zero - bm25 > tie:
                said.append(f"above it untrained ({zero:.3f}, {zero - bm25:+.3f})")
            said += _placement(trained, bm25, tie)
            if said:
                parts.append(f"L{depth} " + "; ".join(said))
        if parts:
            out.append(f"{suite} (BM25 {bm25:.3f}): " + ". ".join(parts) + ".")
    return " ".join(out)


def curve_delta_sentences(curve: pd.DataFrame, suites: tuple[str, ...] = ("XQuAD-R eng→eng",),
                          protocol: str = "student", metric: str = PRIMARY_METRIC) -> str:
    """Does distillation keep what the untrained model could do? Per suite and depth, each
    learning-curve run's own Δ (its macro ``delta:`` row: over the zero-shot model of its
    precision, paired over queries, with the query bootstrap's 95% CI, which leaves out
    the training's own randomness): the budgets where the CI lies above 0, contains it, or
    lies below it; the largest budget's Δ with its CI closes each depth's clause."""
    df = _macro(curve, f"delta:{metric}") if len(curve) else pd.DataFrame()
    if df.empty:
        return ""
    df = df[df["protocol"] == protocol].copy()
    df["order"] = _budget_order(df["budget"])
    out = []
    for suite in suites:
        rows = df[df["suite"] == suite]
        parts = []
        for depth, part in rows.sort_values("order").groupby("layers"):
            budgets = [f"{int(b):,} pairs" if b > 0 else "whole pool"
                       for b in part["budget"].astype(float)]
            labels = ["above it" if r["ci_low"] > 0 else "below it" if r["ci_high"] < 0
                      else "not distinguishable from it" for _, r in part.iterrows()]
            where = _grouped(budgets, labels,
                             ("above it", "not distinguishable from it", "below it"))
            last = part.iloc[-1]
            name = _the(budgets[-1])
            parts.append(f"L{int(depth)} {where}; at {name} Δ {last['value']:+.3f} "
                         f"[{last['ci_low']:+.3f}, {last['ci_high']:+.3f}]")
        if parts:
            out.append(f"{suite}, each run against its own zero-shot model ("
                       f"{PROTOCOL_LABELS.get(protocol, protocol)}): " + ". ".join(parts) + ".")
    return " ".join(out)


def rerun_spread(results_dir: str | Path, metric: str = PRIMARY_METRIC) -> float | None:
    """The largest change of a macro ``metric`` between a published run and its second
    computation (:func:`reruns`), over every rerun, suite and protocol; None without
    reruns."""
    moved = [rerun_table(results_dir, run_id, label, metric)["rerun − published"].abs().max()
             for run_id, label in reruns(results_dir)]
    return float(max(moved)) if moved else None


def run_device(results_dir: str | Path, run_id: str) -> str:
    """The device a published run trained and was evaluated on (its ``setting.json``)."""
    import json

    setting = ResultsLayout(root=Path(results_dir)).setting_file(run_id)
    return json.loads(setting.read_text())["config"].get("device") or "cpu"


def curve_devices(results_dir: str | Path, curve: pd.DataFrame,
                  what: str = "device") -> dict[str, list[str]]:
    """``{device: [system, ...]}`` of the learning curve's trained rows (the names
    :func:`curve_table` gives them), from each run's ``setting.json``; with ``what=
    "teacher_states"``, ``{rule: [system, ...]}`` by the teacher-state rule its provenance
    records ("before" where it records none: computed before the rule existed)."""
    import json

    layout = ResultsLayout(root=Path(results_dir))
    out: dict[str, list[str]] = {}
    runs = curve[["run_id", "layers", "budget"]].drop_duplicates()
    runs = runs.assign(order=_budget_order(runs["budget"]))
    for run in runs.sort_values(["layers", "order"]).itertuples():  # the whole pool last
        if what == "device":
            key = run_device(results_dir, run.run_id)
        else:
            setting = json.loads(layout.setting_file(run.run_id).read_text())
            key = (setting.get("provenance") or {}).get("teacher_states", "before")
        out.setdefault(key, []).append(curve_system(run.layers, run.budget))
    return out


#: How a second computation of a published setting differs from it (the label of its
#: folder ``results/reruns/<run_id>--<label>/``).
RERUNS = {
    "cuda": "the same setting run again, unchanged, on a GPU",
    "batch-padded-states": "the same setting computed before the fixed-length teacher-state "
                           "rule (its teacher vectors at their first batch's padded length)",
    "bf16-emulated": "the same setting run again, unchanged, on a CPU without bf16 "
                     "instructions, its bf16 products computed as float32 products of the "
                     "same bf16 operands (optical_lib.bf16)",
}


def reruns(results_dir: str | Path) -> list[tuple[str, str]]:
    """``(run_id, label)`` of every second computation of a published setting, in
    ``results/reruns/<run_id>--<label>/`` (labels: :data:`RERUNS`)."""
    root = Path(results_dir) / "reruns"
    found = [tuple(d.name.split("--", 1)) for d in sorted(root.glob("*--*")) if d.is_dir()]
    unknown = sorted({label for _, label in found} - set(RERUNS))
    if unknown:
        raise ValueError(f"{root}: unknown rerun label(s) {unknown}; known: {sorted(RERUNS)}")
    return found


def rerun_table(results_dir: str | Path, run_id: str, label: str,
                metric: str = PRIMARY_METRIC) -> pd.DataFrame:
    """The published run of ``run_id`` beside its second computation ``label``
    (:func:`reruns`), per suite and protocol: the macro ``metric`` of each (``published``,
    ``rerun``), their difference (``rerun − published``) and the largest difference of one
    language. Which device the published run used: :func:`run_device`."""
    layout = ResultsLayout(root=Path(results_dir))
    published = read_results(layout.results_file(run_id))
    rerun = read_results(Path(results_dir) / "reruns" / f"{run_id}--{label}"
                         / "results.json")
    keys = ["task", "protocol", "query_lang", "doc_lang"]
    rows = []
    for scope in ("macro", "language"):
        a, b = (r[(r["scope"] == scope) & (r["metric"] == metric)] for r in (published, rerun))
        both = a.merge(b, on=keys, suffixes=("_pub", "_re"), validate="one_to_one")
        if len(both) != len(a) or len(both) != len(b):
            raise ValueError(f"the rerun {label} of {run_id} does not hold the same "
                             f"{scope} rows as the published run")
        both["diff"] = both["value_re"] - both["value_pub"]
        rows.append(both)
    macro, language = rows
    worst = language.groupby(["task", "protocol"])["diff"].apply(lambda d: d.abs().max())
    table = macro.set_index(["task", "protocol"])[["value_pub", "value_re", "diff"]]
    table["largest difference of one language"] = worst
    table = table.reset_index()
    table["suite"] = table["task"].map(SUITE_LABELS).fillna(table["task"])
    table["protocol"] = table["protocol"].map({"student": "student", "teacher": "OPTICAL's"})
    order = {s: i for i, s in enumerate([*SUITE_LABELS.values(), "student", "OPTICAL's"])}
    table = table.sort_values(["suite", "protocol"], key=lambda c: c.map(order))
    return table.rename(columns={"value_pub": "published", "value_re": "rerun",
                                 "diff": "rerun − published"}
                        ).set_index(["suite", "protocol"]).drop(columns="task")


def sweep_long(path: str | Path) -> pd.DataFrame:
    """A tuning table in one long form (teacher, method, layers, lr, seed, epoch, delta,
    precision, device): a v2 sweep's rows per task and protocol as they are; the partial
    GPU sweep's per-epoch means over tasks and protocols as one row each (task "mean")."""
    from .tune import read_sweep

    table = read_sweep(path)
    if "mean_dev_delta" in table.columns:
        table = table.rename(columns={"mean_dev_delta": "delta"}).assign(task="mean")
    return table


def sweep_grid(sweep: pd.DataFrame) -> pd.DataFrame:
    """Mean dev Δ over seeds, protocols and directions per (teacher, objective, depth, lr)
    and evaluated epoch (one column per epoch), with the seeds behind each row and, where
    the table says, the devices they trained on (``cpu``, ``cuda`` or ``cpu+cuda``)."""
    per_seed = (sweep.groupby(["teacher", "method", "layers", "lr", "seed", "epoch"])["delta"]
                .mean().reset_index())
    wide = per_seed.pivot_table(index=["teacher", "method", "layers", "lr"], columns="epoch",
                                values="delta", aggfunc="mean")
    wide.columns = [f"epoch {e}" for e in wide.columns]
    wide["seeds"] = per_seed.groupby(["teacher", "method", "layers", "lr"])["seed"].nunique()
    if "device" in sweep.columns:
        wide["device"] = _devices(sweep, ["teacher", "method", "layers", "lr"])
    return wide.reset_index()


def _devices(table: pd.DataFrame, keys: list[str]) -> pd.Series:
    """Per group of ``keys``: the devices its rows ran on, e.g. "cpu" or "cpu+cuda"."""
    return table.groupby(keys)["device"].agg(lambda d: "+".join(sorted(set(d.dropna()))))


def _collapsed(per_epoch: pd.DataFrame) -> bool:
    """A learning rate that destroys the student: dev Δ (mean over seeds) below 0 at every
    evaluated epoch, and the last epoch not better than the first by more than the
    convergence margin."""
    from .tune import CONVERGED_WITHIN

    d = per_epoch.sort_values("epoch")["delta"]
    return bool((d < 0).all() and d.iloc[-1] - d.iloc[0] <= CONVERGED_WITHIN)


def tuning_sentences(sweep: pd.DataFrame) -> str:
    """What a sweep says, as sentences computed from it: per (teacher, objective, depth)
    the choice of :func:`~optical_lib.tune.choose_v2` with its flags, and the learning rates
    that collapse (:func:`_collapsed`)."""
    from .tune import choose_v2

    if sweep.empty:
        return ""
    out = []
    per_seed = (sweep.groupby(["teacher", "method", "layers", "lr", "epoch"])["delta"]
                .mean().reset_index())
    for _, row in choose_v2(sweep).iterrows():
        part = per_seed[(per_seed["teacher"] == row["teacher"])
                        & (per_seed["method"] == row["method"])
                        & (per_seed["layers"] == row["layers"])]
        collapsed = sorted(lr for lr, g in part.groupby("lr") if _collapsed(g))
        flags = []
        if row["lr_on_edge"]:
            flags.append("the learning rate sits on the edge of the grid")
        if row["epoch_on_edge"]:
            flags.append("the epoch count is the last one evaluated (not converged)")
        chosen = part[part["lr"] == row["lr"]].sort_values("epoch")
        if (len(chosen) > 1 and row["epochs"] == chosen["epoch"].iloc[0]
                and chosen["delta"].iloc[-1] < chosen["delta"].iloc[0]):
            flags.append("dev Δ is highest at the first evaluated epoch and falls after it "
                         "(fewer epochs were not tried)")
        if row["seeds"] < 2:
            flags.append("one seed only")
        text = (f"{TEACHER_NAMES.get(row['teacher'], row['teacher'])} teacher, "
                f"{METHOD_LABELS.get(row['method'], row['method'])}, L{int(row['layers'])}: "
                f"the rule picks lr {row['lr']:.2g} and {int(row['epochs'])} "
                f"epoch{'' if int(row['epochs']) == 1 else 's'} "
                f"(mean dev Δ {row['dev_delta']:+.3f})")
        text += f"; not settled: {', '.join(flags)}" if flags else "; settled"
        if collapsed:
            text += (f". Learning rate{'s' if len(collapsed) > 1 else ''} "
                     f"{', '.join(f'{lr:.2g}' for lr in collapsed)} collapse (dev Δ below 0 "
                     "at every evaluated epoch, and not recovering)")
        out.append(text + ".")
    return "\n\n".join(out)


def convergence_table(table: pd.DataFrame) -> pd.DataFrame:
    """Dev Δ (mean over seeds) per (teacher, depth, lr) and evaluated epoch, per protocol x
    direction and on average, with the device the runs trained on where the table says."""
    df = table.copy()
    df["where"] = df["task"].map(SUITE_LABELS).fillna(df["task"]) + " · " + df["protocol"]
    wide = df.pivot_table(index=["teacher", "layers", "lr", "epoch"], columns="where",
                          values="delta", aggfunc="mean")
    wide["mean"] = df.groupby(["teacher", "layers", "lr", "epoch"])["delta"].mean()
    if "device" in df.columns:
        wide["device"] = _devices(df, ["teacher", "layers", "lr", "epoch"])
    return wide.reset_index()


def ablation_table(rows: pd.DataFrame, metric: str = PRIMARY_METRIC) -> pd.DataFrame:
    """Per depth and objective: dev Δ ``metric`` per protocol (mean over the two FLORES
    directions) and the collapse diagnostics of the student's sentence vectors (mean over
    the development languages, FLORES X side), next to the zero-shot model's."""
    trained = rows[rows["method"] != "none"]
    delta = trained[(trained["scope"] == "macro") & (trained["metric"] == DELTA + metric)]
    wide = delta.pivot_table(index=["layers", "method"], columns="protocol", values="value",
                             aggfunc="mean")
    wide.columns = [f"Δ {metric} ({c} protocol)" for c in wide.columns]
    diag = rows[(rows["scope"] == "diagnostic") & (rows["task"] == "flores-x-eng")]
    stats = diag.pivot_table(index=["layers", "method"], columns="metric", values="value",
                             aggfunc="mean")
    table = stats.join(wide, how="left").reset_index()
    table["objective"] = table["method"].map(METHOD_LABELS)
    columns = ["layers", "objective", *wide.columns, "mean_cos", "eff_rank"]
    order = {m: i for i, m in enumerate(["none", "optical", "optical-plain", "mse",
                                         "optical+mse"])}
    table["order"] = table["method"].map(order)
    return table.sort_values(["layers", "order"])[columns].reset_index(drop=True)


def execute(results_dir: str | Path = "results", book_dir: str | Path = "book",
            template: str | Path = "notebooks/protocol.ipynb") -> Path:
    """Execute the protocol-v2 notebook on the committed results into
    ``<book>/protocol.ipynb`` (injected parameters hidden)."""
    import nbformat
    import papermill

    executed = papermill.execute_notebook(
        str(template), None, progress_bar=False, cwd=str(PROJECT_ROOT),
        parameters={"results_dir": str(results_dir)})
    for cell in executed.cells:
        tags = cell.metadata.setdefault("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
    return atomic_write(Path(book_dir) / "protocol.ipynb", nbformat.writes(executed))


#: A teacher gap smaller than this (nDCG@10) leaves the share undefined (NaN).
MIN_GAP = 0.05


def gap_share(rows: pd.DataFrame, metric: str = PRIMARY_METRIC) -> pd.DataFrame:
    """The share of the teacher's gap a distilled student closes, per run, suite and
    protocol: Δ / (T - Z), where Z is the same-depth zero-shot model under the same protocol
    (so Δ = student - Z) and T the teacher's own metric on the suite, encoding both sides
    (the zero-shot setting of the teacher model: me5-small L12, or MiniLM-L6). NaN where
    T - Z < :data:`MIN_GAP` (nothing to close). ``rows`` holds the students' rows and the
    baselines profile's."""
    macro = rows[rows["scope"] == "macro"]
    value = macro[macro["metric"] == metric]
    teachers = {}
    for name, model, layers in (("me5-small", "me5-small", 12), ("minilm-l6", "minilm-l6", 6)):
        t = value[(value["method"] == "none") & (value["model"] == model)
                  & (value["layers"] == layers) & (value["protocol"] == "student")]
        teachers[name] = t.drop_duplicates("task").set_index("task")["value"]
    delta = macro[(macro["metric"] == DELTA + metric) & (macro["method"] != "none")]
    out = []
    for _, row in delta.iterrows():
        student = value[(value["run_id"] == row["run_id"]) & (value["task"] == row["task"])
                        & (value["protocol"] == row["protocol"])]
        if student.empty or row["task"] not in teachers.get(row["teacher"], {}):
            continue
        zero = student["value"].item() - row["value"]
        gap = teachers[row["teacher"]][row["task"]] - zero
        out.append({"run_id": row["run_id"], "task": row["task"], "protocol": row["protocol"],
                    "teacher": row["teacher"], "delta": row["value"], "zero_shot": zero,
                    "teacher_value": teachers[row["teacher"]][row["task"]], "gap": gap,
                    "share": row["value"] / gap if gap >= MIN_GAP else float("nan")})
    return pd.DataFrame(out)


def ablation_sentences(table: pd.DataFrame | None) -> str:
    """What the ablation table says, as sentences computed from it: which objective has
    the larger dev Δ per depth and protocol, and what the plain cost does to the collapse
    diagnostics."""
    if table is None or table.empty:
        return ""
    out = []
    delta_cols = [c for c in table.columns if c.startswith("Δ")]
    for depth, part in table.groupby("layers"):
        by = part.set_index("objective")
        trained = by.drop(index="zero-shot", errors="ignore").dropna(subset=delta_cols, how="all")
        if trained.empty:
            continue
        for col in delta_cols:
            best = trained[col].idxmax()
            proto = col.split("(")[1].split()[0]
            out.append(f"L{int(depth)}, {proto} protocol: the largest dev Δ is {best}'s "
                       f"({trained[col].max():+.3f}); centred OPTICAL's is "
                       f"{trained[col].get('centred OPTICAL', float('nan')):+.3f}.")
        if "plain OPTICAL" in by.index and "zero-shot" in by.index:
            z, p = by.loc["zero-shot"], by.loc["plain OPTICAL"]
            c = by.loc["centred OPTICAL"] if "centred OPTICAL" in by.index else None
            text = (f"L{int(depth)}: the plain cost takes the effective rank of the sentence "
                    f"vectors from {z['eff_rank']:.0f} (zero-shot) to {p['eff_rank']:.0f} and "
                    f"their mean cosine from {z['mean_cos']:.2f} to {p['mean_cos']:.2f}")
            if c is not None:
                text += (f"; the centred cost gives {c['eff_rank']:.0f} and "
                         f"{c['mean_cos']:.2f}")
            out.append(text + ".")
    return "\n\n".join(out)


#: The retrieval protocols as the book names them (:data:`optical_lib.protocol.PROTOCOLS`
#: says what each one does).
PROTOCOL_LABELS = {"teacher": "OPTICAL's protocol", "student": "student protocol",
                   "lexical": "BM25"}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        description="Execute notebooks/protocol.ipynb on the committed results into "
                    "book/protocol.ipynb (the protocol-v2 page)")
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--book", type=Path, default=Path("book"))
    args = parser.parse_args(argv)
    print(execute(args.results, args.book))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
