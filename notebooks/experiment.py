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
profile = "offline"  # "offline" (embedded public data) or "webfaq" (needs internet)
design = "v1"  # "v1" (first study) or "v2" (NTREX/FLORES, both protocols, Δ over baselines)
model = "me5-small"  # student family or a Hugging Face id ("minilm-l6": v2 teacher reference)
layers: int = None  # student depth L (None: 3, or 6, all of MiniLM, for the minilm-l6 model)
method = "optical"  # "optical" | "mse" | "none" (zero-shot); v2 also "optical-plain",
# "optical+mse" and "bm25" (the lexical floor)
teacher = "me5-small"  # v2: the frozen English teacher, "me5-small" or "minilm-l6"
k_langs = 8  # number of training languages (diversity)
budget: int = None  # training pairs in total, equal share per language (None: the design's)
draw = 0  # v2: which languages and English sentences (multiway.sample_fixed_content)
relatives = True  # v2: False draws from the "no relatives" pool
sample = "fixed"  # v2: "pool" for the learning curve (budget 0: the whole pool)
seed = 0
split = "eval"  # v2: "dev" evaluates on the development languages (tuning only)
eval_flores: list = None  # v2, None: multiway.EVAL_LANGS_FLORES
eval_tatoeba: list = None  # None: the design's Tatoeba evaluation languages
eval_xquad: list = None  # None: data.XQUAD_R_QUERY_LANGS, [] skips XQuAD-R
train_langs = []  # webfaq profile only
eval_webfaq = []  # webfaq profile only
device = "cpu"
epochs: int = None  # None: the design's (v2: chosen by the convergence check)
lr: float = None  # None: the default for this depth, chosen on development languages
amp: str = None  # "bf16": bf16 autocast for training and every encoder (None: float32)
results_dir = "results/runs"  # the runs folder of the results layout
n_boot = 1000
threads: int = None  # torch threads (None: torch's default); recorded with the results
run_id: str = None  # the grid's planned id of this setting: a mismatch stops before compute

# %% [markdown]
# ## Setting
#
# The parameters become one frozen configuration, checked against the data (including the
# pinned checksums of every file it reads) before any compute.

# %%
import warnings
from pathlib import Path

from IPython.display import Markdown, display
from myst_nb import glue
from tqdm import TqdmWarning

# transformers imports tqdm.auto, which warns in a kernel without ipywidgets; this page's
# progress bars are plain text (or off), so the warning would say nothing about the run
warnings.filterwarnings("ignore", message="IProgress not found", category=TqdmWarning)

from optical_lib import plots
from optical_lib.analysis import markdown_table
from optical_lib.evaluate import read_results
from optical_lib.experiment import (
    ExperimentConfig,
    apply_threads,
    discard_checkpoint,
    diversity_table,
    evaluate_student,
    load_teacher,
    provenance,
    train_student,
    training_sample,
    validate,
    verify_data,
    write_setting,
)
from optical_lib.layout import ResultsLayout

config = ExperimentConfig.from_parameters(
    profile=profile, design=design, model=model, layers=layers, method=method, teacher=teacher,
    k_langs=k_langs, budget=budget, draw=draw, relatives=relatives, sample=sample, seed=seed,
    split=split,
    eval_flores=eval_flores, eval_tatoeba=eval_tatoeba, eval_xquad=eval_xquad,
    train_langs=train_langs, eval_webfaq=eval_webfaq, device=device, epochs=epochs, lr=lr,
    amp=amp, n_boot=n_boot, threads=threads)
if run_id is not None and config.run_id != run_id:
    raise ValueError(f"these parameters make the setting {config.run_id}, not the planned "
                     f"{run_id}: the notebook and the grid read them differently")
validate(config)
data_digests = verify_data(config)
apply_threads(config)
Markdown(markdown_table(config.table(), index=True))

# %% [markdown]
# ## Training data
#
# The sampler draws exactly `budget` pairs from exactly `k_langs` languages of the training
# pool; evaluation languages are never in it. In design v2 the English sentences depend on
# (`draw`, `budget`) only, so settings that differ in k train on the same English side.

# %%
sample = training_sample(config)
Markdown(markdown_table(diversity_table(sample), index=True))

# %% [markdown]
# ## Distillation
#
# Training writes a checkpoint every few minutes into the cache (never into the results); a
# setting cut short, at a session's end or by a killed worker, resumes from it when the grid
# runs again, to the result an uncut run would have had. It is removed once the results are
# written.

# %%
teacher = load_teacher(config)
student, history = None, None
if config.method != "bm25":  # BM25 has no encoder
    # checkpointed every few minutes; a run cut short resumes where it was
    student, history = train_student(config, sample, teacher)  # progress bar on stderr
if history is not None and len(history):
    fig = plots.loss_curve(history, title=f"{config.run_id}: loss")
    display(plots.compact_png(fig))  # a palette PNG: hundreds of run pages are published
    plots.close(fig)
else:
    display(Markdown("Nothing is trained: a zero-shot baseline (the un-distilled model) or "
                     "the lexical floor (BM25)."))

# %% [markdown]
# ## Retrieval and evaluation
#
# Metrics come from `ir_measures`; every value has a 95% bootstrap confidence interval over
# queries. In design v2 every suite is evaluated under each protocol (`student`: the student
# encodes both sides; `teacher`: OPTICAL's, the frozen teacher encodes the English side), and
# a distilled student's `delta:` rows are its per-query gain over the same-depth un-distilled
# model under the same protocol.

# %%
rows, per_query = evaluate_student(config, student, teacher)
layout = ResultsLayout(root=Path(results_dir).parent)
prov = provenance(data_digests, config.device, config.training.amp)
out = write_setting(config, rows, per_query, history, sample, layout, prov)
discard_checkpoint(config)
results = read_results(layout.results_file(config.run_id))
metric = "nDCG@10" if config.design == "v2" else "RR@10"
if "protocol" not in results:
    results["protocol"] = "student"
macro = results[results["scope"] == "macro"].pivot_table(
    index=["task", "protocol"], columns="metric", values="value").round(3)
macro

# %%
shown = results[results["protocol"].isin(["student", "lexical"])]
fig = plots.per_language(shown, metric, title=f"{config.title}: {metric} per language")
display(plots.compact_png(fig))
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
for task, proto in macro.index:
    key = f"{config.run_id}-{task}" + ("" if proto == "student" else f"-{proto}")
    glue(f"{key}-{metric.lower().replace('@', '')}", f"{macro.loc[(task, proto), metric]:.3f}",
         display=False)
Markdown(markdown_table(pd.DataFrame({"what": list(facts), "value": list(facts.values())})))
