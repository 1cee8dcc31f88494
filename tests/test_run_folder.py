"""`RunFolder`: what a run folder holds, what `ulvm train` may write into or delete, and its lock."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import CPU, tiny_config, write_tiny_prepared
from ulvm.cli import build_parser, main
from ulvm.cli.engine import config_from_args, settings_from_args
from ulvm.config import Config, RunSettings
from ulvm.engine.commands import train_argv
from ulvm.engine.runs import RunFolder
from ulvm.engine.train import fit
from ulvm.errors import RunError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return write_tiny_prepared(tmp_path_factory.mktemp("tiny"))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.mark.parametrize("files", [
    {"notes.txt": "mine", "log.csv": "my own log", "config.yaml": "mine: true"},
    {"log.csv": "my own log", "config.yaml": "mine: true"},          # named like ours, but no run in it
    {"results_final_table.json": "{}", "sub/keep.txt": "mine"},
])
@pytest.mark.parametrize("overwrite", [False, True])
def test_train_refuses_a_folder_of_the_users_and_changes_nothing(tiny_data, tmp_path, capsys, files, overwrite):
    out = tmp_path / "mine"
    for name, text in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    before = _snapshot(out)
    argv = ["train", "--data", str(tiny_data), "--out", str(out), "--profile", "quick", "--set", "input_size=32",
            "--set", "batch_size=4", "--epochs", "1", "--device", "cpu", "--no-test", "--no-progress"]
    assert main(argv + (["--overwrite"] if overwrite else [])) == 2
    assert f"{out}: not a ulvm run folder (it holds " in capsys.readouterr().err
    assert _snapshot(out) == before and sorted(p.name for p in out.iterdir()) == sorted(
        {name.split("/")[0] for name in files})


def test_overwrite_deletes_only_the_runs_own_files(tiny_data, tmp_path):
    config = tiny_config(epochs=1)
    run = RunFolder(tmp_path / "run")
    fit(config, tiny_data, run.path, settings=CPU, progress=False)
    (run.path / "results_tiny_test.json").write_text("{}")
    assert run.is_finished() and run.results("tiny") == [run.path / "results_tiny_test.json"]
    fit(config, tiny_data, run.path, settings=CPU, progress=False, overwrite=True)
    assert not (run.path / "results_tiny_test.json").exists() and len(run.read_log()) == 1
    (run.path / "mine.txt").write_text("mine")
    with pytest.raises(RunError, match=r"not a ulvm run folder \(it holds mine.txt\)"):
        fit(config, tiny_data, run.path, settings=CPU, progress=False, overwrite=True)
    assert (run.path / "mine.txt").read_text() == "mine" and run.last_path.is_file()


def test_a_second_trainer_is_refused_while_the_first_holds_the_folder(tiny_data, tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom ulvm.engine.runs import RunFolder\n"
         "with RunFolder(sys.argv[1]).locked():\n    print('held', flush=True)\n    time.sleep(60)", str(run)],
        stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunError, match=rf"{run}: another ulvm is training into this run folder "
                                           rf"\(process {holder.pid} on "):
            fit(tiny_config(epochs=1), tiny_data, run, settings=CPU, progress=False)
        assert not (run / "config.yaml").exists()
    finally:
        holder.kill()
        holder.wait()
    fit(tiny_config(epochs=1), tiny_data, run, settings=CPU, progress=False)    # the lock died with its holder
    assert RunFolder(run).is_finished()


def test_results_are_named_and_found_per_test_set_split_and_fold(tmp_path):
    run = RunFolder(tmp_path)
    for name in ("results_ph2_test.json", "results_ph2_x_test_fold1.json", "results_ph2_val.json",
                 "results_final_table.json"):
        (tmp_path / name).write_text("{}")
    assert run.results_path("/data/ph2_x", "test", 1) == tmp_path / "results_ph2_x_test_fold1.json"
    assert run.results("ph2") == [tmp_path / "results_ph2_test.json"]
    assert run.results() == [tmp_path / "results_ph2_test.json", tmp_path / "results_ph2_x_test_fold1.json"]
    assert run.results("ph2", split="val") == [tmp_path / "results_ph2_val.json"]
    assert not run.is_finished() and run.read_log() == []


@pytest.mark.parametrize("config, settings", [
    (Config(), RunSettings()),
    (Config.profile("quick", seed=7, fold=2, model="unet", lr=1e-5, bridge=False, max_images=None,
                    c_list=(4, 8, 12, 16, 24, 32), betas=(0.5, 0.9), augment="none"),
     RunSettings(device="cpu", backend="parallel", cuda_graph=False, eval_batch_size=3, compile=True, threads=1)),
])
def test_a_jobs_command_line_parses_back_to_the_same_config_and_settings(config, settings):
    """The one function that writes `ulvm train`'s argv (`train_argv`) and the CLI's parser agree."""
    argv = train_argv(config, settings, "data/x", "runs/y")
    assert argv[1:4] == ["-m", "ulvm", "train"]
    args = build_parser().parse_args(argv[3:])
    assert config_from_args(args) == config and settings_from_args(args) == settings
    assert (args.data, args.out) == (Path("data/x"), Path("runs/y")) and not args.progress
    json.dumps(argv)                                       # plain strings only
