# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Protocol v2: baselines, tuning and the objective ablation
#
# This page reads result files only: the grid profiles `baselines` and `ablation`
# (`results/runs/<run_id>/results.json`) and the tuning tables in `results/tuning-v2/`. It is
# the ground the rebuilt study stands on: what every student is compared with, how its
# training was set, and what the centred cost changes. The full v2 grid and its analysis come
# after it. All numbers are nDCG@10 macro-averaged over languages unless a table says
# otherwise. The code is `notebooks/protocol.py` and `optical_lib/report.py`.

# %% tags=["parameters", "remove-cell"]
results_dir = "results"

# %% tags=["remove-cell"]
import json
from pathlib import Path

import pandas as pd
from IPython.display import Markdown
from myst_nb import glue

from optical_lib import multiway, plots, report
from optical_lib.analysis import markdown_table
from optical_lib.grid import STUDY_DRAWS

base, base_missing = report.load_profile(results_dir, "baselines")
ablation, ablation_missing = report.load_profile(results_dir, "ablation")
tuning = Path(results_dir) / "tuning-v2"
counts = report.languages_per_task(base)
for name, task in (("n_flores", "flores-x-eng"), ("n_tatoeba", "tatoeba-x-eng"),
                   ("n_xquad", "xquad-r-x-eng")):
    glue(name, str(counts.get(task, "no")), display=False)


def table(df, digits=3, index=True):
    return Markdown(markdown_table(df, digits=digits, index=index))


def missing_note(missing, what):
    if not missing:
        return None  # no output (an empty Markdown would show its repr)
    return Markdown(f"*Not finished yet: {len(missing)} settings of `{what}` "
                    f"({', '.join(missing)}); the tables show the finished ones.*")


# %% [markdown]
# ## The matched baselines
#
# Every suite under the **student** protocol (the model encodes both sides) for the zero-shot
# students of each depth and for the MiniLM teacher encoding both sides, with **BM25** as the
# floor (bm25s, no stemming: on cross-lingual pairs it only matches shared surface tokens:
# names, numbers, loanwords). Evaluation languages: FLORES-200 devtest
# ({glue:text}`n_flores` languages, both directions), Tatoeba ({glue:text}`n_tatoeba`),
# XQuAD-R ({glue:text}`n_xquad` languages X→eng, and English questions → English answer
# sentences).

# %% tags=["remove-input"]
missing_note(base_missing, "baselines")

# %% tags=["remove-input"]
student_table = report.baselines_table(base, "student")
table(student_table)

# %% [markdown]
# Under OPTICAL's protocol the frozen teacher encodes the English side: queries for eng→X,
# documents otherwise. Zero-shot, the truncated students' vectors do not live in the teacher's
# space (and not at all in MiniLM's), so these are the floors that distillation starts from.

# %% tags=["remove-input"]
parts = []
for name, label in report.TEACHER_NAMES.items():
    t = report.baselines_table(base, "teacher", name, lexical=False)
    t.index = [f"{i} · teacher {label}" for i in t.index]
    parts.append(t)
table(pd.concat(parts))

# %% tags=["remove-cell"]
if len(student_table):
    for system in student_table.index:
        for suite in student_table.columns:
            key = f"base-{system}-{suite}".replace(" ", "-").replace("→", "-")
            glue(key, f"{student_table.loc[system, suite]:.3f}", display=False)

# %% [markdown]
# ## The objective ablation
#
# Per depth: **centred OPTICAL** (the cosine cost is centred on the teacher's mean token
# vector of the batch), **plain OPTICAL** (the paper's cost), **sentence MSE**, and
# **centred OPTICAL + MSE**, each trained 8 epochs on the same draw (k = 8, 1,984 pairs) with
# the depth's v1 learning rate, evaluated on the development languages only. Collapse
# diagnostics are computed on the student's sentence vectors of the development languages'
# FLORES sentences: the mean cosine between distinct sentences (1 when every sentence maps to
# the same vector) and the effective rank of the matrix of vectors (Roy & Vetterli 2007; 384
# at most). The zero-shot rows give the starting point.

# %% tags=["remove-input"]
missing_note(ablation_missing, "ablation")

# %% tags=["remove-input"]
if len(ablation):
    abl = report.ablation_table(ablation)
    out = table(abl, index=False)
else:
    abl = None
    out = Markdown("*The ablation has not run yet.*")
out

