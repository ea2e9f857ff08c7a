"""Choose distillation hyper-parameters on development languages, never on test languages.

The development languages (:data:`optical_lib.data.DEV_LANGS_TATOEBA`) are held out from
training and from the reported evaluation. For each student depth and learning rate this
distils one student (k=8 languages, the grid's budget, seed 0) and measures macro RR@10 on
the development languages under both retrieval protocols (student-encoded documents, the
primary one, and teacher-encoded documents), next to the zero-shot baseline::

    python -m optical_lib.tune --layers 3 12 --lrs 5e-5 2e-4 5e-4 --out results/tuning.csv

Design v2 (``--design v2``) is the convergence check and the tuning sweep in one: for each
teacher, depth, learning rate and seed it distils centred OPTICAL on a tuning draw
(:data:`TUNING_DRAW`, k = 8, the study's budget) for up to ``--epochs`` epochs, and after
the epochs in ``--eval-epochs`` measures Δ nDCG@10 on the FLORES-200 development languages,
both directions, both protocols. :func:`choose_v2` applies the rule fixed here before the
sweep ran: the (learning rate, epochs) with the largest mean dev Δ over seeds, protocols
and directions; it flags a choice on the edge of the learning-rate grid, and an epoch
count at the last evaluated epoch (not converged)::

    python -m optical_lib.tune --design v2 --teacher me5-small --layers 2 3 --seeds 0 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from . import data
from .distill import TRAINED_METHODS, distill
from .experiment import (
    CHECKPOINT_S,
    TEACHER_DOCS,
    ExperimentConfig,
    checkpoint_dir,
    discard_checkpoint,
    evaluate_student,
    resumable_checkpoint,
    training_sample,
    validate,
)
from .layout import ResultsLayout, atomic_write, atomic_write_json
from .models import load_encoder

#: The language draw of the tuning runs: not one of the study's draws (0, 1, ...).
TUNING_DRAW = 1000
#: The learning-rate grid of design v2 per depth: the v1 choice times these factors.
LR_FACTORS = (1 / 9, 1 / 3, 1.0, 3.0, 9.0)
#: Epochs after which the convergence check evaluates.
EVAL_EPOCHS = (1, 2, 4, 8, 12, 16, 24)
#: Columns of the v2 sweep table.
V2_COLUMNS = ("teacher", "method", "layers", "lr", "seed", "epoch", "task", "protocol",
              "value", "baseline", "delta", "train_s", "device", "precision")
#: The objective of sweep tables written before the method column existed.
LEGACY_METHOD = "optical"


def read_sweep(path: str | Path) -> pd.DataFrame:
    """A v2 sweep table; tables written before the ``method`` column get
    :data:`LEGACY_METHOD` (they all swept centred OPTICAL)."""
    table = _with_method(pd.read_csv(path))
    if "precision" not in table.columns:
        table["precision"] = "fp32"
    return table


def _with_method(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with a ``method`` column (:data:`LEGACY_METHOD` where it had none)."""
    if "method" in table.columns:
        return table
    table = table.copy()
    table.insert(1, "method", LEGACY_METHOD)
    return table


def _finished(table: pd.DataFrame, last_epoch: int) -> set[tuple]:
    """(teacher, method, depth, lr, seed) whose run reached ``last_epoch`` in ``table``."""
    done = table.groupby(["teacher", "method", "layers", "lr", "seed"])["epoch"].max()
    return {key for key, epoch in done.items() if epoch >= last_epoch}


def _dev_macro(student, teacher, suite_list, cache) -> list[dict]:
    from . import protocol

    rows, _ = protocol.evaluate_v2({"run_id": "tune", "profile": "offline", "model": "",
                                    "layers": 0, "nonemb_params": 0, "method": "",
                                    "k_langs": 0, "budget": 0, "seed": 0}, student, teacher,
                                   None, suite_list, cache, n_boot=1)
    return [r for r in rows if r["scope"] == "macro" and r["metric"] == protocol.PRIMARY_METRIC]


