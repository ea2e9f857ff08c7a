"""The papermill grid: profiles, resumability, failure handling (on a fast stand-in notebook),
and the real smoke profile end to end, through the analysis and a strict book build."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from optical_lib import grid
from optical_lib.paths import PROJECT_ROOT

FAKE_BODY = '''
from pathlib import Path
from optical_lib.evaluate import RESULT_COLUMNS, write_results
from optical_lib.experiment import ExperimentConfig

config = ExperimentConfig.from_parameters(layers=layers, method=method, k_langs=k_langs,
                                          eval_xquad=eval_xquad)
root = Path(results_dir).parent
with open(root / "executions.log", "a") as log:
    log.write(config.run_id + "\\n")
if method == "optical" and k_langs == 64 and not (root / "fixed").exists():
    raise RuntimeError("injected failure")
row = {c: None for c in RESULT_COLUMNS}
row.update(run_id=config.run_id, profile="offline", task="tatoeba", query_lang="*",
           scope="macro", metric="RR@10", value=0.5, layers=layers, method=method)
write_results([row], Path(results_dir) / config.run_id / "results.json")
'''


@pytest.fixture
def fake_template(tmp_path):
    params = new_code_cell('layers = 2\nmethod = "none"\nk_langs = 8\neval_xquad = None\n'
                           'results_dir = ""')
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[new_markdown_cell("# template"), params, new_code_cell(FAKE_BODY)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path = tmp_path / "fake.ipynb"
    nbformat.write(nb, path)
    return path


SETTINGS = [{"layers": 2, "method": "none", "eval_xquad": []},
            {"layers": 2, "method": "optical", "k_langs": 8, "eval_xquad": []},
            {"layers": 2, "method": "optical", "k_langs": 64, "eval_xquad": []}]


def test_profiles_expand_the_design():
    full = grid.profile_settings("full")
    assert len(full) == 4 + 3 * 4 * 2 * 7
    configs = [grid.config_of(p) for p in full]
    assert len({c.run_id for c in configs}) == len(full)
    quick = {grid.config_of(p).run_id for p in grid.profile_settings("quick")}
    medium = {grid.config_of(p).run_id for p in grid.profile_settings("medium")}
    assert len(quick) == 8 and len(medium) == 30 and quick <= medium
    with pytest.raises(ValueError, match="Unknown profile 'huge'"):
        grid.profile_settings("huge")


def test_grid_skips_finished_records_failures_and_resumes(tmp_path, fake_template, monkeypatch):
    monkeypatch.setattr(grid, "profile_settings", lambda profile: SETTINGS)
    results, notebooks = tmp_path / "results", tmp_path / "nb"
    ids = [grid.config_of(p).run_id for p in SETTINGS]

    dry = grid.run_grid("x", results, notebooks, dry_run=True, progress=False)
    assert dry["state"].tolist() == ["pending"] * 3

    first = grid.run_grid("x", results, notebooks, template=fake_template, progress=False)
    assert first["state"].tolist()[2] == "failed"
    failures = json.loads((results / "failures.json").read_text())
    assert list(failures) == [ids[2]] and "injected failure" in failures[ids[2]]["error"]
    assert sorted(p.stem for p in notebooks.glob("*.ipynb")) == sorted(ids[:2])
    assert (results / "failed" / f"{ids[2]}.ipynb").exists()
    title = nbformat.read(notebooks / f"{ids[0]}.ipynb", 4).cells[0].source
    assert title.startswith("# L2 student, zero-shot baseline")

    (results / "fixed").touch()
    second = grid.run_grid("x", results, notebooks, template=fake_template, progress=False)
    assert second["state"].tolist()[:2] == ["done", "done"]
    executed = (results / "executions.log").read_text().split()
    assert executed == [ids[0], ids[1], ids[2], ids[2]]  # only the failed one ran again
    assert json.loads((results / "failures.json").read_text()) == {}
    table = pd.read_parquet(results / "summary.parquet")
    assert sorted(table["run_id"]) == sorted(ids)
    assert json.loads((results / "grid.json").read_text())["run_ids"] == ids
    # killed between writing the results and moving the notebook: the setting is rerun
    (notebooks / f"{ids[1]}.ipynb").unlink()
    again = grid.run_grid("x", results, notebooks, dry_run=True, progress=False)
    assert again["state"].tolist() == ["done", "pending", "done"]


@pytest.mark.slow
def test_smoke_profile_end_to_end_into_a_strict_book(tmp_path):
    """The real notebooks on the real model and data, then the analysis, then the book."""
    results, runs = tmp_path / "results", tmp_path / "book" / "runs"
    status = grid.run_grid("smoke", results, runs, progress=False)
    assert status["state"].str.startswith("ran").all(), status
    papermill = Path(sys.executable).with_name("papermill")
    subprocess.run([str(papermill), "--no-progress-bar", str(PROJECT_ROOT / "notebooks" /
                    "analysis.ipynb"), str(tmp_path / "book" / "analysis.ipynb"),
                    "-p", "results_dir", str(results)], check=True, cwd=PROJECT_ROOT)
    # the book's sources, with this run's notebooks in place of the committed ones
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(PROJECT_ROOT / name, tmp_path / name)
    for page in (PROJECT_ROOT / "book").glob("*.*"):
        if page.suffix in (".md", ".bib"):
            shutil.copy(page, tmp_path / "book" / page.name)
    shutil.copy(PROJECT_ROOT / "book" / "runs" / "index.md", runs / "index.md")
    jb = Path(sys.executable).with_name("jupyter-book")
    build = subprocess.run([str(jb), "build", str(tmp_path), "-W", "-n", "--keep-going"],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-2000:]
    html = (tmp_path / "_build" / "html" / "book" / "analysis.html").read_text()
    assert "smoke" in html and "Size × diversity" in html


def test_committed_book_builds_strictly(tmp_path):
    """The published book (executed notebooks as committed) builds with zero warnings."""
    if not (PROJECT_ROOT / "book" / "analysis.ipynb").exists():
        pytest.fail("book/analysis.ipynb is missing: run `make analysis` and commit it")
    jb = Path(sys.executable).with_name("jupyter-book")
    build = subprocess.run([str(jb), "build", str(PROJECT_ROOT), "-W", "-n", "--keep-going",
                            "--path-output", str(tmp_path)], capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-2000:]
