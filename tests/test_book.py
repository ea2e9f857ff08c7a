"""The book as a reader meets it: math served from the build, the toy page executed, figures
that change no global style, citation metadata in place."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import yaml

from optical_lib import distill, plots

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def test_plots_change_no_global_style():
    keys = ("figure.dpi", "savefig.dpi", "axes.grid", "axes.prop_cycle", "axes.facecolor")
    before = {k: matplotlib.rcParams[k] for k in keys}
    cost = np.random.default_rng(0).random((2, 3))
    fig = plots.transport_plans(cost, {0.1: cost / cost.sum()}, ["a", "b"], ["x", "y", "z"])
    assert fig.dpi == plots.DPI  # the style applied inside the function ...
    plots.close(fig)
    assert {k: matplotlib.rcParams[k] for k in keys} == before  # ... and nowhere else


def test_compact_png_is_a_smaller_palette_image_of_the_same_figure():
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    rows = pd.DataFrame({"scope": "language", "metric": "nDCG@10", "task": "flores-x-eng",
                         "query_lang": ["hau", "yor", "zul", "amh", "swh", "som"],
                         "value": rng.uniform(0.2, 0.8, 6)})
    rows["ci_low"], rows["ci_high"] = rows["value"] - 0.05, rows["value"] + 0.05
    fig = plots.per_language(rows, "nDCG@10", title="six languages")
    full = io.BytesIO()
    with plots.style():
        fig.savefig(full, format="png", dpi=plots.DPI, bbox_inches="tight")
    shown = plots.compact_png(fig)
    plots.close(fig)
    small, big = Image.open(io.BytesIO(shown.data)), Image.open(io.BytesIO(full.getvalue()))
    assert small.mode == "P" and small.size == big.size
    assert len(shown.data) < 0.6 * len(full.getvalue())
    # the palette keeps the picture: no pixel moves far from the original colour
    diff = np.abs(np.asarray(small.convert("RGB"), float)
                  - np.asarray(big.convert("RGB"), float))
    assert np.percentile(diff, 99) < 24


def test_one_label_set_and_language_names():
    assert plots.METHOD_LABEL is distill.METHOD_LABELS
    assert plots.language_label("swh") == "swh (Swahili)"
    assert plots.language_label("xx-unknown") == "xx-unknown"
    history = pd.DataFrame({"step": range(5), "ot": np.linspace(1, 0.5, 5)})
    fig = plots.loss_curve(history)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["OT term"]
    plots.close(fig)


def test_citation_metadata():
    cff = yaml.safe_load((PROJECT_ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    assert cff["authors"] and cff["title"] and cff["message"] and cff["license"] == "MIT"
    assert any(r.get("doi") == "10.1145/3539597.3570468" for r in cff["references"])
    assert "MIT License" in (PROJECT_ROOT / "LICENSE").read_text()


# The run notebooks are papermill runs of one template (notebooks/experiment.ipynb), so the
# strict build reads one notebook of each kind: the grid adds a few hundred more of the same
# kinds, which would make the build (and the suite) grow with the study without testing anything
# new. `make book` builds every page; the index tests below check every link of both indexes.
RUN_LINK = re.compile(r"\]\(runs/([^)]+)\.ipynb\)")
INDEXES = {"runs_v2.md": "v2-", "runs.md": "L"}  # index page: the run-id prefix it lists


def run_kind(run_id: str) -> str:
    """What a run notebook shows, without the hash, k, draw and seed: one page of each kind."""
    return re.sub(r"-[kds]\d+(?=-|$)", "", re.sub(r"-[0-9a-f]{8}$", "", run_id))


def book_with_one_run_of_each_kind(dest: Path) -> list[str]:
    """A copy of the project made of links, whose book/runs holds the first notebook (by name) of
    each kind, with the index rows of the others left out. Returns the run ids kept."""
    dest.mkdir()
    for entry in PROJECT_ROOT.iterdir():
        if entry.name not in {"book", ".git", "_build", ".venv"}:
            (dest / entry.name).symlink_to(entry)
    (dest / "book" / "runs").mkdir(parents=True)
    for entry in (PROJECT_ROOT / "book").iterdir():
        if entry.name != "runs" and entry.name not in INDEXES:
            (dest / "book" / entry.name).symlink_to(entry)
    kept: dict[str, str] = {}
    for nb in sorted((PROJECT_ROOT / "book" / "runs").glob("*.ipynb")):
        kept.setdefault(run_kind(nb.stem), nb.stem)
    for run_id in kept.values():
        (dest / "book" / "runs" / f"{run_id}.ipynb").symlink_to(
            PROJECT_ROOT / "book" / "runs" / f"{run_id}.ipynb")
    for index in INDEXES:
        lines = (PROJECT_ROOT / "book" / index).read_text().splitlines(keepends=True)
        (dest / "book" / index).write_text("".join(
            line for line in lines if all(m in kept.values() for m in RUN_LINK.findall(line))))
    return sorted(kept.values())


def test_run_kind_keeps_what_a_page_shows():
    assert run_kind("v2-L6-optical-mse-k16-d3-s0-tme5-0151ac26") == "v2-L6-optical-mse-tme5"
    assert run_kind("v2-L6-optical-mse-pool1984-d0-s0-tme5-1a2b3c4d") == (
        "v2-L6-optical-mse-pool1984-tme5")
    assert run_kind("v2-L12-none-tminilm-50c35cb6") == "v2-L12-none-tminilm"
    assert run_kind("L2-optical-k64-s1-161d923a") == "L2-optical"
    assert run_kind("v2-bm25-57efac87") == "v2-bm25"


def test_each_index_links_every_committed_run_notebook_once():
    """The indexes the sampled build shortens: every row links a committed notebook, and every
    committed notebook is listed once, in the index of its version."""
    committed = {p.stem for p in (PROJECT_ROOT / "book" / "runs").glob("*.ipynb")}
    listed: list[str] = []
    for index, prefix in INDEXES.items():
        links = RUN_LINK.findall((PROJECT_ROOT / "book" / index).read_text())
        assert links and all(link.startswith(prefix) for link in links), index
        listed += links
    assert sorted(listed) == sorted(committed)


def test_committed_book_builds_strictly_serves_mathjax_and_executes_only_computed_pages(
        tmp_path):
    """The published book (executed notebooks as committed, one run notebook of each kind) builds
    with zero warnings, serves MathJax itself and executes at build time only the pages that
    compute nothing heavy."""
    if not (PROJECT_ROOT / "book" / "analysis.ipynb").exists():
        raise AssertionError("book/analysis.ipynb is missing: run `make analysis` and commit it")
    project = tmp_path / "project"
    kept = book_with_one_run_of_each_kind(project)
    jb = Path(sys.executable).with_name("jupyter-book")
    build = subprocess.run([str(jb), "build", str(project), "-W", "-n", "--keep-going",
                            "--path-output", str(tmp_path)], capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-2000:]
    html = tmp_path / "_build" / "html"
    assert sorted(p.stem for p in (html / "book" / "runs").glob("*.html")) == kept
    assert (html / "_static" / "mathjax" / "tex-chtml.js").is_file()
    pages = list((html / "book").rglob("*.html"))
    for page in pages:
        scripts = re.findall(r'<script[^>]*src="([^"]*mathjax[^"]*)"', page.read_text())
        assert all(not s.startswith(("http:", "https:", "//")) for s in scripts), (page, scripts)
    background = (html / "book" / "background.html").read_text()
    assert '_static/mathjax/tex-chtml.js"' in background and "\\begin{aligned}" in background
    toy = (html / "book" / "ot_toy.html").read_text()
    assert "<img" in toy and "exact OT" in toy  # outputs exist only if the page was executed
    executed = re.findall(r"(\S+): Executed notebook", build.stdout + build.stderr)
    # the two pages computed at build time (toy OT, the v2 splits); never a run or the analysis
    assert sorted(Path(p).name for p in executed) == ["ot_toy.md", "splits.md"]
    splits = (html / "book" / "splits.html").read_text()
    assert "Hausa" in splits and "<table" in splits
