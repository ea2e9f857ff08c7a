"""Choose distillation hyper-parameters on development languages, never on test languages.

The development languages (:data:`optical_lib.data.DEV_LANGS_TATOEBA`) are held out from
training and from the reported evaluation. For each student depth and learning rate this
distils one student (k=8 languages, the grid's budget, seed 0) and measures macro RR@10 on
the development languages under both retrieval protocols (student-encoded documents, the
primary one, and teacher-encoded documents), next to the zero-shot baseline::

    python -m optical_lib.tune --layers 3 12 --lrs 5e-5 2e-4 5e-4 --out results/tuning.csv
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from . import data
from .distill import distill
from .experiment import (
    TEACHER_DOCS,
    ExperimentConfig,
    evaluate_student,
    training_sample,
    validate,
)
from .layout import ResultsLayout, atomic_write
from .models import load_encoder


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


def main(argv: list[str] | None = None) -> int:
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