# %% tags=["remove-input"]
Markdown(report.ablation_sentences(abl) if abl is not None else "")

# %% [markdown]
# **The study's objective** is chosen from this table by a rule fixed in code before the
# study grid (`choose_objective` in `optical_lib/tune.py`): the trained objective with the
# largest dev Δ nDCG@10 averaged over depths, both protocols and both directions. It refuses
# to choose while an objective lacks a depth.

# %% tags=["remove-input"]
from optical_lib import tune  # noqa: E402

try:
    objectives = tune.choose_objective(ablation)
    objectives["objective"] = objectives["method"].map(report.METHOD_LABELS)
    best, second = objectives.iloc[0], objectives.iloc[1]
    lead = best["mean_dev_delta"] - second["mean_dev_delta"]
    out = Markdown(markdown_table(objectives[["objective", "mean_dev_delta", "depths"]],
                                  digits=3)
                   + f"\n\nThe rule picks **{best['objective']}** (mean dev Δ "
                   f"{best['mean_dev_delta']:+.3f}), {lead:.3f} ahead of "
                   f"{second['objective']}; the study grid is to train it.")
except ValueError as exc:
    objectives = None
    out = Markdown(f"*No objective is chosen yet: {exc}.*")
out

# %% [markdown]
# ## Tuning v2 and the convergence check
#
# The learning rate and the number of epochs per depth, teacher and objective are chosen on
# the six FLORES-200 development languages (lug, mos, knc, ory, shn, ilo; never reported as
# results) by the mean dev Δ nDCG@10 over both protocols and both directions, with 2 seeds.
# The rule is `choose_v2` in `optical_lib/tune.py`, fixed before the sweeps ran: the best
# (learning rate, epochs) cell among those every seed reached, flagged when the learning rate
# sits on the edge of the grid or the epoch count is the last one evaluated. A learning rate
# *collapses* when dev Δ stays below 0 at every evaluated epoch without recovering. The grid
# of learning rates is each depth's v1 value times 1/9, 1/3, 1, 3 and 9.
#
# ### Centred OPTICAL: the partial GPU sweep
#
# This sweep ran on a lent H200 GPU with 12–15 sweep processes sharing it and **ran out of
# device time**: only its logs came back, so the table holds the per-epoch mean dev Δ of each
# (depth, learning rate) as far as both seeds got; seed 0 went further, and its epoch-8
# column stands on one seed. The MiniLM teacher's sweep came back for L12 only.

# %% tags=["remove-input"]


def sweep_shown(sweep):
    shown = report.sweep_grid(sweep)
    shown["objective"] = shown["method"].map(report.METHOD_LABELS)
    shown["lr"] = shown["lr"].map(lambda x: f"{x:.2g}")
    shown["teacher"] = shown["teacher"].map(report.TEACHER_NAMES)
    first = ["teacher", "objective", "layers", "lr"]
    return shown[first + [c for c in shown.columns if c not in first + ["method"]]]


sweep_path = tuning / "gpu-sweep-partial.csv"
if sweep_path.exists():
    gpu = report.sweep_long(sweep_path)
    out = table(sweep_shown(gpu), index=False)
else:
    gpu = None
    out = Markdown("*The tuning sweep has not run yet.*")
out

# %% tags=["remove-input"]
Markdown(report.tuning_sentences(gpu) if gpu is not None else "")

# %% [markdown]
# ### Centred OPTICAL + MSE on the CPU
#
# Centred OPTICAL + MSE led the ablation at L2 and L3 when its sweep had to start (the L6
# rows were still running), so it was swept on this project's 2-core CPU in **bf16
# autocast** (`--amp bf16`: faster on CPUs with bf16 instructions;
# `benchmarks/bench_precision.py` measures by how much, and what it costs in accuracy), for
# the teachers, depths and learning rates below, up to 12 epochs. The grid is narrower than
# centred OPTICAL's (a third of, equal to and three times the v1 rate) because nine times and a
# ninth were far from the best there; the rule flags a choice on the edge of what ran. At L12
# with the me5-small teacher, where the student starts as its own teacher, the lower of the
# first two rates led at every evaluated epoch, so that grid was extended downwards instead
# of up to three times: one factor of three at a time while the lowest rate still led, to an
# 81st of the v1 rate (the table shows which rates ran at each depth).
#
# Most of these runs trained on the CPU. The MiniLM-taught L12 sweep, and the MiniLM
# convergence checks at L3 and L6 below, ran on a lent H100 GPU (bf16 autocast on CUDA, six
# and four tuning processes sharing the card); the device column says where each row
# trained. The two devices do not round bf16 arithmetic identically, and no setting has run
# on both, so how far that moves dev Δ is not measured.

