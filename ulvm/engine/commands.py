"""The command lines of a run: the ONE place that turns a `Config` and `RunSettings` into `ulvm train` /
`ulvm test` arguments, for the rooms that start runs as subprocesses (`ulvm sweep`, `ulvm throughput`).

`ulvm train`'s parser (`ulvm.cli.engine`) reads them back into the same config and settings
(tests/test_sweep.py checks the round trip). A config is written as its profile plus what differs from it:
the grid's axes as named flags (--seed, --parallel, --fold, --model, --no-bridge), every other field as
`--set FIELD=VALUE` with VALUE in YAML, which is how `--set` reads it.
"""
from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

import yaml

from ..config import PROFILES, Config, RunSettings
from ..errors import RunError

_NAMED_FIELDS = ("seed", "parallel", "fold", "model")        # `ulvm train --seed 42`, ...; always said: seed, parallel
_SETTINGS_FLAGS = {"device": "--device", "backend": "--backend", "eval_batch_size": "--eval-batch-size",
                   "threads": "--threads"}


def yaml_value(value: Any) -> str:
    """VALUE of `--set FIELD=VALUE` as YAML reads it back: 1e-05 is written 1.0e-05 (YAML 1.1 reads "1e-05"
    as a string), lists in flow style ([8, 16])."""
    if isinstance(value, float) and math.isfinite(value):
        text = repr(value)
        return text.replace("e", ".0e") if "e" in text and "." not in text else text
    return yaml.safe_dump(value, default_flow_style=True, width=math.inf).removesuffix("\n...\n").strip()


def config_argv(config: Config) -> list[str]:
    """`--profile NAME` and the flags that turn that profile into `config`."""
    if config.profile_name not in PROFILES:
        raise RunError(f"config of profile {config.profile_name!r}: only a named profile "
                       f"({', '.join(PROFILES)}) can be written as a command line")
    base, values = PROFILES[config.profile_name].to_dict(), config.to_dict()
    argv = ["--profile", config.profile_name]
    for name in _NAMED_FIELDS:
        if values[name] is not None and (name in ("seed", "parallel") or values[name] != base[name]):
            argv += [f"--{name}", str(values[name])]
    if values["bridge"] != base["bridge"] and not values["bridge"]:
        argv.append("--no-bridge")
    for name, value in values.items():
        named = name in (*_NAMED_FIELDS, "profile_name") or (name == "bridge" and not value)
        if value != base[name] and not named:
            argv += ["--set", f"{name}={yaml_value(value)}"]
    return argv


def settings_argv(settings: RunSettings) -> list[str]:
    """The flags of `settings` that differ from the defaults (`ulvm.cli.engine.add_settings_flags`)."""
    default, argv = RunSettings(), []
    for field in dataclasses.fields(RunSettings):
        value = getattr(settings, field.name)
        if value == getattr(default, field.name):
            continue
        if field.name == "cuda_graph":
            argv.append("--no-cuda-graph")
        elif field.name in ("compile", "deterministic"):
            argv.append(f"--{field.name}")
        else:
            argv += [_SETTINGS_FLAGS[field.name], str(value)]
    return argv


def train_argv(config: Config, settings: RunSettings, data: str | Path, out: str | Path, *,
               seeds: tuple[int, ...] = (), progress: bool = False, test: bool = True,
               overwrite: bool = False) -> list[str]:
    """`python -m ulvm train` of `config` into `out` (it resumes an unfinished run there). `seeds`: one run
    per seed in this one process (`--seeds`; `out` names the folders with {seed})."""
    argv = [sys.executable, "-m", "ulvm", "train", "--data", str(data), "--out", str(out), *config_argv(config)]
    if seeds:
        at = argv.index("--seed")
        argv[at:at + 2] = ["--seeds", *map(str, seeds)]
    argv += settings_argv(settings)
    argv += [flag for flag, on in (("--no-progress", not progress), ("--no-test", not test),
                                   ("--overwrite", overwrite)) if on]
    return argv


def test_argv(run: str | Path, data: str | Path, settings: RunSettings) -> list[str]:
    """`python -m ulvm test` of a run folder's best.pt on the test split of a prepared dataset."""
    return [sys.executable, "-m", "ulvm", "test", "--run", str(run), "--data", str(data), *settings_argv(settings)]
