"""The papermill grid: profiles, resumability, failure handling and threads (on a fast
stand-in notebook); the Dask executor on a real LocalCluster with a worker killed mid-setting
and a client killed and restarted; the real smoke profile on both executors (same run ids and
metrics), through the analysis and a strict book build."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from optical_lib import grid
from optical_lib.experiment import validate
from optical_lib.layout import ResultsLayout, claim_holder
from optical_lib.paths import PROJECT_ROOT

FAKE_BODY = '''
import json, os, time
from pathlib import Path
from ipykernel.connect import get_connection_info
from optical_lib.evaluate import RESULT_COLUMNS, write_results
from optical_lib.experiment import ExperimentConfig

config = ExperimentConfig.from_parameters(layers=layers, method=method, k_langs=k_langs,
                                          eval_xquad=eval_xquad)
root = Path(results_dir).parent
(root / "pids").mkdir(exist_ok=True)
(root / "pids" / config.run_id).write_text(str(os.getppid()))  # the process running papermill
started = time.time()
with open(root / "starts.log", "a") as log:
    log.write(config.run_id + "\\n")
if (root / f"kill-always-{config.run_id}").exists():  # this setting's worker always dies
    os.kill(os.getppid(), 9)
    os._exit(1)
time.sleep(sleep)
if method == "optical" and k_langs == 64 and not (root / "fixed").exists():
    raise RuntimeError("injected failure")
row = {c: None for c in RESULT_COLUMNS}
row.update(run_id=config.run_id, profile="offline", task="tatoeba", query_lang="*",
           scope="macro", metric="RR@10", value=0.5, layers=layers, method=method)
write_results([row], Path(results_dir) / config.run_id / "results.json")
with open(root / "executions.log", "a") as log:
    log.write(f"{config.run_id} {threads} {os.environ.get('OMP_NUM_THREADS')} "
              f"{os.environ.get('OMP_WAIT_POLICY')} {started:.3f} {time.time():.3f} "
              f"{json.loads(get_connection_info())['transport']} "
              f"{os.environ.get('OPTICAL_PROGRESS')} {device} "
              f"{os.environ.get('MALLOC_TRIM_THRESHOLD_', '-')}\\n")
'''


def make_template(path: Path, sleep: float = 0.0) -> Path:
    params = new_code_cell(f'layers = 2\nmethod = "none"\nk_langs = 8\neval_xquad = None\n'
                           f'results_dir = ""\nthreads = None\ndevice = "as-in-template"\n'
                           f'sleep = {sleep}')
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[new_markdown_cell("# template"), params, new_code_cell(FAKE_BODY)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.fixture
def fake_template(tmp_path):
    return make_template(tmp_path / "fake.ipynb")


def executions(results: Path) -> list[list[str]]:
    """One row per finished execution: run id, threads, OMP_NUM_THREADS, OMP_WAIT_POLICY,
    start and end time."""
    log = results / "executions.log"
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


SETTINGS = [{"layers": 2, "method": "none", "eval_xquad": []},
            {"layers": 2, "method": "optical", "k_langs": 8, "eval_xquad": []},
            {"layers": 2, "method": "optical", "k_langs": 64, "eval_xquad": []}]
IDS = [grid.config_of(p).run_id for p in SETTINGS]


def test_profiles_expand_the_design():
    full = grid.profile_settings("full")
    configs = [grid.config_of(p) for p in full]
    for config in configs:
        validate(config)
    assert len({c.run_id for c in configs}) == len(full)
    trained = [c for c in configs if c.method == grid.STUDY_METHOD]
    core = [c for c in trained if c.teacher == "me5-small" and c.budget == 1984
            and c.relatives]
    assert len(core) == 4 * len(grid.STUDY_KS) * grid.STUDY_DRAWS
    assert {c.training.amp for c in trained} == {"bf16"}
    # every draw is scored on FLORES-200; only the first ones on Tatoeba and XQuAD-R too
    assert all(c.eval_flores for c in configs if c.method != "bm25")
    assert {c.draw for c in core if c.eval_xquad} == set(range(grid.SECONDARY_DRAWS))
    # a trained setting's baseline is a setting of the profile (same depth, teacher, bf16)
    zero = {(c.layers, c.teacher, c.training.amp) for c in configs if c.method == "none"}
    assert {(c.layers, c.teacher, c.training.amp) for c in trained} <= zero
    arms = [c for c in trained if c not in core]
    assert {c.budget for c in arms} == {1984, grid.SMALL_BUDGET}
    assert {c.teacher for c in arms} == {"me5-small", "minilm-l6"}
    assert not all(c.relatives for c in arms)
    quick = [grid.config_of(p) for p in grid.profile_settings("quick")]
    assert {c.run_id for c in quick} <= {c.run_id for c in configs}
    medium = {grid.config_of(p).run_id for p in grid.profile_settings("medium")}
    assert len(medium) == 30
    with pytest.raises(ValueError, match="Unknown profile 'huge'"):
        grid.profile_settings("huge")


def test_kernel_environment_is_set_for_the_block_and_restored_after(monkeypatch):
    monkeypatch.setenv("OPTICAL_T_SET", "old")
    monkeypatch.setenv("OPTICAL_T_UNSET", "old")
    monkeypatch.delenv("OPTICAL_T_NEW", raising=False)
    env = {"OPTICAL_T_SET": "new", "OPTICAL_T_UNSET": None, "OPTICAL_T_NEW": "1"}
    with pytest.raises(RuntimeError), grid._environ(env):
        assert os.environ["OPTICAL_T_SET"] == "new" and os.environ["OPTICAL_T_NEW"] == "1"
        assert "OPTICAL_T_UNSET" not in os.environ
        raise RuntimeError("a failing setting restores the environment too")
    assert os.environ["OPTICAL_T_SET"] == os.environ["OPTICAL_T_UNSET"] == "old"
    assert "OPTICAL_T_NEW" not in os.environ


def test_grid_skips_finished_records_failures_and_resumes(tmp_path, fake_template, monkeypatch):
    monkeypatch.setattr(grid, "profile_settings", lambda profile: SETTINGS)
    results, notebooks = tmp_path / "results", tmp_path / "nb"
    layout, ids = ResultsLayout(results, notebooks), IDS

    dry = grid.run_grid("x", results, notebooks, dry_run=True, progress=False)
    assert dry["state"].tolist() == ["pending"] * 3

    first = grid.run_grid("x", results, notebooks, template=fake_template, progress=False)
    assert first["state"].tolist()[2] == "failed"
    failures = json.loads(layout.failures_file("x").read_text())
    assert list(failures) == [ids[2]] and "injected failure" in failures[ids[2]]["error"]
    assert sorted(p.stem for p in notebooks.glob("*.ipynb")) == sorted(ids[:2])
    assert layout.failed_notebook("x", ids[2]).exists()
    title = nbformat.read(notebooks / f"{ids[0]}.ipynb", 4).cells[0].source
    assert title.startswith("# L2 · zero-shot\n")
    meta = nbformat.read(notebooks / f"{ids[0]}.ipynb", as_version=4).metadata["papermill"]
    assert meta["output_path"].endswith(f"{ids[0]}.ipynb") and "grid-" not in meta["input_path"]
    # every setting ran with one thread, set in the parameters and the kernel's environment
    assert [r[1:4] for r in executions(results)] == [["1", "1", "PASSIVE"]] * 2
    # kernels talk over Unix sockets: no TCP port to lose to a kernel starting alongside
    assert [r[6] for r in executions(results)] == ["ipc"] * 2
    # and draw no progress bars (each update would be an output cell of the run page)
    assert [r[7] for r in executions(results)] == ["0"] * 2
    assert (first["threads"] == 1).all()
    assert not list((results / "claims").glob("*.claim"))  # claims released

    (results / "fixed").touch()
    second = grid.run_grid("x", results, notebooks, template=fake_template, progress=False,
                           threads=2)
    assert second["state"].tolist()[:2] == ["done", "done"]
    assert (results / "starts.log").read_text().split() == [ids[0], ids[1], ids[2], ids[2]]
    assert executions(results)[-1][:4] == [ids[2], "2", "2", "PASSIVE"]
    assert json.loads(layout.failures_file("x").read_text()) == {}
    table = pd.read_parquet(layout.summary("x"))
    assert sorted(table["run_id"]) == sorted(ids)
    info = json.loads(layout.grid_file("x").read_text())
    assert info["run_ids"] == ids and info["executor"] == "local"
    assert info["threads_per_worker"] == 2
    # a finished grid run again (another executor, threads) computes nothing and rewrites the
    # profile's files byte for byte (make study on a clone reproduces the published results)
    files = [layout.summary("x", ".csv"), layout.summary("x", ".parquet"), layout.grid_file("x")]
    before = [f.read_bytes() for f in files]
    third = grid.run_grid("x", results, notebooks, template=fake_template, progress=False)
    assert (third["state"] == "done").all()
    assert [f.read_bytes() for f in files] == before
    # killed between writing the results and copying the notebook: the setting is rerun
    (notebooks / f"{ids[1]}.ipynb").unlink()
    again = grid.run_grid("x", results, notebooks, dry_run=True, progress=False)
    assert again["state"].tolist() == ["done", "pending", "done"]


def test_only_runs_the_named_settings(tmp_path, fake_template, monkeypatch):
    monkeypatch.setattr(grid, "profile_settings", lambda profile: SETTINGS)
    results, notebooks = tmp_path / "results", tmp_path / "nb"
    status = grid.run_grid("x", results, notebooks, template=fake_template, progress=False,
                           only=[IDS[1]])
    assert status["run_id"].tolist() == [IDS[1]] and status["state"][0].startswith("ran")
    assert (results / "starts.log").read_text().split() == [IDS[1]]
    # the profile's grid.json still lists the whole profile; the summary what is finished
    layout = ResultsLayout(results, notebooks)
    assert json.loads(layout.grid_file("x").read_text())["run_ids"] == IDS
    assert pd.read_parquet(layout.summary("x"))["run_id"].unique().tolist() == [IDS[1]]
    with pytest.raises(ValueError, match=f"Unknown run id.*'nope'.*valid: {IDS[0]}"):
        grid.run_grid("x", results, notebooks, only=["nope"], dry_run=True)
    assert grid.main(["--profile", "smoke", "--only", "nope", "--dry-run"]) == 2


def test_layers_picks_the_depths_of_a_profile_in_its_order(tmp_path, capsys):
    settings = grid.plan("full")
    cheap = grid.select(settings, None, layers=[2, 3, 6])
    assert {s.depth for s in cheap} == {2, 3, 6}
    assert [s.run_id for s in cheap] == [s.run_id for s in settings if s.depth in (2, 3, 6)]
    assert not any(s.run_id.startswith(("v2-bm25", "v2-minilm")) for s in cheap)
    l12 = grid.select(settings, None, layers=[12])
    assert len(cheap) + len(l12) == len(settings) - 2  # BM25 and the MiniLM teacher: no depth
    first = l12[0].run_id
    assert [s.run_id for s in grid.select(settings, [first, cheap[0].run_id], [12])] == [first]
    with pytest.raises(ValueError, match=r"--layers \[4\].*depths \[2, 3, 6, 12\]"):
        grid.select(settings, None, layers=[4, 6])
    results, notebooks = tmp_path / "results", tmp_path / "nb"
    assert grid.main(["--profile", "full", "--layers", "12", "--dry-run",
                      "--results", str(results), "--notebooks", str(notebooks)]) == 0
    listed = capsys.readouterr().out
    assert first in listed and "v2-L2-" not in listed and "v2-bm25" not in listed
    assert grid.main(["--profile", "full", "--layers", "5", "--dry-run"]) == 2


def test_the_device_reaches_every_setting_and_a_missing_one_fails_first(
        tmp_path, fake_template, monkeypatch):
    monkeypatch.setattr(grid, "profile_settings", lambda profile: SETTINGS[:2])
    results, notebooks = tmp_path / "results", tmp_path / "nb"
    for bad, message in (("cuda", "no CUDA device"), ("meta", "cpu or cuda only"),
                         ("nonsense", "Unknown device")):
        if bad == "cuda" and torch_cuda():
            continue
        with pytest.raises(ValueError, match=message):
            grid.run_grid("x", results, notebooks, template=fake_template, progress=False,
                          device=bad)
        assert not (results / "starts.log").exists()  # refused before any setting ran
    assert len(grid.run_grid("x", results, notebooks, dry_run=True, device="cuda")) == 2
    with pytest.raises(ValueError, match="Unknown device"):  # a dry run checks the name
        grid.run_grid("x", results, notebooks, dry_run=True, device="nonsense")
    grid.run_grid("x", results, notebooks, template=fake_template, progress=False,
                  only=[IDS[0]])  # no device: the notebook keeps its own default
    status = grid.run_grid("x", results, notebooks, template=fake_template, progress=False,
                           device="cpu")
    assert status["device"].isna().tolist() == [True, False]  # the first had run before
    assert status["device"][1] == "cpu"
    assert [row[8] for row in executions(results)] == ["as-in-template", "cpu"]
    layout = ResultsLayout(results, notebooks)
    assert json.loads(layout.grid_file("x").read_text())["device"] == "cpu"


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def test_untuned_v2_settings_are_refused_before_anything_runs(tmp_path, monkeypatch):
    trained = {"design": "v2", "layers": 2, "method": "optical+mse", "k_langs": 8,
               "eval_tatoeba": [], "eval_xquad": []}
    pinned = {**trained, "k_langs": 4, "lr": 1e-3, "epochs": 2}
    monkeypatch.setattr(grid, "tuned_v2", lambda *key: {})  # no settled choice
    monkeypatch.setattr(grid, "profile_settings",
                        lambda profile: [{"design": "v2", "method": "bm25"}, trained, pinned])
    settings = grid.plan("x")
    assert grid.untuned(settings) == [f"{settings[1].run_id} (L2, me5-small teacher, "
                                      "optical+mse)"]
    with pytest.raises(ValueError, match="1 pending setting.*without a settled tuning"):
        grid.run_grid("x", tmp_path / "r", tmp_path / "n", progress=False)
    assert not (tmp_path / "r" / "runs").exists()  # refused before anything ran
    monkeypatch.setattr(grid, "tuned_v2", lambda *key: {"lr": 2e-3, "epochs": 12})
    assert grid.untuned(grid.plan("x")) == []



def test_a_new_tuning_choice_re_makes_stale_grid_files(tmp_path, monkeypatch):
    """``tune --choose`` re-makes the grid.json of profiles whose run ids the new choice
    changed (a stale file failed CI once), keeps the record of how the grid ran, leaves
    unchanged profiles alone and names finished runs that the change supersedes."""
    epochs = {"value": 12}
    base = {"design": "v2", "layers": 2, "method": "optical+mse", "lr": 1e-3,
            "eval_tatoeba": [], "eval_xquad": []}

    def settings(profile):
        tuned = [{**base, "k_langs": k, "epochs": epochs["value"]} for k in (1, 8)]
        return [{"design": "v2", "method": "bm25"}] + (tuned if profile == "x" else [])

    monkeypatch.setattr(grid, "PROFILES", ("x", "y", "z"))
    monkeypatch.setattr(grid, "profile_settings", settings)
    layout = ResultsLayout(tmp_path / "results", tmp_path / "notebooks")
    for profile in ("x", "y"):
        grid.write_grid_file(layout, profile, grid.plan(profile), {"executor": "dask"})
    old = json.loads(layout.grid_file("x").read_text())["run_ids"]
    before_y = layout.grid_file("y").read_bytes()
    finished = old[1]  # the k = 1 setting had run; k = 8 had not
    layout.results_file(finished).parent.mkdir(parents=True)
    layout.results_file(finished).write_text("[]")
    layout.notebook(finished).parent.mkdir(parents=True)
    layout.notebook(finished).write_text("{}")

    assert grid.refresh_grid_files(layout) == {}  # nothing changed: nothing re-made
    epochs["value"] = 16  # the new choice
    assert grid.refresh_grid_files(layout) == {"x": [finished]}
    remade = json.loads(layout.grid_file("x").read_text())
    assert remade["run_ids"] == [s.run_id for s in grid.plan("x")] != old
    assert remade["run_ids"][0] == old[0]  # BM25 takes no tuning
    assert remade["executor"] == "dask"
    assert layout.grid_file("y").read_bytes() == before_y
    assert not layout.grid_file("z").exists()  # no file: none is made

HOLDER = """
import shutil, sys, time
from pathlib import Path
from optical_lib.evaluate import RESULT_COLUMNS, write_results
from optical_lib.layout import ResultsLayout, claim

