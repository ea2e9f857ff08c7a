"""The notebooks are kept twice: ``.ipynb`` (what papermill runs) and a paired jupytext
``py:percent`` file (what people read, diff and lint). They must say the same thing."""

from __future__ import annotations

from pathlib import Path

import jupytext
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def cells(path: Path) -> list[tuple[str, str, tuple[str, ...]]]:
    nb = jupytext.read(path)
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", ())))
            for c in nb.cells]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_and_its_text_file_agree(notebook):
    text = notebook.with_suffix(".py")
    assert text.exists(), f"{notebook.name} has no paired {text.name}: run `make notebooks`"
    assert cells(notebook) == cells(text), (
        f"{notebook.name} and {text.name} differ: edit the .py file, then run `make notebooks` "
        "(jupytext --sync)")


def test_every_notebook_is_found():
    assert {p.stem for p in NOTEBOOKS} >= {"experiment", "analysis"}


PUBLISHED = sorted((Path(__file__).resolve().parent.parent / "book").glob("*.ipynb"))


@pytest.mark.parametrize("page", PUBLISHED, ids=lambda p: p.name)
def test_published_pages_show_no_object_reprs(page):
    # an empty Markdown output renders as its repr ("<IPython.core.display.Markdown
    # object>"): a cell with nothing to say must output nothing
    import json

    shown = []
    for cell in json.loads(page.read_text())["cells"]:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            markdown = "".join(data.get("text/markdown", "x"))
            plain = "".join(data.get("text/plain", ""))
            if not markdown.strip() or ("text/markdown" not in data and "object at" in plain):
                shown.append(plain[:80])
    assert not shown, f"{page.name} shows object reprs: {shown}"