# %% tags=["remove-input"]
# one file per teacher and process, e.g. sweep-optical-mse-minilm-l6-bf16-L2.csv
bf16_paths = sorted(tuning.glob("sweep-optical-mse-*bf16*.csv"))
if bf16_paths:
    otmse = pd.concat([report.sweep_long(p) for p in bf16_paths], ignore_index=True)
    out = table(sweep_shown(otmse), index=False)
else:
    otmse = None
    out = Markdown("*This sweep has not run yet.*")
out

# %% tags=["remove-input"]
words = report.tuning_sentences(otmse) if otmse is not None else ""
if objectives is not None and objectives.iloc[0]["method"] != "optical+mse":
    words += ("\n\n**The objective rule now picks another objective than the one swept "
              "here: the study's objective still needs its own sweep.**")
Markdown(words)

# %% [markdown]
# **bf16 against float32.** One run of this sweep (L2, a third of the v1 learning rate,
# seed 0) also ran in float32 before the sweep moved to bf16; the same run in both
# arithmetics, per evaluated epoch:

# %% tags=["remove-input"]
fp32_path = tuning / "sweep-optical-mse-me5-small.csv"
if fp32_path.exists() and otmse is not None:
    fp32 = report.sweep_long(fp32_path)
    keys = ["teacher", "method", "layers", "lr", "seed", "epoch"]
    pair = (fp32.groupby(keys)["delta"].mean().rename("float32").to_frame()
            .join(otmse.groupby(keys)["delta"].mean().rename("bf16"), how="inner")
            .reset_index())
    pair["bf16 - float32"] = pair["bf16"] - pair["float32"]
    pair["lr"] = pair["lr"].map(lambda x: f"{x:.2g}")
    out = (table(pair.drop(columns=["teacher", "method"]), index=False) if len(pair)
           else Markdown("*The bf16 run of this setting has not finished yet.*"))
else:
    out = Markdown("*Not both runs are there yet.*")
out

# %% [markdown]
# ### A first convergence check: centred OPTICAL to 16 epochs
#
# Before the objective was chosen, a first check continued the v1 learning rate of L2
# (centred OPTICAL, float32, one seed, all development sentences) to 16 epochs. The
# convergence rule (`choose_epochs`) takes the fewest evaluated epochs within 0.01 of the
# best.

# %% tags=["remove-input"]
conv_path = tuning / "convergence-me5-small.csv"
if conv_path.exists():
    conv = pd.read_csv(conv_path)
    wide = report.convergence_table(conv)
    fig = plots.convergence(conv)
    glue("convergence", fig, display=False)
    plots.close(fig)
    chosen = tune.choose_epochs(conv)
    words = "; ".join(
        f"{report.METHOD_LABELS.get(r['method'], r['method'])} L{int(r['layers'])} at lr "
        f"{r['lr']:.2g}: {int(r['epochs'])} epochs (dev Δ {r['dev_delta']:+.3f}, best "
        f"{r['best_dev_delta']:+.3f} after {int(r['max_epoch'])} evaluated)"
        + (", still rising" if r["still_rising"] else "")
        for _, r in chosen.iterrows())
    out = Markdown(markdown_table(wide.drop(columns=["teacher"]), digits=3)
                   + f"\n\nThe convergence rule: {words}.")
else:
    out = Markdown("*The convergence check has not run yet.*")
out

# %% [markdown]
# ```{glue:figure} convergence
# :name: fig-convergence
#
# Dev Δ nDCG@10 over training epochs per depth (me5-small teacher, each depth's learning
# rate, one seed), per protocol and direction.
# ```

# %% [markdown]
# ### The convergence check of the study's objective
#
# The sweep above stops at 12 epochs, and its best cells were still rising there. The
# convergence check trains the study's objective (bf16) at each depth's chosen learning rate
# for 24 epochs, two seeds, and evaluates on the way. Its runs have their own, longer
# schedule (linear decay over 24 epochs), so its epoch-12 value is not the sweep's. Once both
# seeds finished, the convergence rule on these runs settles the depth's epoch count
# (`tune.with_convergence`); until then the sweep's stands.

