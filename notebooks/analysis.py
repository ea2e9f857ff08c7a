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
# # Results
#
# This page reads only the result files of one profile of the grid
# (`results/<profile>/summary.parquet`, the
# per-query files) and recomputes no metric. Every number in the text below is glued from a
# computation on this
# page.

# %% tags=["parameters"]
results_dir = "results"  # written by python -m optical_lib.grid
profile = "medium"  # the grid profile this page reports (the published one)
metric = "RR@10"
task = "tatoeba"

# %%
from IPython.display import Markdown, display
from myst_nb import glue

from optical_lib import analysis, plots

study = analysis.load_study(results_dir, profile)
glue("profile", study.profile)
glue("n_settings", str(study.summary["run_id"].nunique()))
Markdown(f"Profile **{study.profile}**: {study.summary['run_id'].nunique()} settings, "
         f"{len(study.summary)} result rows. Metric shown: {metric} on {task} "
         "(macro over languages).")

# %% [markdown]
# ## All settings
#
# Macro metric per suite and setting: `mean` over seeds, its spread across seeds (`std`, `min`,
# `max`) and the 95% t-interval across seeds (`ci_low`, `ci_high`; empty with a single seed).

# %%
analysis.settings_table(study, metric).round(3)

# %% [markdown]
# ## Hyper-parameters
#
# The learning-rate sweep on the development languages (never evaluation languages) that chose
# each depth's learning rate: macro RR@10 with student-encoded documents (`dev_rr10`, the primary
# protocol) and with teacher-encoded documents; `none` is the zero-shot model.

# %%
tuning = analysis.tuning_table(results_dir)
tuning if tuning is not None else Markdown("No tuning sweep in this results directory.")

# %% [markdown]
# ## Size × diversity
#
# The heat map shows the macro metric of OPTICAL students over student depth L (rows) and number
# of training languages k at a fixed budget of pairs (columns).

# %%
fig = plots.heatmap(study.summary, metric, task)
display(fig)
plots.close(fig)

# %% [markdown]
# ## Scaling with model size
#
# The same numbers against the non-embedding parameter count, one line per k; the dashed line is
# the zero-shot (un-distilled) model of the same depth.

# %%
fig = plots.curves_vs_params(study.summary, metric, task)
display(fig)
plots.close(fig)

# %% [markdown]
# ## Methods and suites

# %%
fig = plots.methods_compare(study.summary, metric)
display(fig)
plots.close(fig)

# %% [markdown]
# ## Per language
#
# Gain of each distilled setting over the zero-shot model of the same depth, per evaluation
# language.

# %%
fig = plots.language_strip(study.summary, metric, task)
display(fig)
plots.close(fig)

# %% [markdown]
# ## Resource classes
#
# Macro metric within each Joshi et al. (2020) resource class of the evaluation languages
# (`unknown` where the class could not be sourced).

# %%
analysis.class_table(study, metric, task)

# %% [markdown]
# ## Significance
#
# Each distilled setting against the zero-shot model of the same depth, per language: paired
# randomisation test on the same queries, Holm–Bonferroni correction across the languages of a
# setting (α = 0.05).

# %%
tests = analysis.versus_baseline(study, metric, task)
analysis.win_loss(tests)

# %% [markdown]
# ## Regression
#
# Ordinary least squares of the macro metric of every OPTICAL run on log₂(non-embedding
# parameters) and log₂(k): each coefficient is the change per doubling, with its 95% confidence
# interval.

# %%
regression = analysis.scaling_regression(study, metric, task)
(regression.round(4) if regression is not None
 else Markdown("Too few settings in this profile for the regression."))

# %%
answer = analysis.answer(study, regression, metric, task)
for key, value in answer.items():
    glue(f"answer-{key}", value, display=False)

# %% [markdown]
# ## Answer
#
# On the **{glue:text}`answer-profile`** profile, for OPTICAL students, per doubling of the
# student's non-embedding parameters the macro RR@10 on the held-out Tatoeba languages changes by
# {glue:text}`answer-size_effect`, and per doubling of the number of training languages (same
# number of pairs) by {glue:text}`answer-diversity_effect` (95% confidence intervals,
# {glue:text}`answer-n_runs` runs). In short: {glue:text}`answer-verdict`. The best distilled
# setting is {glue:text}`answer-best_setting` with {glue:text}`answer-best_value`, against
# {glue:text}`answer-best_baseline` for the zero-shot model of the same depth.
