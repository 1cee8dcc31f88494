"""The grid file of `ulvm sweep`: its schema, how it is read and checked, and the jobs it expands to.

A grid file::

    name: ph2_cv                  # the default run folder is runs/NAME, the records go to book/results/NAME
    profile: paper                # base profile: paper | quick
    data: data/prepared/ph2       # the prepared dataset every run trains on (relative to the working folder)
    test_on: []                   # prepared datasets to also test every run on (their test split)
    set: {}                       # more config overrides for every run (`ulvm train --set FIELD=VALUE`)
    fold: [0, 1, 2, 3, 4]         # the axes: model, width, parallel, bridge, seed, fold (lists; a scalar =
                                  # one value)
    cross:                        # optional: a union of crosses; each entry's axes (and `set`) override the
      - {parallel: [4, 1]}        # top-level ones. Without `cross`, the top-level axes are the one cross.
      - {parallel: [4], seed: [43, 44]}

Axes left out take one value: model ultralight, width 1, parallel 4, bridge true, seed 42, fold none (the
plain split). Jobs are expanded in file order, each cross as model > width > parallel > bridge > seed > fold
(fold fastest), and named like p4_b1_f0_s42 (w0.5_p4_b1_s42 at another width); a baseline, which has no PVM
settings, by its model: unet_s42.

The grid's name and its models name folders and files (runs/NAME/JOB, RUNS/JOB.log, the records): they
must be plain names (letters, digits, '_' and '-'), so that nothing is written outside the folders given.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..config import PROFILES
from ..errors import UlvmError
from .experiments import Job

AXES = ("model", "width", "parallel", "bridge", "seed", "fold")        # the crossing order (fold fastest)
DEFAULT_AXES: dict[str, list[Any]] = {"model": ["ultralight"], "width": [1.0], "parallel": [4], "bridge": [True],
                                      "seed": [42], "fold": [None]}
GRID_KEYS = ("name", "profile", "data", "test_on", "set", "cross", *AXES)
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def _plain_name(key: str, value: str, where: str) -> None:
    if not PLAIN_NAME.fullmatch(value):
        raise UlvmError(f"{where}: '{key}' {value!r} is not a plain name (letters, digits, '_' and '-', no '/' "
                        "or '..'): it names folders under --runs and --record")


@dataclass(frozen=True)
class Grid:
    """A parsed grid file: where the runs train, what else they are tested on, and the jobs in order."""
    name: str
    profile: str
    data: Path
    jobs: tuple[Job, ...]
    test_on: tuple[Path, ...] = ()
    source: str = "<grid>"

    def test_sets(self) -> list[str]:
        """The names of the test sets each job is recorded on (the prepared folders' names)."""
        return [self.data.name, *(path.name for path in self.test_on)]


def load_grid(path: str | Path) -> Grid:
    """Read and expand a grid file; every problem is a `UlvmError` naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise UlvmError(f"{path}: cannot read the grid file ({error.strerror or error})") from None
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UlvmError(f"{path}: not valid YAML: {' '.join(str(error).split())}") from None
    return parse_grid(spec, str(path))


def _values(axis: str, value: Any, where: str) -> list[Any]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise UlvmError(f"{where}: '{axis}' is an empty list")
    for item in values:
        if axis == "model" and isinstance(item, str):
            _plain_name("model", item, where)
        ok = {"model": isinstance(item, str) and item != "",
              "width": type(item) in (int, float) and 0 < item <= 16,
              "parallel": type(item) is int and item in (1, 2, 4),
              "bridge": isinstance(item, bool),
              "seed": type(item) is int,
              "fold": item is None or (type(item) is int and item >= 0)}[axis]
        if not ok:
            expected = {"model": "a model name", "width": "a channel multiplier in (0, 16]",
                        "parallel": "1, 2 or 4", "bridge": "true or false",
                        "seed": "an integer", "fold": "an integer >= 0 or null"}[axis]
            raise UlvmError(f"{where}: '{axis}' value {item!r} is not {expected}")
    return values


def _overrides(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise UlvmError(f"{where}: 'set' must be a mapping FIELD: VALUE, got {value!r}")
    return value


def parse_grid(spec: Any, source: str = "<grid>") -> Grid:
    """Expand a grid mapping (a loaded grid file) into its jobs; `source` names it in errors."""
    if not isinstance(spec, dict):
        raise UlvmError(f"{source}: a grid file is a mapping (name, profile, data, ...), got {type(spec).__name__}")
    unknown = sorted(set(spec) - set(GRID_KEYS))
    if unknown:
        raise UlvmError(f"{source}: unknown key(s) {', '.join(map(repr, unknown))}; known: {', '.join(GRID_KEYS)}")
    for key in ("name", "data"):
        if not isinstance(spec.get(key), str) or not spec[key]:
            raise UlvmError(f"{source}: '{key}' is required (a string)")
    _plain_name("name", spec["name"], source)
    profile = spec.get("profile", "paper")
    if profile not in PROFILES:
        raise UlvmError(f"{source}: profile {profile!r} is not one of {', '.join(PROFILES)}")
    test_on = spec.get("test_on") or []
    if not isinstance(test_on, list) or not all(isinstance(item, str) for item in test_on):
        raise UlvmError(f"{source}: 'test_on' must be a list of prepared dataset paths")
    base_set = _overrides(spec.get("set"), source)
    base = {axis: _values(axis, spec[axis], source) for axis in AXES if axis in spec}
    crosses = spec.get("cross", [{}])
    if not isinstance(crosses, list) or not crosses:
        raise UlvmError(f"{source}: 'cross' must be a non-empty list of mappings of axes")
    jobs: list[Job] = []
    for index, cross in enumerate(crosses):
        where = f"{source}: cross[{index}]"
        if not isinstance(cross, dict):
            raise UlvmError(f"{where}: expected a mapping of axes, got {cross!r}")
        wrong = sorted(set(cross) - {*AXES, "set"})
        if wrong:
            raise UlvmError(f"{where}: unknown key(s) {', '.join(map(repr, wrong))}; known: {', '.join(AXES)}, set")
        axes = {**DEFAULT_AXES, **base, **{axis: _values(axis, cross[axis], where) for axis in AXES if axis in cross}}
        overrides = {**base_set, **_overrides(cross.get("set"), where)}
        for model, width, parallel, bridge, seed, fold in itertools.product(*(axes[axis] for axis in AXES)):
            try:
                jobs.append(Job.of(parallel, bridge, fold, seed, model, profile, overrides, width=float(width)))
            except UlvmError as error:
                raise UlvmError(f"{where}: {error}") from None
    seen: set[str] = set()
    for job in jobs:
        if job.name in seen:
            raise UlvmError(f"{source}: job {job.name} appears twice (the crosses overlap)")
        seen.add(job.name)
    return Grid(spec["name"], profile, Path(spec["data"]), tuple(jobs), tuple(map(Path, test_on)), source)
