"""Figures of the study (matplotlib + seaborn). Each function takes the tidy result table and
returns a matplotlib ``Figure``; notebooks only call them.

Style is not global state: importing this module changes no matplotlib setting. Every figure
function draws inside :func:`style`, a context manager with the study's theme (seaborn
"whitegrid", one colour palette, 150 dpi on screen, 200 dpi when saved); use it around your own
figures to match them. Method names come from :data:`optical_lib.distill.METHOD_LABELS` and
languages are shown as ``"swh (Swahili)"`` (:func:`language_label`), in every figure.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .data import language_info
from .distill import METHOD_LABELS

METHOD_ORDER = ["none", "mse", "optical"]
METHOD_LABEL = METHOD_LABELS  # old name, kept as an alias: one label set for the whole study

#: The categorical palette of every figure (colour-blind safe).
PALETTE = sns.color_palette("colorblind")
#: One colour per method, the same in every figure.
METHOD_COLORS = {"none": "0.35", "mse": PALETTE[1], "optical": PALETTE[0]}
#: Colour map for ordered quantities (student depth L, number of languages k).
SEQUENTIAL_CMAP = "viridis"
DPI, SAVE_DPI = 150, 200


@contextmanager
def style() -> Iterator[None]:
    """The study's figure style, applied only inside the ``with`` block.

    >>> with style():
    ...     fig, ax = plt.subplots()
    """
    rc = {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook"),
          "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
          "figure.dpi": DPI, "savefig.dpi": SAVE_DPI, "savefig.bbox": "tight",
          "svg.hashsalt": "optical-study"}  # same figure, same SVG bytes
    with plt.rc_context(rc):
        yield


def _styled(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with style():
            return func(*args, **kwargs)
    return wrapper


@functools.cache
def language_label(code: str) -> str:
    """``"swh (Swahili)"`` for an ISO 639-3 code in ``languages.csv``; the code alone otherwise."""
    try:
        return f"{code} ({language_info(code)['name']})"
    except ValueError:
        return str(code)


def method_label(method: str) -> str:
    """The display name of a method (:data:`optical_lib.distill.METHOD_LABELS`)."""
    return METHOD_LABELS.get(method, method)


def _ordered_colors(values) -> dict:
    """One colour per ordered value (depths, k), from :data:`SEQUENTIAL_CMAP`."""
    values = sorted(values)
    cmap = matplotlib.colormaps[SEQUENTIAL_CMAP]
    n = max(1, len(values) - 1)
    return {v: cmap(0.85 * i / n) for i, v in enumerate(values)}


def _errorbars(ax, df: pd.DataFrame, at, value: str = "value") -> None:
    """95% CI whiskers (``ci_low``/``ci_high`` around ``value``) on horizontal bars placed
    at ``at`` (the bars' category labels)."""
    lo = (df[value] - df["ci_low"]).clip(lower=0)
    hi = (df["ci_high"] - df[value]).clip(lower=0)
    ax.errorbar(df[value], at, xerr=[lo, hi], fmt="none", ecolor="0.3", capsize=2, lw=1)


@_styled
def loss_curve(history: pd.DataFrame, title: str = "") -> plt.Figure:
    """Training loss per step (parts as separate lines) with a rolling mean."""
    fig, ax = plt.subplots(figsize=(6, 3))
    parts = [c for c in ("ot", "mse") if c in history] or ["loss"]
    colors = {"ot": METHOD_COLORS["optical"], "mse": METHOD_COLORS["mse"], "loss": PALETTE[2]}
    names = {"ot": "OT term", "mse": "MSE term", "loss": "loss"}
    for part in parts:
        ax.plot(history["step"], history[part], alpha=0.3, lw=1, color=colors[part])
        window = max(1, len(history) // 20)
        ax.plot(history["step"], history[part].rolling(window, min_periods=1).mean(),
                label=names[part], lw=2, color=colors[part])
    ax.set(xlabel="step", ylabel="loss", title=title or "Distillation loss")
    ax.legend()
    fig.tight_layout()
    return fig


@_styled
def per_language(results: pd.DataFrame, metric: str = "RR@10", title: str = "") -> plt.Figure:
    """Per-language horizontal bars with 95% bootstrap CIs, one panel per task suite (at
    most three a row), languages sorted by the metric: readable with FLORES-200's 28."""
    df = results[(results["scope"] == "language") & (results["metric"] == metric)]
    suites = sorted(df["task"].unique())
    ncols = min(3, max(1, len(suites)))
    nrows = -(-max(1, len(suites)) // ncols)
    sizes = [int((df["task"] == suite).sum()) for suite in suites]
    rows = [max(sizes[r * ncols:(r + 1) * ncols], default=1) for r in range(nrows)]
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 0.24 * sum(rows) + 1.1 * nrows),
                             squeeze=False, gridspec_kw={"height_ratios": rows})
    for i, (ax, suite) in enumerate(zip(list(axes.flat)[:len(suites)], suites, strict=True)):
        part = df[df["task"] == suite].sort_values("value").reset_index(drop=True)
        labels = part["query_lang"].map(language_label)
        ax.barh(labels, part["value"], color=PALETTE[0], height=0.7)
        _errorbars(ax, part, labels)
        # the same bar thickness in every panel of a row, bars from the top
        ax.set(title=suite, xlabel=metric, xlim=(0, 1),
               ylim=(len(part) - 0.5 - rows[i // ncols], len(part) - 0.5))
        ax.tick_params(axis="y", labelsize="small")
        ax.grid(axis="y", visible=False)
    for ax in list(axes.flat)[len(suites):]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


@_styled
def heatmap(summary: pd.DataFrame, metric: str = "RR@10", task: str = "tatoeba",
            method: str = "optical") -> plt.Figure:
    """Mean over seeds of the macro metric over student depth x number of languages k."""
    df = summary[(summary["metric"] == metric) & (summary["task"] == task)
                 & (summary["method"] == method) & (summary["scope"] == "macro")]
    table = df.pivot_table(index="layers", columns="k_langs", values="value", aggfunc="mean")
    table = table.sort_index(ascending=False)
    fig, ax = plt.subplots(figsize=(1.1 * max(3, table.shape[1]) + 1.5, 3.2))
    sns.heatmap(table, annot=True, fmt=".3f", cmap=SEQUENTIAL_CMAP, ax=ax,
                cbar_kws={"label": f"macro {metric}"})
    ax.set(xlabel="training languages k (fixed budget)", ylabel="student layers L",
           title=f"{task}: {method_label(method)}, mean over seeds")
    fig.tight_layout()
    return fig


@_styled
def curves_vs_params(summary: pd.DataFrame, metric: str = "RR@10",
                     task: str = "tatoeba") -> plt.Figure:
    """Macro metric against non-embedding parameters, one line per k (and the baseline)."""
    df = summary[(summary["metric"] == metric) & (summary["task"] == task)
                 & (summary["scope"] == "macro")]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    base = df[df["method"] == "none"].groupby("nonemb_params")["value"].mean()
    ax.plot(base.index, base.values, "--o", color=METHOD_COLORS["none"],
            label=method_label("none"))
    distilled = df[df["method"] != "none"]
    k_colors = _ordered_colors(distilled["k_langs"].dropna().unique())
    for (method, k), part in distilled.groupby(["method", "k_langs"]):
        means = part.groupby("nonemb_params")["value"].agg(["mean", "std", "count"])
        label = f"{method_label(method)}, k={int(k)}"
        ax.errorbar(means.index, means["mean"], yerr=means["std"].fillna(0), marker="o",
                    capsize=2, label=label, color=k_colors[k],
                    ls="-" if method == "optical" else ":")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x / 1e6:.1f}M"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks(sorted(df["nonemb_params"].unique()))
    ax.set(xlabel="non-embedding parameters (log scale)", ylabel=f"macro {metric}", title=task)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


@_styled
def methods_compare(summary: pd.DataFrame, metric: str = "RR@10") -> plt.Figure:
    """Macro metric per method and depth, one panel per task suite (seeds as points)."""
    df = summary[(summary["metric"] == metric) & (summary["scope"] == "macro")].copy()
    present = [m for m in METHOD_ORDER if m in set(df["method"])]
    labels = [method_label(m) for m in present]
    df["method"] = pd.Categorical(df["method"].map(method_label), labels)
    grid = sns.catplot(df, x="layers", y="value", hue="method", col="task", kind="point",
                       dodge=0.3, errorbar=("ci", 95), height=3.2, aspect=1.2,
                       linestyle="none", capsize=0.1,
                       palette={method_label(m): METHOD_COLORS[m] for m in present})
    grid.set_axis_labels("student layers L", f"macro {metric}")
    return grid.figure


@_styled
def language_strip(results: pd.DataFrame, metric: str = "RR@10",
                   task: str = "tatoeba") -> plt.Figure:
    """Per-language values of every distilled setting relative to the same-depth baseline."""
    df = results[(results["metric"] == metric) & (results["task"] == task)
                 & (results["scope"] == "language")]
    base = df[df["method"] == "none"].set_index(["layers", "query_lang"])["value"]
    dist = df[df["method"] != "none"].copy()
    keys = list(zip(dist["layers"], dist["query_lang"], strict=True))
    dist["gain"] = dist["value"].to_numpy() - base.reindex(keys).to_numpy()
    dist["language"] = dist["query_lang"].map(language_label)
    order = dist.groupby("language")["gain"].mean().sort_values().index
    fig, ax = plt.subplots(figsize=(8, 3.8))
    sns.stripplot(dist, x="language", y="gain", hue="layers", order=order, dodge=True,
                  palette=_ordered_colors(dist["layers"].unique()), ax=ax, size=4)
    ax.axhline(0, color="k", lw=1)
    ax.set(xlabel="evaluation language", ylabel=f"{metric} gain over zero-shot", title=task)
    ax.tick_params(axis="x", rotation=60)
    plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")
    ax.legend(title="student layers L", fontsize=8)
    fig.tight_layout()
    return fig


def save(fig: plt.Figure, path: str | Path) -> Path:
    """Write a figure for a page that is not its notebook (SVG or PNG by suffix), atomically;
    SVG output has no embedded date, so the same figure gives the same bytes."""
    from .layout import atomic_write

    path = Path(path)
    metadata = {"Date": None} if path.suffix == ".svg" else None

    def write(tmp: str) -> None:
        with style():
            fig.savefig(tmp, format=path.suffix.lstrip("."), bbox_inches="tight",
                        metadata=metadata)

    return atomic_write(path, write)


def compact_png(fig: plt.Figure, colors: int = 64):
    """The figure as a palette PNG of ``colors`` colours for a notebook's output
    (``display(compact_png(fig))``): flat-coloured charts look the same and weigh about a
    third of matplotlib's RGBA PNG. Meant for the grid's run notebooks, hundreds of which
    the book publishes (a per-language chart: about 72 kB against 213 kB)."""
    import io

    from IPython.display import Image
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    with style():
        fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    image = PILImage.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    out = io.BytesIO()
    image.quantize(colors=colors, method=PILImage.Quantize.MEDIANCUT).save(
        out, format="png", optimize=True)
    return Image(data=out.getvalue(), format="png")


def close(fig) -> None:
    """Close a figure (or ``"all"``), as :func:`matplotlib.pyplot.close`."""
    plt.close(fig)


@_styled
def transport_plans(cost, plans: dict, rows: list[str], cols: list[str],
                    losses: dict | None = None) -> plt.Figure:
    """Cost matrix and one transport plan per entropic regularisation, as annotated heat maps.

    ``cost``: (n, m) array; ``plans``: ``{eps: (n, m) plan}``; ``rows``/``cols``: token labels;
    ``losses``: optional ``{eps: <P, C>}`` shown in the panel titles. Two panels per row. Used
    by the toy page of the book (``book/ot_toy.md``).
    """
    panels = 1 + len(plans)
    ncols = min(panels, 2)
    nrows = -(-panels // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.9 * ncols, 3.1 * nrows), squeeze=False)
    axes = axes.ravel()
    kw = dict(annot=True, fmt=".2f", xticklabels=cols, yticklabels=rows, cbar=False,
              annot_kws={"fontsize": 8})
    sns.heatmap(np.asarray(cost), ax=axes[0], cmap="rocket_r", vmin=0, vmax=2, **kw)
    axes[0].set_title("cost C = 1 − cos")
    for ax, (eps, plan) in zip(axes[1:], plans.items(), strict=False):
        plan = np.asarray(plan)
        sns.heatmap(plan, ax=ax, cmap="mako_r", vmin=0, vmax=plan.sum(1).max(), **kw)
        title = f"plan P, ε = {eps:g}"
        if losses is not None:
            title += f":  ⟨P, C⟩ = {float(losses[eps]):.3f}"
        ax.set_title(title)
    for ax in axes[panels:]:
        ax.set_axis_off()
    for ax in axes[:panels]:
        ax.tick_params(axis="x", rotation=30)
        ax.tick_params(axis="y", rotation=0)
    fig.tight_layout()
    return fig


@_styled
def convergence(table: pd.DataFrame) -> plt.Figure:
    """Dev Δ over epochs, one panel per (teacher, depth): a line per suite and protocol and
    their mean (``table``: the tuning sweep's rows, columns ``teacher, layers, epoch, task,
    protocol, delta``)."""
    panels = table[["teacher", "layers"]].drop_duplicates().sort_values(["teacher", "layers"])
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False,
                             sharey=True)
    for ax, (_, (teacher, depth)) in zip(axes[0], panels.iterrows(), strict=True):
        part = table[(table["teacher"] == teacher) & (table["layers"] == depth)]
        for i, ((task, proto), line) in enumerate(part.groupby(["task", "protocol"])):
            mean = line.groupby("epoch")["delta"].mean()
            ax.plot(mean.index, mean.values, marker="o", ms=3, color=PALETTE[i % len(PALETTE)],
                    label=f"{task} · {proto}")
        mean = part.groupby("epoch")["delta"].mean()
        ax.plot(mean.index, mean.values, color="black", lw=2, label="mean")
        ax.axhline(0, color="0.6", lw=0.8)
        ax.set(title=f"L{depth} · teacher {teacher}", xlabel="epoch", xscale="log")
        ax.set_xticks(sorted(part["epoch"].unique()), [str(e) for e in
                                                       sorted(part["epoch"].unique())])
    axes[0][0].set_ylabel("dev Δ nDCG@10")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- design v2 results


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _protocol_title(protocol: str) -> str:
    from .report import PROTOCOL_LABELS

    return PROTOCOL_LABELS.get(protocol, protocol)


def _protocols(df: pd.DataFrame) -> list[str]:
    found = list(dict.fromkeys(df["protocol"])) if "protocol" in df else []
    return sorted(found, key=lambda p: (p != "teacher", p)) or ["teacher"]


def _ci_bars(ax, x, y, low, high, color) -> None:
    keep = np.isfinite(np.asarray(low, dtype=float)) & np.isfinite(np.asarray(high, dtype=float))
    if keep.any():
        y, low, high = (np.asarray(v, dtype=float)[keep] for v in (y, low, high))
        ax.errorbar(np.asarray(x, dtype=float)[keep], y,
                    yerr=[np.clip(y - low, 0, None), np.clip(high - y, 0, None)], fmt="none",
                    ecolor=color, capsize=2, lw=1)


@_styled
def delta_by_k(cells: pd.DataFrame, runs: pd.DataFrame, metric: str = "nDCG@10",
               title: str = "", empty: str = "no finished trained run") -> plt.Figure:
    """Δ by number of training languages k (a category), a line per student depth, one
    panel per protocol: the cell mean with its 95% CI and one faint point per draw.

    ``cells``: protocol, layers, k_langs, delta, delta_ci_low, delta_ci_high (CIs may be
    NaN); ``runs``: protocol, layers, k_langs, draw, delta (per run, mean over languages).
    """
    protocols = _protocols(cells)
    fig, axes = plt.subplots(1, len(protocols), figsize=(4.8 * len(protocols), 3.6),
                             squeeze=False, sharey=True)
    if cells.empty:
        _no_data(axes[0][0], empty)
        return fig
    ks = sorted(int(k) for k in cells["k_langs"].unique())
    depths = sorted(int(L) for L in cells["layers"].unique())
    colors = _ordered_colors(depths)
    width = 0.5 / max(1, len(depths))
    offset = {L: (i - (len(depths) - 1) / 2) * width for i, L in enumerate(depths)}
    pos = {k: i for i, k in enumerate(ks)}
    for ax, protocol in zip(axes[0], protocols, strict=True):
        for L in depths:
            c = cells[(cells["protocol"] == protocol) & (cells["layers"] == L)]
            c = c.sort_values("k_langs")
            x = np.array([pos[int(k)] for k in c["k_langs"]], dtype=float) + offset[L]
            r = runs[(runs["protocol"] == protocol) & (runs["layers"] == L)]
            ax.scatter([pos[int(k)] + offset[L] for k in r["k_langs"]], r["delta"], s=12,
                       alpha=0.35, color=colors[L], lw=0)
            ax.plot(x, c["delta"], marker="o", ms=4, color=colors[L], label=f"L{L}")
            _ci_bars(ax, x, c["delta"], c["delta_ci_low"], c["delta_ci_high"], colors[L])
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set_xticks(range(len(ks)), [str(k) for k in ks])
        ax.set(xlabel="training languages k (fixed budget)", title=_protocol_title(protocol))
    axes[0][0].set_ylabel(f"Δ {metric} over zero-shot")
    axes[0][-1].legend(title="student", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


@_styled
def delta_vs_depth(depths: pd.DataFrame, zero_shot: pd.DataFrame, metric: str = "nDCG@10",
                   empty: str = "no finished trained run") -> plt.Figure:
    """Per protocol (columns): the distilled students' Δ per depth, mean over k with its
    95% CI (top), and the zero-shot model's absolute metric per depth with its run's CI
    (bottom): what distillation adds next to where each depth starts.

    ``depths``: protocol, layers, delta, ci_low, ci_high; ``zero_shot``: protocol, layers,
    value, ci_low, ci_high (:func:`optical_lib.analysis_v2.zero_shot_depth_curve`)."""
    protocols = _protocols(depths if len(depths) else zero_shot)
    fig, axes = plt.subplots(2, len(protocols), figsize=(4.6 * len(protocols), 5.2),
                             squeeze=False, sharex=True)
    levels = sorted({int(x) for x in [*depths.get("layers", []), *zero_shot.get("layers", [])]})
    pos = {L: i for i, L in enumerate(levels)}
    for j, protocol in enumerate(protocols):
        top, bottom = axes[0][j], axes[1][j]
        d = depths[depths["protocol"] == protocol] if len(depths) else depths
        if len(d):
            x = [pos[int(L)] for L in d["layers"]]
            top.plot(x, d["delta"], marker="o", color=PALETTE[0])
            _ci_bars(top, x, d["delta"], d["ci_low"], d["ci_high"], PALETTE[0])
            top.axhline(0, color="0.5", lw=0.8)
        else:
            _no_data(top, empty)
        z = zero_shot[zero_shot["protocol"] == protocol] if len(zero_shot) else zero_shot
        if len(z):
            x = [pos[int(L)] for L in z["layers"]]
            bottom.plot(x, z["value"], marker="s", ls="--", color=METHOD_COLORS["none"])
            _ci_bars(bottom, x, z["value"], z["ci_low"], z["ci_high"], METHOD_COLORS["none"])
        else:
            _no_data(bottom, "no finished zero-shot run")
        top.set_title(_protocol_title(protocol))
        if levels:
            bottom.set_xticks(range(len(levels)), [f"L{L}" for L in levels])
        bottom.set_xlabel("student depth")
    axes[0][0].set_ylabel(f"Δ {metric} (mean over k)")
    axes[1][0].set_ylabel(f"zero-shot {metric}")
    fig.tight_layout()
    return fig


@_styled
def learning_curve(points: pd.DataFrame, suites=None, metric: str = "nDCG@10",
                   empty: str = "no finished learning-curve run") -> plt.Figure:
    """The learning curve: macro ``metric`` against training pairs (log scale), one panel
    per suite, a colour per student depth, solid for the student protocol and dashed for
    OPTICAL's; each depth's zero-shot model is its point at 0 pairs (drawn left of the
    smallest budget), BM25 a black horizontal line.

    ``points``: :func:`optical_lib.report.curve_points` (system, layers, pairs, protocol,
    suite, value); ``suites`` picks and orders the panels (default: those present)."""
    from .report import CURVE_FIGURE_SUITES

    suites = list(suites or [s for s in CURVE_FIGURE_SUITES if s in set(points["suite"])]
                  or sorted(set(points["suite"])))
    fig, axes = plt.subplots(1, max(1, len(suites)), figsize=(4.2 * max(1, len(suites)), 3.7),
                             squeeze=False, sharey=True)
    trained = points[points["system"] == "student"]
    if trained.empty:
        _no_data(axes[0][0], empty)
        return fig
    smallest = float(trained["pairs"].min())
    zero_at = smallest / 6  # where "0 pairs" sits on the log axis
    depths = sorted(int(L) for L in points["layers"].dropna().unique())
    colors = _ordered_colors(depths)
    styles = {"student": "-", "teacher": "--"}
    for ax, suite in zip(axes[0], suites, strict=False):
        here = points[points["suite"] == suite]
        for protocol, ls in styles.items():
            for L in depths:
                line = here[(here["protocol"] == protocol) & (here["layers"] == L)]
                line = line.sort_values("pairs")
                if line[line["system"] == "student"].empty:
                    continue
                x = line["pairs"].where(line["pairs"] > 0, zero_at)
                ax.plot(x, line["value"], ls=ls, marker="o", ms=3.5, color=colors[L])
        bm25 = here[here["system"] == "BM25"]["value"]
        if len(bm25):
            ax.axhline(float(bm25.iloc[0]), color="black", lw=1.2)
            ax.annotate("BM25", (1, float(bm25.iloc[0])), xycoords=("axes fraction", "data"),
                        xytext=(-2, 3), textcoords="offset points", ha="right", fontsize=8)
        ax.set_xscale("log")
        ax.axvline(np.sqrt(zero_at * smallest), color="0.8", lw=0.8)
        budgets = sorted(set(trained["pairs"].astype(float)))
        ax.set_xticks([zero_at, *budgets], ["0", *(f"{t / 1000:.0f}k" for t in budgets)])
        ax.minorticks_off()
        ax.set(title=suite, xlabel="training pairs")
    axes[0][0].set_ylabel(f"macro {metric}")
    handles = [plt.Line2D([], [], color=colors[L], marker="o", ms=3.5, label=f"L{L}")
               for L in depths]
    handles += [plt.Line2D([], [], color="0.3", ls=ls, label=_protocol_title(p))
                for p, ls in styles.items()]
    axes[0][-1].legend(handles=handles, fontsize=7, loc="best")
    fig.tight_layout()
    return fig


@_styled
def language_delta_map(lang: pd.DataFrame, metric: str = "nDCG@10",
                       empty: str = "no finished trained run") -> plt.Figure:
    """Mean Δ per evaluation language (rows, grouped by language family, the family after
    the name) and (depth, k) cell (columns), mean over the cell's runs; a diverging scale
    centred on 0. ``lang``: query_lang, layers, k_langs, delta (one row per run and
    language: :func:`optical_lib.analysis_v2.language_deltas`)."""
    from .data import language_families

    if lang.empty:
        fig, ax = plt.subplots(figsize=(6, 3))
        _no_data(ax, empty)
        return fig
    table = lang.pivot_table(index="query_lang", columns=["layers", "k_langs"],
                             values="delta", aggfunc="mean")
    families = language_families(table.index)
    order = sorted(table.index, key=lambda c: (families[c], c))
    table = table.loc[order]
    fig, ax = plt.subplots(figsize=(2.5 + 0.42 * table.shape[1], 1.2 + 0.26 * table.shape[0]))
    limit = float(np.nanmax(np.abs(table.to_numpy()))) or 1.0
    sns.heatmap(table, cmap="vlag", center=0, vmin=-limit, vmax=limit, ax=ax,
                cbar_kws={"label": f"mean Δ {metric}"},
                xticklabels=[f"L{L} k{k}" for L, k in table.columns],
                yticklabels=[f"{language_label(c)} · {families[c]}" for c in order])
    bounds = [i for i in range(1, len(order)) if families[order[i]] != families[order[i - 1]]]
    for i in bounds:
        ax.axhline(i, color="white", lw=1.5)
    depths = [L for L, _ in table.columns]
    for j in range(1, len(depths)):
        if depths[j] != depths[j - 1]:
            ax.axvline(j, color="white", lw=1.5)
    ax.set(xlabel="student depth L and training languages k", ylabel="")
    ax.tick_params(axis="x", rotation=90, labelsize=7)
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    return fig


@_styled
def delta_vs_related_share(lang: pd.DataFrame, metric: str = "nDCG@10",
                           covariate: str = "share_same_family",
                           empty: str = "no finished trained run") -> plt.Figure:
    """Per-(run, language) mean Δ against the share of training pairs whose language is in
    the evaluation language's family, points coloured by depth, with a least-squares line
    per depth (descriptive); one panel per protocol. ``lang``: protocol, layers, delta and
    the covariate (:func:`optical_lib.analysis_v2.language_deltas`)."""
    protocols = _protocols(lang)
    fig, axes = plt.subplots(1, len(protocols), figsize=(4.6 * len(protocols), 3.6),
                             squeeze=False, sharey=True)
    if lang.empty or covariate not in lang.columns:
        _no_data(axes[0][0], empty if lang.empty else f"no covariate {covariate}")
        return fig
    colors = _ordered_colors(lang["layers"].unique())
    for ax, protocol in zip(axes[0], protocols, strict=True):
        part = lang[lang["protocol"] == protocol]
        for L, d in part.groupby("layers", sort=True):
            x, y = d[covariate].astype(float).to_numpy(), d["delta"].to_numpy()
            ax.scatter(x, y, s=8, alpha=0.3, color=colors[L], lw=0, label=f"L{int(L)}")
            if np.unique(x).size > 1:
                slope, intercept = np.polyfit(x, y, 1)
                grid = np.array([x.min(), x.max()])
                ax.plot(grid, intercept + slope * grid, color=colors[L], lw=1.5)
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set(xlabel="share of training pairs in the language's family",
               title=_protocol_title(protocol))
    axes[0][0].set_ylabel(f"Δ {metric} (run × language)")
    axes[0][-1].legend(title="student", fontsize=8, markerscale=2)
    fig.tight_layout()
    return fig