def sweep_v2(teacher_name: str, layers: list[int], seeds: list[int], epochs: int,
             eval_epochs: tuple[int, ...], lrs: dict[int, list[float]] | None = None,
             device: str = "cpu", dev_sentences: int | None = None,
             log=print, out: Path | None = None,
             lr_factors: tuple[float, ...] = None, method: str = "optical",
             amp: str | None = None, budget: int | None = None) -> pd.DataFrame:
    """The v2 convergence check and learning-rate sweep (one row per evaluation).

    With ``out``, the table so far is written (atomically) after every evaluation, so a
    sweep cut short keeps what it measured; started again on the same ``out``, it keeps
    the runs that reached the last evaluated epoch and resumes the others from their
    training checkpoints (written every :data:`~optical_lib.experiment.CHECKPOINT_S`
    seconds and after each epoch's evaluation, into the cache), keeping their rows up to
    the checkpoint's epoch; a run without one starts over. ``amp="bf16"`` trains and evaluates in
    bf16 autocast (the ``precision`` column); rows of another precision in ``out`` are
    kept as they are and never count as done. ``budget`` (pairs; the study's by default)
    and ``dev_sentences`` shrink a sweep for a quick check."""
    from . import multiway, protocol
    from .distill import TeacherStates
    from .experiment import DEFAULT_LR
    from .retrieval import EmbeddingCache

    suite_list = protocol.suites(flores=multiway.DEV_LANGS_FLORES, tatoeba=(), xquad=())
    if dev_sentences:
        suite_list = [_head(s, dev_sentences) for s in suite_list]
    precision = "bf16" if amp == "bf16" else "fp32"
    teacher = load_encoder(teacher_name, device=device)
    teacher.model.requires_grad_(False)
    teacher.precision = precision
    states = TeacherStates()  # one store: every run shares the tuning draw's English side
    cache = EmbeddingCache()
    rows, done, unfinished = [], set(), pd.DataFrame(columns=V2_COLUMNS)
    if out is not None and Path(out).exists():
        earlier = read_sweep(out)
        done = _finished(earlier[earlier["precision"] == precision], max(eval_epochs))
        keep = earlier.set_index(["teacher", "method", "layers", "lr", "seed"]).index.isin(
            list(done)) | (earlier["precision"] != precision).to_numpy()
        rows, unfinished = earlier[keep].to_dict("records"), earlier[~keep]
        log(f"{out}: keeping {len(done)} finished run(s); {len(unfinished)} row(s) of "
            f"unfinished ones are kept only where a checkpoint resumes their run")
    for depth in layers:
        base = load_encoder("me5-small", depth, device=device)
        base.precision = precision
        baseline = {(r["task"], r["protocol"]): r["value"]
                    for r in _dev_macro(base, teacher, suite_list, cache)}
        grid = lrs[depth] if lrs and depth in lrs else [
            DEFAULT_LR[depth] * f for f in (lr_factors or LR_FACTORS)]
        for lr in grid:
            for seed in seeds:
                if any(k[:3] == (teacher_name, method, depth) and k[4] == seed
                       and abs(k[3] - lr) <= 1e-9 * lr for k in done):
                    continue
                config = ExperimentConfig.from_parameters(
                    design="v2", layers=depth, method=method, teacher=teacher_name,
                    k_langs=8, draw=TUNING_DRAW, lr=lr, epochs=epochs, seed=seed,
                    device=device, split="dev", amp=amp,
                    **({"budget": budget} if budget else {}))
                validate(config)
                sample = training_sample(config)
                resumed = _resume(config, unfinished, lr, seed, log)
                rows.extend(resumed["rows"])
                clock = {"start": time.perf_counter(), "eval": 0.0,
                         "before": resumed["train_s"]}

                def on_epoch(epoch, student, lr=lr, seed=seed, clock=clock, depth=depth,
                             baseline=baseline):
                    if epoch + 1 not in eval_epochs:
                        return
                    t0 = time.perf_counter()
                    train_s = clock["before"] + t0 - clock["start"] - clock["eval"]
                    for r in _dev_macro(student, teacher, suite_list, EmbeddingCache()):
                        ref = baseline[(r["task"], r["protocol"])]
                        rows.append({"teacher": teacher_name, "method": method,
                                     "layers": depth, "lr": lr,
                                     "seed": seed, "epoch": epoch + 1, "task": r["task"],
                                     "protocol": r["protocol"], "value": r["value"],
                                     "baseline": ref, "delta": r["value"] - ref,
                                     "train_s": train_s, "device": device,
                                     "precision": precision})
                    clock["eval"] += time.perf_counter() - t0
                    if out is not None:
                        table = pd.DataFrame(rows, columns=V2_COLUMNS)
                        atomic_write(out, lambda tmp: table.to_csv(tmp, index=False))
                    mean = pd.DataFrame(rows[-4:])["delta"].mean()
                    log(f"{teacher_name} {method} L{depth} lr={lr:.2g} seed={seed} "
                        f"epoch={epoch + 1}: mean dev delta {mean:+.4f} "
                        f"({train_s:.0f} s training)")

                student = load_encoder("me5-small", depth, device=device)
                student.precision = precision
                distill(config.training, sample.pairs, progress=False, student=student,
                        teacher=teacher, teacher_states=states, on_epoch=on_epoch,
                        out_dir=checkpoint_dir(config), checkpoint_s=CHECKPOINT_S)
                discard_checkpoint(config)
    return pd.DataFrame(rows, columns=V2_COLUMNS)