# %% tags=["remove-input"]
conv2_paths = sorted(tuning.glob("convergence-optical-mse-*.csv"))
if conv2_paths:
    conv2 = pd.concat([tune.read_sweep(p) for p in conv2_paths], ignore_index=True)
    fig = plots.convergence(conv2)
    glue("convergence_study", fig, display=False)
    plots.close(fig)
    wide = report.convergence_table(conv2)
    wide["teacher"] = wide["teacher"].map(report.TEACHER_NAMES).fillna(wide["teacher"])
    wide["lr"] = wide["lr"].map(lambda x: f"{x:.2g}")
    seeds = conv2.groupby(["teacher", "layers", "seed"])["epoch"].max().unstack()
    reached = "; ".join(f"L{d} ({report.TEACHER_NAMES.get(t, t)} teacher): "
                        + ", ".join(f"seed {s} to epoch {int(e)}"
                                    for s, e in row.dropna().items())
                        for (t, d), row in seeds.iterrows())
    out = Markdown(markdown_table(wide, digits=3) + f"\n\nHow far the runs got: {reached}.")
else:
    conv2 = None
    out = Markdown("*The convergence check of the study's objective has not run yet.*")
out

# %% [markdown]
# ```{glue:figure} convergence_study
# :name: fig-convergence-study
#
# The study's objective (centred OPTICAL + MSE, bf16) trained for 24 epochs at each depth's
# chosen learning rate: dev Δ nDCG@10 per protocol and direction (mean over the seeds).
# ```

# %% [markdown]
# ### The values the study uses
#
# `python -m optical_lib.tune --choose` applies the rules to the committed sweeps and checks
# and writes `results/tuning-v2/chosen.json`; the study's settings read it. A choice is
# *used* when its learning rate is not on the edge of the grid and two seeds stand behind
# it; the study's grid refuses to train a depth and teacher without a used choice
# (`grid.untuned`), rather than fall back to an untuned rate.

# %% tags=["remove-input"]
chosen_path = tuning / "chosen.json"
if chosen_path.exists():
    chosen = pd.DataFrame(json.loads(chosen_path.read_text())["choices"])
    chosen["teacher"] = chosen["teacher"].map(report.TEACHER_NAMES)
    chosen["method"] = chosen["method"].map(report.METHOD_LABELS)
    chosen["lr"] = chosen["lr"].map(lambda x: f"{x:.2g}")
    cols = {"teacher": "teacher", "method": "objective", "layers": "L", "lr": "lr",
            "epochs": "epochs", "epochs_from": "epochs from", "dev_delta": "dev Δ",
            "lr_on_edge": "lr on edge", "epoch_on_edge": "still rising", "seeds": "seeds",
            "used": "used"}
    out = table(chosen[[c for c in cols if c in chosen.columns]].rename(columns=cols),
                index=False)
else:
    out = Markdown("*No choice has been written yet.*")
out

# %% [markdown]
# ## The learning curve
#
# The `curve` profile distils each depth with the study's objective (in bf16) on growing
# prefixes of the whole shuffled pool
# (NTREX-128 and Tatoeba pairs of the training languages, from 1,984 pairs to the whole pool
# of {glue:text}`curve_pool_pairs` pairs; pairs whose English side is an evaluation sentence
# are left out). Unlike the core grid, the
# English side is **not** held fixed here: more pairs means more English content as well as
# more languages. It asks how far bitext distillation takes each depth and whether any small
# student reaches BM25.

# %% tags=["remove-cell"]
glue("curve_pool_pairs", f"{multiway.pool_size():,}", display=False)