layout, run_id = ResultsLayout(sys.argv[1], sys.argv[2]), sys.argv[3]
with claim(layout.claim_file(run_id)):
    Path(sys.argv[4]).touch()  # holding it now
    time.sleep(3)
    row = {c: None for c in RESULT_COLUMNS}
    row.update(run_id=run_id, task="tatoeba", query_lang="*", scope="macro", metric="RR@10",
               value=0.5)
    write_results([row], layout.results_file(run_id))
    layout.notebook(run_id).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(sys.argv[5], layout.notebook(run_id))
"""


def test_a_setting_claimed_by_a_live_process_is_waited_for_not_run_twice(
        tmp_path, fake_template, monkeypatch):
    """Another process (an orphaned worker, a second grid) is running the setting: the grid
    waits for its claim and finds the setting finished."""
    monkeypatch.setattr(grid, "profile_settings", lambda profile: SETTINGS[:1])
    results, notebooks, holding = tmp_path / "results", tmp_path / "nb", tmp_path / "holding"
    other = subprocess.Popen([sys.executable, "-c", HOLDER, str(results), str(notebooks),
                              IDS[0], str(holding), str(fake_template)])
    deadline = time.time() + 60
    while not holding.exists() and time.time() < deadline and other.poll() is None:
        time.sleep(0.05)
    assert holding.exists()
    status = grid.run_grid("x", results, notebooks, template=fake_template, progress=False)
    assert other.wait(timeout=60) == 0
    assert status["state"].tolist() == ["done"]
    assert not (results / "starts.log").exists()  # never executed here


def test_dask_errors_before_any_setting_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(grid, "CONNECT_TIMEOUT_S", 2.0)
    with pytest.raises(RuntimeError, match="Cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        grid.run_grid("smoke", tmp_path / "r", tmp_path / "nb", executor="dask",
                      scheduler="tcp://127.0.0.1:9", progress=False)
    with pytest.raises(ValueError, match="need --executor dask"):
        grid.run_grid("smoke", tmp_path / "r", tmp_path / "nb", workers=2, progress=False)


def test_workers_missing_data_or_model_fail_before_any_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("OPTICAL_DATA_DIR", str(tmp_path / "nodata"))
    monkeypatch.setenv("OPTICAL_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "nodata").mkdir()
    problems = grid.environment_problems()
    assert "lacks" in problems[0] and "tatoeba-v1" in problems[0]
    assert "model cache" in problems[1] and "make model" in problems[1]
    # only what the settings read: a v2 setting on FLORES needs neither Tatoeba nor Bibles
    v2 = grid.config_of({"design": "v2", "layers": 2, "method": "none",
                         "eval_tatoeba": [], "eval_xquad": []})
    needed = grid.data_folders(v2)
    assert needed == ["flores-200"]
    assert "lacks flores-200 (" in grid.environment_problems(needed)[0]
    (tmp_path / "nodata" / "flores-200").mkdir()
    assert not any("lacks" in p for p in grid.environment_problems(needed))
    assert any("lacks bible-corpus" in p for p in grid.environment_problems())
    # the learning-curve pool reads Tatoeba pairs and XQuAD-R's English (left out of it)
    pool = grid.config_of({"design": "v2", "layers": 2, "method": "optical+mse", "lr": 1e-3,
                           "epochs": 1, "sample": "pool", "budget": 1984,
                           "eval_tatoeba": [], "eval_xquad": []})
    assert grid.data_folders(pool) == ["flores-200", "ntrex-128", "tatoeba-v1", "xquad-r"]


@pytest.fixture
def local_cluster():
    """The grid's own 2-worker LocalCluster, whose scheduler reruns a setting once after its
    worker died (allowed-failures = 1)."""
    with grid.dask_client(workers=2, retries=1) as client:
        yield client


def _worker_config() -> tuple:
    import dask

    return (dask.config.get("distributed.worker.profile.enabled"),
            dask.config.get("distributed.admin.tick.interval"))


def test_the_grid_cluster_keeps_dask_bookkeeping_off_the_settings_cpu(local_cluster):
    # the workers do not profile the papermill call they wait in, and tick once a second
    assert set(local_cluster.run(_worker_config).values()) == {(False, "1s")}
    assert local_cluster.run_on_scheduler(
        lambda dask_scheduler: (dask_scheduler.allowed_failures,
                                dask_scheduler._tick_interval)) == (1, 1.0)


def test_an_empty_config_gives_the_benchmark_dask_defaults_as_its_reference(local_cluster):
    # benchmarks/bench_dask.py's reference is grid.dask_client(config={}): Dask's own settings;
    # started beside another cluster, its scheduler's HTTP server takes a free port of its own
    # (Dask's fixed 8787 would clash, with a warning)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with grid.dask_client(workers=1, retries=1, config={}) as client:
            assert set(client.run(_worker_config).values()) == {(True, "20ms")}
            ports = {c.scheduler_info()["services"]["dashboard"] for c in (client, local_cluster)}
    assert len(ports) == 2 and 8787 not in ports
    assert not [w for w in caught if "already in use" in str(w.message)]


def _kill_when_started(root: Path, run_id: str, killed: list, timeout: float = 60):
    """SIGKILL the worker process running ``run_id`` once its notebook has started."""
    pid_file, deadline = root / "pids" / run_id, time.time() + timeout
    while not pid_file.exists() and time.time() < deadline:
        time.sleep(0.05)
    if pid_file.exists():
        pid = int(pid_file.read_text())
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)


@pytest.mark.slow
def test_dask_worker_killed_mid_setting_loses_only_that_setting(tmp_path, monkeypatch,
                                                               local_cluster):
    settings = SETTINGS[:2] + [{"layers": 2, "method": "optical", "k_langs": k, "eval_xquad": []}
                               for k in (2, 4)]
    ids = [grid.config_of(p).run_id for p in settings]
    monkeypatch.setattr(grid, "profile_settings", lambda profile: settings)
    results, notebooks = tmp_path / "results", tmp_path / "nb"
    results.mkdir()
    (results / f"kill-always-{ids[3]}").touch()  # dies on every worker: bounded retries
    template = make_template(tmp_path / "sleepy.ipynb", sleep=3)
    killed = []
    killer = threading.Thread(target=_kill_when_started, args=(results, ids[1], killed))
    killer.start()
    status = grid.run_grid("x", results, notebooks, template=template, progress=False,
                           executor="dask", client=local_cluster)
    killer.join()
    assert len(killed) == 1
    states = dict(zip(status["run_id"], status["state"], strict=True))
    assert all(states[r].startswith("ran") for r in ids[:3]), states
    assert states[ids[3]] == "failed"
    failures = json.loads(ResultsLayout(results, notebooks).failures_file("x").read_text())
    assert list(failures) == [ids[3]] and "KilledWorker" in failures[ids[3]]["error"]
    starts = (results / "starts.log").read_text().split()
    assert starts.count(ids[1]) >= 2  # the killed setting was rerun on a fresh worker ...
    assert starts.count(ids[0]) == starts.count(ids[2]) == 1  # ... and nothing else
    assert starts.count(ids[3]) == 2  # first try + allowed-failures = 1 retry, then failed
    assert sorted(p.stem for p in notebooks.glob("*.ipynb")) == sorted(ids[:3])
    finished = [r for r in executions(results) if r[0] == ids[1]]
    assert finished and all(r[1:4] == ["1", "1", "PASSIVE"] for r in finished)
    # the nanny's MALLOC_TRIM_THRESHOLD_ (3.5-4.3x the system time of training) does not
    # reach the kernels
    assert all(r[9] == "-" for r in executions(results)), executions(results)
    # the rerun broke the dead worker's claim; the last death leaves a stale one behind
    left = list((results / "claims").glob("*.claim"))
    assert [p.stem for p in left] == [ids[3]] and claim_holder(left[0]) is None


CLIENT = """
import sys
from optical_lib import grid
from optical_lib.experiment import validate
grid.profile_settings = lambda profile: {settings!r}
sys.exit(grid.main(["--profile", "smoke", "--executor", "dask", "--workers", "2",
                    "--threads-per-worker", "1", "--results", {results!r},
                    "--notebooks", {notebooks!r}, "--template", {template!r}]))