def _resume(config, unfinished: pd.DataFrame, lr: float, seed: int, log) -> dict:
    """What a tuning run cut short leaves to resume from: the rows of ``unfinished`` (read
    from the sweep's file) for this (lr, seed) up to the epochs its checkpoint
    (:func:`~optical_lib.experiment.resumable_checkpoint`) holds, and the seconds of
    training before it. Without a usable checkpoint, nothing (the run starts over)."""
    found = resumable_checkpoint(config)
    if found is None:
        return {"rows": [], "train_s": 0.0}
    mine = unfinished[(unfinished["teacher"] == config.teacher)
                      & (unfinished["method"] == config.method)
                      & (unfinished["layers"] == config.layers)
                      & ((unfinished["lr"] - lr).abs() <= 1e-9 * lr)
                      & (unfinished["seed"] == seed)
                      & (unfinished["epoch"] <= found["epochs_done"])]
    log(f"resuming lr={lr:.2g} seed={seed} from its checkpoint after epoch "
        f"{found['epochs_done']} (step {found['step']}), {len(mine)} row(s) kept")
    return {"rows": mine.to_dict("records"), "train_s": found["train_s"]}


def _head(suite, n: int):
    """The suite with each task cut to its first ``n`` sentences (queries and documents)."""
    from . import data as d
    from .protocol import Suite

    tasks = []
    for t in suite.tasks:
        qids = list(t.queries)[:n]
        docs = {doc for q in qids for doc in t.qrels[q]}
        keep = [doc for doc in t.corpus][:n]
        corpus = {doc: t.corpus[doc] for doc in dict.fromkeys([*keep, *docs])}
        tasks.append(d.RetrievalTask(t.name, corpus, {q: t.queries[q] for q in qids},
                                     {q: t.qrels[q] for q in qids}, t.query_lang, t.doc_lang))
    return Suite(suite.name, tuple(tasks), suite.english, suite.symmetric)


#: The convergence rule: the fewest evaluated epochs whose mean dev Δ is within this much
#: (nDCG@10) of the best evaluated epoch count.
CONVERGED_WITHIN = 0.01


def choose_epochs(table: pd.DataFrame) -> pd.DataFrame:
    """Per (teacher, depth, lr): the mean dev Δ per evaluated epoch, and the epoch count
    the convergence rule picks (:data:`CONVERGED_WITHIN`); ``still_rising`` when the
    last evaluated epoch is the best one by more than that margin over the one before."""
    out = []
    table = _with_method(table)
    for key, part in table.groupby(["teacher", "method", "layers", "lr"]):
        means = part.groupby("epoch")["delta"].mean().sort_index()
        best = means.max()
        chosen = int(means[means >= best - CONVERGED_WITHIN].index.min())
        rising = len(means) > 1 and means.iloc[-1] - means.iloc[-2] > CONVERGED_WITHIN
        out.append({"teacher": key[0], "method": key[1], "layers": key[2], "lr": key[3],
                    "epochs": chosen,
                    "dev_delta": float(means[chosen]), "best_dev_delta": float(best),
                    "max_epoch": int(means.index.max()), "still_rising": bool(rising),
                    "seeds": part["seed"].nunique()})
    return pd.DataFrame(out)


def choose_v2(table: pd.DataFrame) -> pd.DataFrame:
    """The rule: per (teacher, objective, depth), the (lr, epoch) with the largest mean dev
    Δ over seeds, protocols and directions, among the cells that every seed reached.
    Returns one row per (teacher, objective, depth) with the choice, its mean Δ, and the
    flags ``lr_on_edge`` and ``epoch_on_edge``."""
    out = []
    table = _with_method(table)
    for (teacher, method, depth), part in table.groupby(["teacher", "method", "layers"]):
        means = part.groupby(["lr", "epoch"])["delta"].mean()
        # a sweep cut short: only (lr, epoch) cells every seed reached compete
        seeds = part.groupby(["lr", "epoch"])["seed"].nunique()
        means = means[seeds == seeds.max()]
        lr, epoch = means.idxmax()
        lrs = sorted(means.index.get_level_values("lr").unique())
        epochs = sorted(means.index.get_level_values("epoch").unique())
        out.append({"teacher": teacher, "method": method, "layers": depth, "lr": lr,
                    "epochs": int(epoch),
                    "dev_delta": float(means.max()),
                    "lr_on_edge": lr in (lrs[0], lrs[-1]),
                    "epoch_on_edge": epoch == epochs[-1],
                    "seeds": part["seed"].nunique()})
    return pd.DataFrame(out)