# %% tags=["remove-input"]
curve, curve_missing = report.load_profile(results_dir, "curve")
if len(curve):
    both = [f"**{name}**\n\n" + markdown_table(report.curve_table(curve, base, proto).reset_index(),
                                                digits=3)
            for name, proto in (("Student protocol", "student"),
                                ("OPTICAL's protocol (me5-small teacher)", "teacher"))]
    tie = report.rerun_spread(results_dir) or 0.0
    said = [f"*{name}.* " + report.curve_sentences(report.curve_table(curve, base, proto),
                                                   tie=tie)
            for name, proto in (("Student protocol", "student"), ("OPTICAL's protocol",
                                                                  "teacher"))]
    where = report.curve_devices(results_dir, curve)
    on_gpu = where.get("cuda", [])
    devices = ("All rows trained on the CPU." if not on_gpu else
               f"Trained on a lent GPU: {', '.join(on_gpu)}; every other row on "
               "the CPU. A depth's curve is compared within itself, so a depth is given to "
               "one device where it can be (see *The same setting computed twice* below).")
    if pending := report.curve_pending(curve_missing):
        devices += (f" Not run yet ({len(pending)} of "
                    f"{len(pending) + curve['run_id'].nunique()} settings): {', '.join(pending)}.")
    rules = report.curve_devices(results_dir, curve, "teacher_states")
    if rules.get("before"):
        devices += (" Computed before the fixed-length teacher-state rule (see the "
                    "reproducibility page): " + (", ".join(rules["before"])
                                                 if len(rules) > 1 else "every row") + ".")
    out = Markdown("\n\n".join(both) + "\n\nThe zero-shot rows are the float32 baselines "
                   "of the `baselines` profile; the students ran in bf16, and their Δ in "
                   "their own run records is over a bf16 zero-shot model. " + devices
                   + "\n\nAgainst BM25 on passage retrieval (one run per row, no interval; "
                   f"a margin of at most {tie:.3f} either way counts as level with BM25: "
                   "the most a rerun of one setting moved, see *The same setting computed "
                   "twice*):\n\n" + "\n\n".join(said)
                   + "\n\nDoes a student still retrieve in English as well as before it was "
                   "distilled? " + (report.curve_delta_sentences(curve) or
                                    "No learning-curve run was scored on XQuAD-R eng→eng."))
else:
    out = Markdown("*The learning curve has not run yet: its large budgets need a GPU or "
                   "many CPU-hours (see the reproducibility page).*")
out


# %% tags=["remove-cell"]
points = report.curve_points(curve, base, multiway.pool_size()) if len(curve) else curve
fig = plots.learning_curve(points if len(points) else pd.DataFrame(
    columns=["system", "layers", "pairs", "protocol", "suite", "value"]))
glue("fig-curve", fig, display=False)
plots.close(fig)

# %% [markdown]
# ```{glue:figure} fig-curve
# :name: fig-curve
#
# The learning curve: macro nDCG@10 against the number of training pairs (log scale; the
# largest is the whole pool), a colour per student depth, solid under the student protocol
# and dashed under OPTICAL's (me5-small teacher); each depth starts at its zero-shot model
# (0 pairs), and the black line is BM25. One run per point, no interval.
# ```

# %% [markdown]
# ## The same setting computed twice
#
# A trained student's numbers carry the rounding of its training: bf16 is not rounded
# identically on a CPU and a GPU, nor when the teacher's vectors are padded differently, and
# training amplifies rounding. Run ids name neither the device nor the rule, so a setting
# computed on a GPU stands where the same setting computed on the CPU would. To see how far
# such differences move a result, some published settings were computed a second time
# (`results/reruns/`); each table compares the two computations' macro nDCG@10.

# %% tags=["remove-input"]
second = report.reruns(results_dir)
where = {"cpu": "the CPU", "cuda": "a GPU"}
if second:
    parts = []
    for run_id, label in second:
        check = report.rerun_table(results_dir, run_id, label)
        diff = check["rerun − published"].abs()
        worst = check["largest difference of one language"].max()
        suite, proto = diff.idxmax()
        parts.append(
            f"**`{run_id}`** (published from {where[report.run_device(results_dir, run_id)]}) "
            f"and {report.RERUNS[label]}\n\n" + markdown_table(check.reset_index(), digits=4)
            + f"\n\nThe macro nDCG@10 moved by at most {diff.max():.4f} ({suite}, {proto} "
            f"protocol) and one language's by at most {worst:.4f}.")
    parts.append(
        f"In these reruns a single run's macro nDCG@10 moved by up to "
        f"{report.rerun_spread(results_dir):.3f} from "
        "rounding alone, so a difference between two single runs smaller than that cannot be "
        f"told from rounding; the study's contrasts rest on {STUDY_DRAWS} language draws per "
        "cell. It is also why a GPU takes whole arms, whole language draws or a whole depth, "
        "never part of a cell, why a depth's learning "
        "curve is kept on one device where it can be, and why the core grid was restarted "
        "under one teacher-state rule.")
    out = Markdown("\n\n".join(parts))
else:
    out = Markdown("*No setting has been computed twice yet.*")
out