"""


def _overlap(rows: list[list[str]]) -> bool:
    spans = sorted((float(r[4]), float(r[5])) for r in rows)
    return any(b[0] < a[1] for a, b in itertools.pairwise(spans))


@pytest.mark.slow
def test_dask_client_killed_and_restarted_resumes(tmp_path):
    settings = [{"layers": 2, "method": "optical", "k_langs": k, "eval_xquad": []}
                for k in (1, 2, 4, 8)]
    ids = [grid.config_of(p).run_id for p in settings]
    results, notebooks = tmp_path / "results", tmp_path / "nb"
    template = make_template(tmp_path / "sleepy.ipynb", sleep=3)
    script = textwrap.dedent(CLIENT.format(settings=settings, results=str(results),
                                           notebooks=str(notebooks), template=str(template)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-c", script], env=env, start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        starts = results / "starts.log"

        def started():
            return starts.read_text().split() if starts.exists() else []

        # kill once two settings are finished and a third one is running
        while ((len(list(notebooks.glob("*.ipynb"))) < 2 or len(started()) < 3)
               and time.time() < deadline and first.poll() is None):
            time.sleep(0.1)
        before = {p.stem for p in notebooks.glob("*.ipynb")}
        assert first.poll() is None, first.stdout.read().decode()[-3000:]
        in_flight = set(started()) - before
        assert len(before) >= 2 and in_flight
        first.send_signal(signal.SIGKILL)  # the client (and the scheduler it hosts) only
        first.wait()
        second = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                                text=True, timeout=240)
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)  # orphaned workers of the first client
    layout = ResultsLayout(results, notebooks)
    assert all(layout.is_finished(r) for r in ids)
    rows = executions(results)
    for run_id in before:  # finished before the kill: not run again
        assert [r[0] for r in rows].count(run_id) == 1
    for run_id in ids:  # never two executions of one setting at the same time
        assert not _overlap([r for r in rows if r[0] == run_id]), run_id
    assert sorted(pd.read_parquet(layout.summary("smoke"))["run_id"].unique()) == sorted(ids)
    assert not layout.failures_file("smoke").exists()
    # an interrupted setting is finished by the restarted client (its orphaned kernel exits
    # with its worker: "Parent appears to have exited"), never twice at once (above)
    assert in_flight <= {r[0] for r in rows}


@pytest.fixture(scope="module")
def smoke_local(tmp_path_factory):
    """The real smoke profile, local executor (run once for the tests below)."""
    root = tmp_path_factory.mktemp("smoke-local")
    results, runs = root / "results", root / "book" / "runs"
    status = grid.run_grid("smoke", results, runs, progress=False)
    assert status["state"].str.startswith("ran").all(), status
    return root, status


@pytest.mark.slow
def test_smoke_on_a_dask_local_cluster_equals_local(smoke_local, tmp_path):
    """CI: the smoke profile on a 2-worker LocalCluster gives the same run ids, notebooks
    and metrics (to 1e-6) as the local executor."""
    local_root, local_status = smoke_local
    results, runs = tmp_path / "results", tmp_path / "runs"
    status = grid.run_grid("smoke", results, runs, progress=False, executor="dask", workers=2,
                           threads=1)
    assert status["state"].str.startswith("ran").all(), status
    assert status["run_id"].tolist() == local_status["run_id"].tolist()
    assert sorted(p.name for p in runs.glob("*.ipynb")) == sorted(
        p.name for p in (local_root / "book" / "runs").glob("*.ipynb"))
    keys = ["run_id", "task", "query_lang", "scope", "metric"]
    ours = pd.read_parquet(ResultsLayout(results).summary("smoke")).sort_values(keys)
    theirs = pd.read_parquet(ResultsLayout(local_root / "results").summary("smoke")
                             ).sort_values(keys)
    assert len(ours) == len(theirs) > 0
    assert ours[keys].reset_index(drop=True).equals(theirs[keys].reset_index(drop=True))
    assert abs(ours["value"].to_numpy() - theirs["value"].to_numpy()).max() <= 1e-6
    def sources(path):  # the injected parameters differ only in results_dir
        return [c.source.split("results_dir =")[0] for c in nbformat.read(path, 4).cells]

    for nb in runs.glob("*.ipynb"):
        assert sources(nb) == sources(local_root / "book" / "runs" / nb.name)
    info = json.loads(ResultsLayout(results).grid_file("smoke").read_text())
    assert info["executor"] == "dask" and info["workers"] == 2


def test_run_pages_show_no_stray_warning(smoke_local):
    """The executed run notebooks (published pages) carry no library warning noise."""
    tmp_path, _ = smoke_local
    pages = sorted((tmp_path / "book" / "runs").glob("*.ipynb"))
    assert pages
    for page in pages:
        nb = nbformat.read(page, as_version=4)
        text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
        assert "TqdmWarning" not in text, page.name


@pytest.mark.slow
def test_smoke_profile_end_to_end_into_a_strict_book(smoke_local):
    """The real notebooks on the real model and data, then the analysis, then the book."""
    from optical_lib.analysis import execute

    tmp_path, _ = smoke_local
    results, book = tmp_path / "results", tmp_path / "book"
    # the book's sources, with this run's notebooks and analysis in place of the committed
    # ones. The v2 pages (protocol, results) are committed results the smoke run (a v1
    # profile) leaves alone; the intro glues from them, so they are built here too. The v2
    # runs index and its run pages are linked from nowhere else and change with no v1 run:
    # test_book builds them strictly with the committed book, so this book leaves them out.
    shutil.copy(PROJECT_ROOT / "_config.yml", tmp_path / "_config.yml")
    toc = yaml.safe_load((PROJECT_ROOT / "_toc.yml").read_text())
    for part in toc["parts"]:
        part["chapters"] = [c for c in part["chapters"] if c["file"] != "book/runs_v2"]
    (tmp_path / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    for page in (PROJECT_ROOT / "book").glob("*.*"):
        if page.suffix in (".md", ".bib") and page.name not in ("runs.md", "runs_v2.md"):
            shutil.copy(page, book / page.name)
    for name in ("protocol.ipynb", "study.ipynb"):
        shutil.copy(PROJECT_ROOT / "book" / name, book / name)
    execute("smoke", results, book)  # analysis.ipynb, figures/headline.svg, runs.md
    assert (book / "figures" / "headline.svg").exists()
    runs_page = (book / "runs.md").read_text()
    assert runs_page.count("](runs/") == 2 and "**smoke** profile" in runs_page
    jb = Path(sys.executable).with_name("jupyter-book")
    build = subprocess.run([str(jb), "build", str(tmp_path), "-W", "-n", "--keep-going"],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-2000:]
    html = (tmp_path / "_build" / "html" / "book" / "analysis.html").read_text()
    assert "smoke" in html and "Size × diversity" in html
    assert "results_dir" not in html  # the injected parameters cell is hidden


def test_published_notebooks_carry_no_path_of_the_machine(tmp_path):
    from nbformat.v4 import new_notebook, new_output

    cell = new_code_cell("import warnings")
    cell.outputs = [new_output("stream", name="stderr",
                               text=f"{PROJECT_ROOT}/.venv/lib/tqdm/auto.py:21: TqdmWarning\n")]
    path = tmp_path / "run.ipynb"
    nbformat.write(new_notebook(cells=[cell], metadata={"papermill": {
        "input_path": "/tmp/grid-x/input.ipynb", "output_path": "/tmp/grid-x/output.ipynb"}}),
        path)
    grid.record_paths(path, "notebooks/experiment.ipynb", "book/runs/x.ipynb")
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata["papermill"]["input_path"] == "notebooks/experiment.ipynb"
    assert nb.cells[0].outputs[0]["text"].startswith(".venv/lib/tqdm/auto.py")


def _template_defaults() -> dict:
    """The run notebook's parameter defaults (its cell tagged ``parameters``)."""
    nb = nbformat.read(grid.TEMPLATE, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    scope: dict = {}
    exec(cell.source, {}, scope)
    return {k: v for k, v in scope.items() if not k.startswith("__")}


@pytest.mark.parametrize("profile", grid.PROFILES)
def test_the_notebook_resolves_every_planned_setting_to_its_planned_id(profile):
    """Regression test: the grid plans a setting from the parameters it was given, the
    notebook from those over its own defaults; the MiniLM teacher's zero-shot setting (no
    ``layers``) ran as a 3-layer cut of MiniLM under another id, because the notebook's
    default depth was 3 where the plan's was the model's own. Every planned setting must
    come out of the notebook's call with the id the grid planned (the notebook now also
    stops before compute when it does not)."""
    from optical_lib.experiment import ExperimentConfig

    defaults = _template_defaults()
    assert {"run_id", "layers"} <= set(defaults) and defaults["layers"] is None
    for params in grid.profile_settings(profile):
        values = {**defaults, **params}
        values.pop("results_dir"), values.pop("run_id")
        planned = grid.config_of(params).run_id
        assert ExperimentConfig.from_parameters(**values).run_id == planned, params