#: Seeds a convergence check needs before its epoch count replaces the sweep's.
CONVERGENCE_SEEDS = 2


def with_convergence(choice: pd.DataFrame, conv: pd.DataFrame | None) -> pd.DataFrame:
    """The sweep's choice with its epoch count settled by the convergence check.

    The check trains at a chosen learning rate for longer than the sweep (its own, longer
    schedule) and evaluates on the way. Where its runs that reached their last evaluated
    epoch cover :data:`CONVERGENCE_SEEDS` seeds at the choice's (teacher, objective,
    depth, lr), the epoch count becomes :func:`choose_epochs` on them (the fewest
    evaluated epochs within :data:`CONVERGED_WITHIN` of the best) and ``epoch_on_edge``
    becomes "still rising at the check's last epoch"; ``epochs_from`` says which applied,
    ``check_epochs`` how far the check went."""
    choice = choice.copy()
    choice["epochs_from"] = "sweep"
    choice["check_epochs"] = 0
    if conv is None or conv.empty:
        return choice
    conv = _with_method(conv)
    for i, row in choice.iterrows():
        part = conv[(conv["teacher"] == row["teacher"]) & (conv["method"] == row["method"])
                    & (conv["layers"] == row["layers"])
                    & ((conv["lr"] - row["lr"]).abs() <= 1e-9 * row["lr"])]
        if part.empty:
            continue
        last = part.groupby("seed")["epoch"].max()
        done = last[last == last.max()].index
        if len(done) < CONVERGENCE_SEEDS:
            continue
        epochs = choose_epochs(part[part["seed"].isin(done)]).iloc[0]
        choice.loc[i, ["epochs", "dev_delta", "epoch_on_edge", "epochs_from",
                       "check_epochs"]] = [int(epochs["epochs"]), epochs["dev_delta"],
                                           bool(epochs["still_rising"]), "convergence",
                                           int(epochs["max_epoch"])]
    choice["epochs"] = choice["epochs"].astype(int)
    choice["check_epochs"] = choice["check_epochs"].astype(int)
    choice["epoch_on_edge"] = choice["epoch_on_edge"].astype(bool)
    return choice


def choose_objective(rows: pd.DataFrame, metric: str = "nDCG@10") -> pd.DataFrame:
    """The study's objective rule, fixed before the study grid runs: among the trained
    objectives of the ablation (development languages only), the one with the largest dev
    Δ ``metric`` averaged over depths, both protocols and both FLORES directions.

    ``rows`` are result rows (``report.load_profile(..., "ablation")``). Returns one row per
    objective, best first, with its mean dev Δ, the depths it ran at and ``chosen``; raises
    when an objective lacks a depth another one has (the means would not compare)."""
    from .protocol import DELTA

    dev = rows[(rows["scope"] == "macro") & (rows["metric"] == DELTA + metric)
               & (rows["split"] == "dev") & rows["method"].isin(TRAINED_METHODS)]
    if dev.empty:
        raise ValueError("no dev Δ rows of trained objectives: has the ablation run?")
    depths = dev.groupby("method")["layers"].agg(
        lambda x: ", ".join(str(int(d)) for d in sorted(set(x))))
    if depths.nunique() > 1:
        raise ValueError(f"the objectives ran at different depths ({depths.to_dict()}): "
                         "finish the ablation before choosing")
    table = (dev.groupby("method")["value"].mean().rename("mean_dev_delta").reset_index()
             .sort_values("mean_dev_delta", ascending=False, ignore_index=True))
    table["depths"] = table["method"].map(depths)
    table["chosen"] = table.index == 0
    return table


#: The arithmetic the study's settings run in, and so the sweeps their tuning reads.
STUDY_PRECISION = "bf16"


