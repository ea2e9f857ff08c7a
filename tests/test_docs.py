"""The commands the README and the reproducibility page tell people to run, run here.

Every shell line of those pages that starts a grid, papermill or a make target is collected
from their ``bash`` blocks and executed as written, made cheap only where it would otherwise
compute for minutes: grid commands get ``--dry-run`` (which still expands and validates every
setting and checks ``--only`` ids), papermill commands run ``--prepare-only`` and the
parameters they inject are validated as the notebook would, and make targets are expanded with
``make -n``. A documented command that no longer parses, names an unknown run id or passes a
list the wrong way fails here, before a reader finds out.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from optical_lib.paths import PROJECT_ROOT

PAGES = ("README.md", "book/reproducibility.md")
#: Lines that need a cluster or a remote scheduler: documented, checked by hand only.
NEEDS_A_CLUSTER = ("--scheduler", "node01", "$(hostname)", "squeue", "sbatch")


def documented_commands() -> list[tuple[str, str]]:
    """(page, command) for every shell line of the pages' bash blocks, continuations joined."""
    out = []
    for page in PAGES:
        text = (PROJECT_ROOT / page).read_text()
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
            block = re.sub(r"\\\n\s*", " ", block)
            for line in block.splitlines():
                line = line.split(" # ")[0].strip()
                if line and not line.startswith("#"):
                    out.append((page, line))
    return out


COMMANDS = documented_commands()


def of_kind(prefix: str) -> list[tuple[str, str]]:
    return [(p, c) for p, c in COMMANDS
            if prefix in c and not any(s in c for s in NEEDS_A_CLUSTER)]


def test_the_pages_document_the_commands_we_check():
    assert len(of_kind("optical_lib.grid")) >= 3
    assert len(of_kind("papermill")) >= 3
    assert any("rm -rf results/runs/L* book/runs/L*" in c for _, c in COMMANDS)


@pytest.mark.parametrize(("page", "command"), of_kind("optical_lib.grid"),
                         ids=lambda v: v if v in PAGES else None)
def test_documented_grid_commands_expand_and_validate(page, command):
    args = shlex.split(command)
    start = args.index("optical_lib.grid") + 1
    grid_args = [a for a in args[start:] if a != "--dry-run"] + ["--dry-run"]
    run = subprocess.run([sys.executable, "-m", "optical_lib.grid", *grid_args],
                         cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"{page}: {command}\n{run.stdout[-2000:]}{run.stderr[-2000:]}"
    if "--only" in args:  # the documented run id is a published setting of that profile
        run_id = args[args.index("--only") + 1]
        assert run_id in run.stdout and "done" in run.stdout, run.stdout


@pytest.mark.parametrize(("page", "command"), of_kind("optical_lib.tune"),
                         ids=lambda v: v if v in PAGES else None)
def test_documented_tuning_commands_parse_and_validate(page, command):
    args = shlex.split(command)
    start = args.index("optical_lib.tune") + 1
    run = subprocess.run([sys.executable, "-m", "optical_lib.tune", *args[start:], "--dry-run"],
                         cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"{page}: {command}\n{run.stdout[-2000:]}{run.stderr[-2000:]}"
    assert "lr=" in run.stdout


@pytest.mark.parametrize(("page", "command"), of_kind("papermill"),
                         ids=lambda v: v if v in PAGES else None)
def test_documented_papermill_commands_give_valid_settings(page, command, tmp_path):
    from optical_lib import data
    from optical_lib.experiment import ExperimentConfig, validate

    args = shlex.split(command)
    args[0] = str(Path(sys.executable).with_name("papermill"))
    args[2] = str(tmp_path / "out.ipynb")  # papermill INPUT OUTPUT ...
    run = subprocess.run([*args, "--prepare-only"], cwd=PROJECT_ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, f"{page}: {command}\n{run.stderr[-2000:]}"
    import nbformat

    nb = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    namespace: dict = {}
    for cell in nb.cells:  # the template's defaults, then what papermill injected
        tags = cell.metadata.get("tags", [])
        if "parameters" in tags or "injected-parameters" in tags:
            exec(cell.source, namespace)  # noqa: S102 - the notebook's own parameter cells
    names = ("profile model layers method k_langs budget seed eval_tatoeba eval_xquad "
             "train_langs eval_webfaq device epochs lr n_boot threads").split()
    config = ExperimentConfig.from_parameters(**{k: namespace[k] for k in names})
    if config.profile == "webfaq":
        with pytest.raises(data.HubUnavailableError, match="offline"):
            validate(config)  # no internet here: the documented message, at once
    else:
        validate(config)


@pytest.mark.parametrize(("page", "command"), of_kind("make "), ids=lambda v: v if v in PAGES
                         else None)
def test_documented_make_targets_exist_and_expand(page, command):
    for part in command.split("&&"):
        args = shlex.split(part.strip())
        if not args or args[0] != "make":
            continue
        run = subprocess.run(["make", "-n", *args[1:]], cwd=PROJECT_ROOT, capture_output=True,
                             text=True, timeout=60)
        assert run.returncode == 0, f"{page}: {command}\n{run.stderr[-2000:]}"
        for option in ("EXECUTOR=dask", "WORKERS=2"):
            if option in args and "grid" in args:
                assert "--executor dask" in run.stdout and "--workers 2" in run.stdout


def test_the_from_scratch_recipe_removes_only_what_the_grid_rebuilds():
    """``rm -rf results/runs/L* book/runs/L*`` deletes exactly the archived v1 runs, which
    ``make study`` (the medium profile) computes again, and no v2 run or other page."""
    from optical_lib.grid import config_of, profile_settings

    tracked = subprocess.run(["git", "ls-files", "results/runs", "book/runs"], cwd=PROJECT_ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    removed = {Path(p).parts[2].removesuffix(".ipynb") for p in tracked
               if Path(p).parts[2].startswith("L")}
    assert removed == {config_of(p).run_id for p in profile_settings("medium")}
    assert all(Path(p).parts[2].startswith(("L", "v2-")) for p in tracked)
