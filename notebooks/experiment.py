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
# # Experiment: one setting (template)
#
# The grid runner replaces this title with the setting's own. Run one setting by hand with
# `papermill notebooks/experiment.ipynb out.ipynb -p layers 3 -p method optical -p k_langs 8`
# (lists as YAML: `-y 'eval_tatoeba: [swh, amh]'`).

# %% tags=["parameters", "remove-cell"]
# Parameters (papermill overrides these; the cell papermill injects below shows this run's).
# Lists default to the study's named splits.
profile = "offline"  # "offline" (Tatoeba/XQuAD-R, embedded) or "webfaq" (needs internet)
model = "me5-small"  # student family or a Hugging Face id
layers = 3  # student depth L
method = "optical"  # "optical" | "mse" | "none" (zero-shot baseline)
k_langs = 8  # number of training languages (diversity)
budget = 1000  # training pairs in total, equal share per language
seed = 0
eval_tatoeba: list = None  # None: data.EVAL_LANGS_TATOEBA
eval_xquad: list = None  # None: data.XQUAD_R_QUERY_LANGS, [] skips XQuAD-R
train_langs = []  # webfaq profile only
eval_webfaq = []  # webfaq profile only
device = "cpu"
epochs = 3
lr: float = None  # None: the default for this depth, chosen on development languages
results_dir = "results/runs"  # the runs folder of the results layout
n_boot = 1000
threads: int = None  # torch threads (None: torch's default); recorded with the results

# %% [markdown]
# ## Setting
#
# The parameters become one frozen configuration, checked against the data (including the
# pinned checksums of every file it reads) before any compute.

# %%
from pathlib import Path

from IPython.display import Markdown, display
from myst_nb import glue

from optical_lib import plots
from optical_lib.analysis import markdown_table
from optical_lib.distill import distill
from optical_lib.evaluate import read_results
from optical_lib.experiment import (
    ExperimentConfig,
    apply_threads,
    diversity_table,
    evaluate_student,
    load_teacher,
    provenance,
    training_sample,
    validate,
    verify_data,
    write_setting,
)
from optical_lib.layout import ResultsLayout

config = ExperimentConfig.from_parameters(
    profile=profile, model=model, layers=layers, method=method, k_langs=k_langs, budget=budget,
    seed=seed, eval_tatoeba=eval_tatoeba, eval_xquad=eval_xquad, train_langs=train_langs,
    eval_webfaq=eval_webfaq, device=device, epochs=epochs, lr=lr, n_boot=n_boot,
    threads=threads)
validate(config)
data_digests = verify_data(config)
apply_threads(config)
Markdown(markdown_table(config.table(), index=True))

# %% [markdown]
# ## Training data
#
# The diversity sampler draws exactly `budget` pairs from exactly `k_langs` languages of the
# training pool, spread over language families; evaluation languages are never in it.

# %%
sample = training_sample(config)
Markdown(markdown_table(diversity_table(sample), index=True))

# %% [markdown]
# ## Distillation

# %%
teacher = load_teacher(config)
student, history = distill(config.training, sample.pairs if sample else [],
                           teacher=teacher, progress=True)  # progress bar on stderr
if len(history):
    display(plots.loss_curve(history, title=f"{config.run_id}: loss"))
    plots.close("all")
else:
    display(Markdown("Zero-shot baseline: the student is the un-distilled model."))

# %% [markdown]
# ## Retrieval and evaluation
#
# Metrics come from `ir_measures`; every value has a 95% bootstrap confidence interval over
# queries.

# %%
rows, per_query = evaluate_student(config, student, teacher)
layout = ResultsLayout(root=Path(results_dir).parent)
prov = provenance(data_digests)
out = write_setting(config, rows, per_query, history, sample, layout, prov)
results = read_results(layout.results_file(config.run_id))
macro = results[results["scope"] == "macro"].pivot_table(
    index="task", columns="metric", values="value").round(3)
macro

# %%
fig = plots.per_language(results, "RR@10", title=f"{config.run_id}: RR@10 per language")
display(fig)
plots.close(fig)

# %% [markdown]
# ## Provenance
#
# Where this run came from: the code's commit, when it ran, the torch threads its timings used,
# and the SHA-256 digests of the pinned data files it read (verified before any compute).

# %%
import pandas as pd

facts = {k: v for k, v in prov.items() if k != "data_sha256"}
facts.update({f"data {folder}": digest for folder, digest in prov["data_sha256"].items()})
for task in macro.index:
    glue(f"{config.run_id}-{task}-rr10", f"{macro.loc[task, 'RR@10']:.3f}", display=False)
Markdown(markdown_table(pd.DataFrame({"what": list(facts), "value": list(facts.values())})))