def _tables(folder: Path, pattern: str, method: str, precision: str
            ) -> tuple[list[Path], pd.DataFrame | None]:
    """The sweep-format tables ``folder/pattern`` (sorted) and their rows of one objective
    and precision, concatenated (``None`` when there is no file)."""
    paths = sorted(folder.glob(pattern))
    if not paths:
        return paths, None
    table = pd.concat([read_sweep(p) for p in paths], ignore_index=True)
    return paths, table[(table["method"] == method) & (table["precision"] == precision)]


def study_choice(results_dir: str | Path = "results",
                 precision: str = STUDY_PRECISION) -> dict:
    """The tuning rule applied to the committed sweeps of the study's objective.

    The objective is :func:`choose_objective` on the ablation profile; its rows of every
    ``tuning-v2/sweep-*.csv`` in ``precision`` go through :func:`choose_v2`. A choice is
    ``used`` by the study's settings when its learning rate is not on the edge of the grid
    and at least two seeds stand behind it (an epoch count at the last evaluated epoch is
    used as well, and stays flagged). Returns the record ``--choose`` writes."""
    from .report import load_profile

    results_dir = Path(results_dir)
    rows, missing = load_profile(results_dir, "ablation")
    if missing:
        raise ValueError(f"the ablation is not finished ({len(missing)} settings missing): "
                         "the study's objective is chosen on all of it")
    method = choose_objective(rows).iloc[0]["method"]
    paths, sweep = _tables(results_dir / "tuning-v2", "sweep-*.csv", method, precision)
    if sweep is None or sweep.empty:
        raise ValueError(f"no {precision} sweep of the study's objective {method!r} in "
                         f"{results_dir / 'tuning-v2'}")
    choice = choose_v2(sweep)
    conv_paths, conv = _tables(results_dir / "tuning-v2", "convergence-*.csv", method,
                               precision)
    choice = with_convergence(choice, conv)
    choice["used"] = ~choice["lr_on_edge"] & (choice["seeds"] >= 2)
    return {"objective": method, "precision": precision,
            "sweeps": [p.name for p in paths],
            "convergence": [p.name for p in conv_paths],
            "choices": [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
                        for r in choice.to_dict("records")]}


def dev_scores(config: ExperimentConfig, student, teacher) -> dict[str, float]:
    """Macro RR@10 on the development languages, per retrieval protocol."""
    tasks = {"dev": [data.tatoeba_task(lang) for lang in data.DEV_LANGS_TATOEBA]}
    rows, _ = evaluate_student(config, student, teacher, tasks=tasks, n_boot=100)
    names = {"dev": "dev_rr10", "dev" + TEACHER_DOCS: "dev_rr10_teacher_docs"}
    return {names[r["task"]]: r["value"] for r in rows
            if r["scope"] == "macro" and r["metric"] == "RR@10"}


