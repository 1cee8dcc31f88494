"""The command line's front door (`ulvm.cli.main`): what it refuses before any command runs."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_a_deleted_working_folder_is_refused_with_a_clear_error(tmp_path):
    """Started in a folder that no longer exists, `ulvm` says so (torch's MKL would abort, naming a library)."""
    gone = tmp_path / "gone"
    gone.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    script = f'cd "{gone}" && rmdir "{gone}" && exec "{sys.executable}" -m ulvm version'
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "working folder no longer exists" in done.stderr


def test_train_seeds_needs_one_folder_per_seed(tmp_path, capsys):
    from ulvm.cli import main

    for flags in (["--out", str(tmp_path / "run")], ["--out", str(tmp_path / "s{seed}"), "--seed", "1"]):
        assert main(["train", "--data", str(tmp_path), "--seeds", "42", "43", *flags]) == 2
        assert "name the run folders with {seed} in --out" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())                       # refused before anything was written


def test_sweep_and_throughput_pass_their_run_settings_to_every_run():
    """`ulvm sweep` / `ulvm throughput` hand the same `RunSettings` to each run; a bad batch is refused."""
    from ulvm.cli import build_parser
    from ulvm.cli.sweep import run_settings
    from ulvm.config import RunSettings
    from ulvm.errors import UlvmError

    parser = build_parser()
    args = parser.parse_args(["sweep", "grid.yaml", "--threads", "2", "--compile", "--eval-batch-size", "50"])
    assert run_settings(args) == RunSettings(threads=2, compile=True, eval_batch_size=50)
    args = parser.parse_args(["throughput", "--data", "d", "--eval-batch-size", "16"])
    assert run_settings(args) == RunSettings(device="cuda", eval_batch_size=16)
    assert run_settings(parser.parse_args(["sweep", "grid.yaml"])) == RunSettings()
    with pytest.raises(UlvmError, match="eval_batch_size=0 must be >= 1"):
        run_settings(parser.parse_args(["sweep", "grid.yaml", "--eval-batch-size", "0"]))
