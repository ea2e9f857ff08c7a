"""Figures of the study (seaborn). Each function takes the tidy result table and returns a
matplotlib ``Figure``; notebooks only call them."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

sns.set_theme(style="whitegrid", context="notebook")
METHOD_ORDER = ["none", "mse", "optical"]
METHOD_LABEL = {"none": "zero-shot", "mse": "sentence MSE", "optical": "OPTICAL"}


def _errorbars(ax, df: pd.DataFrame, x: str, y: str = "value") -> None:
    lo = (df[y] - df["ci_low"]).clip(lower=0)
    hi = (df["ci_high"] - df[y]).clip(lower=0)
    ax.errorbar(df[x], df[y], yerr=[lo, hi], fmt="none", ecolor="0.3", capsize=2, lw=1)


def loss_curve(history: pd.DataFrame, title: str = "") -> plt.Figure:
    """Training loss per step (parts as separate lines) with a rolling mean."""
    fig, ax = plt.subplots(figsize=(6, 3))
    parts = [c for c in ("ot", "mse") if c in history] or ["loss"]
    for part in parts:
        ax.plot(history["step"], history[part], alpha=0.3, lw=1)
        window = max(1, len(history) // 20)
        ax.plot(history["step"], history[part].rolling(window, min_periods=1).mean(),
                label=part, lw=2)
    ax.set(xlabel="step", ylabel="loss", title=title or "Distillation loss")
    ax.legend()
    fig.tight_layout()
    return fig


def per_language(results: pd.DataFrame, metric: str = "RR@10", title: str = "") -> plt.Figure:
    """Per-language bars with 95% bootstrap CIs, one panel per task suite."""
    df = results[(results["scope"] == "language") & (results["metric"] == metric)]
    suites = sorted(df["task"].unique())
    fig, axes = plt.subplots(1, len(suites), figsize=(5 * len(suites), 3.2), squeeze=False)
    for ax, suite in zip(axes[0], suites, strict=True):
        part = df[df["task"] == suite].sort_values("value").reset_index(drop=True)
        ax.bar(part["query_lang"], part["value"], color=sns.color_palette()[0])
        _errorbars(ax, part, "query_lang")
        ax.set(title=suite, ylabel=metric, ylim=(0, 1))
        ax.tick_params(axis="x", rotation=60)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def heatmap(summary: pd.DataFrame, metric: str = "RR@10", task: str = "tatoeba",
            method: str = "optical") -> plt.Figure:
    """Mean over seeds of the macro metric over student depth x number of languages k."""
    df = summary[(summary["metric"] == metric) & (summary["task"] == task)
                 & (summary["method"] == method) & (summary["scope"] == "macro")]
    table = df.pivot_table(index="layers", columns="k_langs", values="value", aggfunc="mean")
    table = table.sort_index(ascending=False)
    fig, ax = plt.subplots(figsize=(1.1 * max(3, table.shape[1]) + 1.5, 3.2))
    sns.heatmap(table, annot=True, fmt=".3f", cmap="viridis", ax=ax,
                cbar_kws={"label": f"macro {metric}"})
    ax.set(xlabel="training languages k (fixed budget)", ylabel="student layers L",
           title=f"{task}: {METHOD_LABEL.get(method, method)}, mean over seeds")
    fig.tight_layout()
    return fig


def curves_vs_params(summary: pd.DataFrame, metric: str = "RR@10",
                     task: str = "tatoeba") -> plt.Figure:
    """Macro metric against non-embedding parameters, one line per k (and the baseline)."""
    df = summary[(summary["metric"] == metric) & (summary["task"] == task)
                 & (summary["scope"] == "macro")]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    base = df[df["method"] == "none"].groupby("nonemb_params")["value"].mean()
    ax.plot(base.index, base.values, "k--o", label="zero-shot")
    distilled = df[df["method"] != "none"]
    for (method, k), part in distilled.groupby(["method", "k_langs"]):
        means = part.groupby("nonemb_params")["value"].agg(["mean", "std", "count"])
        label = f"{METHOD_LABEL.get(method, method)}, k={int(k)}"
        ax.errorbar(means.index, means["mean"], yerr=means["std"].fillna(0), marker="o",
                    capsize=2, label=label, ls="-" if method == "optical" else ":")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x / 1e6:.1f}M"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks(sorted(df["nonemb_params"].unique()))
    ax.set(xlabel="non-embedding parameters (log scale)", ylabel=f"macro {metric}", title=task)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def methods_compare(summary: pd.DataFrame, metric: str = "RR@10") -> plt.Figure:
    """Macro metric per method and depth, one panel per task suite (seeds as points)."""
    df = summary[(summary["metric"] == metric) & (summary["scope"] == "macro")].copy()
    df["method"] = pd.Categorical(df["method"], [m for m in METHOD_ORDER if m in set(df.method)])
    grid = sns.catplot(df, x="layers", y="value", hue="method", col="task", kind="point",
                       dodge=0.3, errorbar=("ci", 95), height=3.2, aspect=1.2,
                       linestyle="none", capsize=0.1)
    grid.set_axis_labels("student layers L", f"macro {metric}")
    return grid.figure


def language_strip(results: pd.DataFrame, metric: str = "RR@10",
                   task: str = "tatoeba") -> plt.Figure:
    """Per-language values of every distilled setting relative to the same-depth baseline."""
    df = results[(results["metric"] == metric) & (results["task"] == task)
                 & (results["scope"] == "language")]
    base = df[df["method"] == "none"].set_index(["layers", "query_lang"])["value"]
    dist = df[df["method"] != "none"].copy()
    keys = list(zip(dist["layers"], dist["query_lang"], strict=True))
    dist["gain"] = dist["value"].to_numpy() - base.reindex(keys).to_numpy()
    order = dist.groupby("query_lang")["gain"].mean().sort_values().index
    fig, ax = plt.subplots(figsize=(7, 3.4))
    sns.stripplot(dist, x="query_lang", y="gain", hue="layers", order=order, dodge=True,
                  palette="viridis", ax=ax, size=4)
    ax.axhline(0, color="k", lw=1)
    ax.set(xlabel="evaluation language", ylabel=f"{metric} gain over zero-shot", title=task)
    ax.tick_params(axis="x", rotation=60)
    fig.tight_layout()
    return fig


def close(fig) -> None:
    plt.close(fig)