def sweep(layers: list[int], lrs: list[float], method: str = "optical", epochs: int = 3,
          k_langs: int = 8, budget: int = 1000) -> pd.DataFrame:
    teacher = load_encoder("me5-small")  # every student is scored and trained with it
    rows = []
    for depth in layers:
        base = ExperimentConfig.from_parameters(layers=depth, method="none", eval_tatoeba=(),
                                                eval_xquad=())
        rows.append({"layers": depth, "method": "none", "lr": None, "epochs": 0,
                     **dev_scores(base, load_encoder("me5-small", depth), teacher),
                     "train_s": 0.0})
        for lr in lrs:
            config = ExperimentConfig.from_parameters(
                layers=depth, method=method, k_langs=k_langs, budget=budget, lr=lr,
                epochs=epochs, eval_tatoeba=(), eval_xquad=())
            validate(config)
            start = time.perf_counter()
            student, _ = distill(config.training, training_sample(config).pairs,
                                 teacher=teacher)
            train_s = time.perf_counter() - start
            rows.append({"layers": depth, "method": method, "lr": lr, "epochs": epochs,
                         **dev_scores(config, student, teacher), "train_s": train_s})
            print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def main_v2(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Design v2: convergence check and sweep")
    parser.add_argument("--design", choices=["v2"])
    parser.add_argument("--teacher", default="me5-small")
    parser.add_argument("--method", default="optical", choices=sorted(TRAINED_METHODS),
                        help="the objective swept (default: centred OPTICAL)")
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 3, 6, 12])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=max(EVAL_EPOCHS))
    parser.add_argument("--eval-epochs", type=int, nargs="+", default=None,
                        help=f"evaluate after these epochs (default: {EVAL_EPOCHS} up to "
                             "--epochs)")
    parser.add_argument("--lrs", type=float, nargs="+", default=None,
                        help="learning rates for every depth (default: per-depth grid)")
    parser.add_argument("--lr-factors", type=float, nargs="+", default=None,
                        help="per-depth grid: the depth's DEFAULT_LR times these factors")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", choices=["bf16"], default=None,
                        help="bf16 autocast for training and evaluation (default: float32)")
    parser.add_argument("--dev-sentences", type=int, default=None,
                        help="first N sentences per development language (default: all)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dry-run", action="store_true",
                        help="validate and list the runs, train nothing")
    args = parser.parse_args(argv)
    lrs = {d: args.lrs for d in args.layers} if args.lrs else None
    eval_epochs = tuple(e for e in (args.eval_epochs or EVAL_EPOCHS) if e <= args.epochs)
    if not eval_epochs or max(eval_epochs) != args.epochs:
        parser.error(f"--eval-epochs must include --epochs ({args.epochs}): the last epoch "
                     "is where a run counts as finished")
    if args.dry_run:
        from .experiment import DEFAULT_LR

        for depth in args.layers:
            grid = lrs[depth] if lrs else [DEFAULT_LR[depth] * f
                                           for f in (args.lr_factors or LR_FACTORS)]
            for lr in grid:
                validate(ExperimentConfig.from_parameters(
                    design="v2", layers=depth, method=args.method, teacher=args.teacher,
                    k_langs=8, draw=TUNING_DRAW, lr=lr, epochs=args.epochs, split="dev"))
                print(f"{args.teacher} {args.method} L{depth} lr={lr:.3g} seeds={args.seeds} "
                      f"epochs={args.epochs} evaluated after {list(eval_epochs)}")
        return 0
    table = sweep_v2(args.teacher, args.layers, args.seeds, args.epochs, eval_epochs, lrs,
                     args.device, args.dev_sentences, out=args.out,
                     lr_factors=tuple(args.lr_factors) if args.lr_factors else None,
                     method=args.method, amp=args.amp)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out, lambda tmp: table.to_csv(tmp, index=False))
    print(choose_v2(table).to_string(index=False))
    return 0


def main_choose(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Write the tuning rule's choice")
    parser.add_argument("--choose", action="store_true")
    parser.add_argument("--results", type=Path, default=ResultsLayout().root)
    parser.add_argument("--dry-run", action="store_true",
                        help="print the rule's choice, write nothing")
    args = parser.parse_args(argv)
    try:
        record = study_choice(args.results)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        for r in record["choices"]:
            print(f"{r['teacher']} {r['method']} L{r['layers']} lr={r['lr']:.3g} "
                  f"epochs={r['epochs']} ({r['epochs_from']}) used={r['used']}")
        return 0
    layout = ResultsLayout(args.results)
    out = layout.tuning_v2 / "chosen.json"
    atomic_write_json(out, record)
    print(pd.DataFrame(record["choices"]).to_string(index=False))
    print(f"objective {record['objective']}, {record['precision']}; written to {out}")
    _refresh_grid_files(layout)
    return 0


def _refresh_grid_files(layout: ResultsLayout) -> None:
    """A new choice changes the run ids of the settings it tunes: re-make the profiles'
    ``grid.json`` and say which finished runs it supersedes."""
    from . import experiment
    from .grid import refresh_grid_files

    experiment._tuned_v2.cache_clear()  # the settings read the file just written
    for profile, superseded in refresh_grid_files(layout).items():
        print(f"{layout.grid_file(profile)}: re-made (run ids changed)")
        if superseded:
            print(f"  warning: {len(superseded)} finished run(s) are no longer planned by "
                  f"{profile} (superseded; their files stay): {', '.join(superseded)}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--choose" in argv:
        return main_choose(argv)
    if "--design" in argv:
        return main_v2(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 3, 6, 12])
    parser.add_argument("--lrs", type=float, nargs="+", default=[5e-5, 2e-4, 5e-4])
    parser.add_argument("--method", default="optical")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ResultsLayout().tuning)
    args = parser.parse_args(argv)
    table = sweep(args.layers, args.lrs, args.method, args.epochs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.exists():  # extend an earlier sweep; a repeated point replaces the old one
        table = pd.concat([pd.read_csv(args.out), table], ignore_index=True)
        keys = ["layers", "method", "lr", "epochs"]
        table = table.drop_duplicates(keys, keep="last").sort_values(keys, na_position="first")
    atomic_write(args.out, lambda tmp: table.to_csv(tmp, index=False))
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
