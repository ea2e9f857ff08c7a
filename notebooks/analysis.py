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
# # Version 1 results (archived)
#
# The first published run of the study, kept as it was: version 2 (the results page) replaces
# its design and its answer, and nothing here enters the version 2 analysis.
#
# This page reads only the result files of one profile of the grid
# (`results/<profile>/summary.parquet` and the per-query files of its runs) and recomputes no
# metric. Every number in the text is glued from a computation on this page; the code is in the
# notebook `notebooks/analysis.py` and in `optical_lib.analysis`.

# %% tags=["parameters", "remove-cell"]
results_dir = "results"  # written by python -m optical_lib.grid
profile = "medium"  # the grid profile this page reports (the published one)
metric = "RR@10"
task = "tatoeba"
figures_dir = "book/figures"  # figures other pages show (the intro's headline figure)

# %% tags=["remove-cell"]
from IPython.display import Markdown
from myst_nb import glue

from optical_lib import analysis, plots

study = analysis.load_study(results_dir, profile)
suites = sorted(study.summary["task"].unique())
glue("profile", study.profile, display=False)
glue("n_settings", str(study.summary["run_id"].nunique()), display=False)
glue("suites", ", ".join(suites), display=False)


def figure(name, fig):
    """Glue a figure for a numbered, captioned {glue:figure} below, and free it."""
    glue(name, fig, display=False)
    plots.close(fig)


# %% tags=["remove-input"]
Markdown(f"Profile **{study.profile}**: {study.summary['run_id'].nunique()} settings, "
         f"{len(study.summary)} result rows, evaluated on: {', '.join(suites)}. The metric "
         f"shown is {metric} on `{task}`, macro-averaged over the evaluation languages.")

# %% [markdown]
# ```{admonition} What this version of the study can and cannot say
# :class: warning
# A review of these results found four problems that the next version of the study (data v2,
# protocol v2) addresses: the students are cut from the teacher's own layers, so "size" here is
# mostly the quality of the *untrained* truncated encoder; the primary protocol (the student
# encodes the English documents too) is not OPTICAL's; each number of training languages k was
# drawn with its own languages, two draws per cell, so "how many languages" and "which
# languages" are the same variable; and two seeds cannot detect effects of the size that
# matters. Read the estimates below with that in mind.
# ```
#
# ## All settings
#
# Macro metric per suite and setting: the mean over seeds, its spread across seeds (`std`,
# `min`, `max`) and the 95% t-interval across seeds (`ci_low`, `ci_high`; empty with one seed).

# %% tags=["remove-input"]
Markdown("\n\n".join(f"**{suite}**\n\n{table}"
                     for suite, table in analysis.settings_markdown(study, metric).items()))

# %% [markdown]
# ## Hyper-parameters
#
# The learning-rate sweep on the development languages (never evaluation languages) that chose
# each depth's learning rate: macro RR@10 with student-encoded documents (`dev_rr10`, the primary
# protocol) and with teacher-encoded documents; `none` is the zero-shot model.

# %% tags=["remove-input"]
tuning = analysis.tuning_table(results_dir)
(Markdown(analysis.markdown_table(tuning, index=True, formats={"lr": ".0e", "train_s": ".0f"}))
 if tuning is not None else Markdown("No tuning sweep in this results directory."))

# %% tags=["remove-cell"]
figure("fig-heatmap", plots.heatmap(study.summary, metric, task))
figure("fig-size", plots.curves_vs_params(study.summary, metric, task))
figure("fig-methods", plots.methods_compare(study.summary, metric))
figure("fig-languages", plots.language_strip(study.summary, metric, task))

# %% [markdown]
# ## Size × diversity
#
# ```{glue:figure} fig-heatmap
# :name: fig-heatmap
#
# Macro RR@10 of centred-OPTICAL students on the held-out Tatoeba languages, by student depth L
# (rows) and number of training languages k at a fixed budget of pairs (columns); mean over
# seeds.
# ```
#
# ```{glue:figure} fig-size
# :name: fig-size
#
# The same numbers against the student's non-embedding parameters (log scale), one line per k;
# the dashed line is the zero-shot (un-distilled) model of the same depth.
# ```
#
# ## Methods and suites
#
# ```{glue:figure} fig-methods
# :name: fig-methods
#
# Macro RR@10 per method and depth, one panel per suite (each point a seed). Suites with the
# suffix `+teacher-docs` are OPTICAL's protocol: the frozen teacher encodes the English
# documents.
# ```
#
# ## Per language
#
# ```{glue:figure} fig-languages
# :name: fig-languages
#
# Gain of each distilled setting over the zero-shot model of the same depth, per evaluation
# language (each point a setting and seed).
# ```
#
# ## Resource classes
#
# Macro metric within each resource class {cite:p}`joshi2020state` of the evaluation languages
# (`unknown` where the class could not be sourced).

# %% tags=["remove-input"]
Markdown(analysis.markdown_table(analysis.class_table(study, metric, task), index=True))

# %% [markdown]
# ## Significance
#
# Each distilled setting against the zero-shot model of the same depth, per language: paired
# randomisation test on the same queries, Holm–Bonferroni correction across the languages of a
# setting (α = 0.05). The table counts, per setting, the languages × seeds with a significant
# gain or loss.

# %% tags=["remove-input"]
tests = analysis.versus_baseline(study, metric, task)
wins = analysis.win_loss(tests)
if len(wins):
    wins["method"] = wins["method"].map(plots.method_label)
Markdown(analysis.markdown_table(wins))

# %% [markdown]
# ## Regression
#
# Ordinary least squares of the macro metric of every OPTICAL run on log₂(non-embedding
# parameters) and log₂(k): each coefficient is the change per doubling, with its 95% confidence
# interval. The runs are not independent (languages are nested in language draws), so these
# intervals are too narrow; the next version fits a mixed model.

# %% tags=["remove-input"]
regression = analysis.scaling_regression(study, metric, task)
(Markdown(analysis.markdown_table(regression, digits=4)) if regression is not None
 else Markdown("Too few settings in this profile for the regression."))

# %% tags=["remove-cell"]
answer = analysis.answer(study, regression, metric, task)
for key, value in answer.items():
    glue(f"answer-{key}", value, display=False)
headline = plots.curves_vs_params(study.summary, metric, task)
plots.save(headline, f"{figures_dir}/headline.svg")
figure("fig-headline", headline)

# %% [markdown]
# ## Answer
#
# On the **{glue:text}`answer-profile`** profile, for OPTICAL students, per doubling of the
# student's non-embedding parameters the macro RR@10 on the held-out Tatoeba languages changes
# by {glue:text}`answer-size_effect`, and per doubling of the number of training languages (same
# number of pairs) by {glue:text}`answer-diversity_effect` (95% confidence intervals,
# {glue:text}`answer-n_runs` runs). In short: {glue:text}`answer-verdict`. The best distilled
# setting is {glue:text}`answer-best_setting` with {glue:text}`answer-best_value`, against
# {glue:text}`answer-best_baseline` for the zero-shot model of the same depth (picked on the
# evaluation languages themselves, so an optimistic number).
