"""A killed `ulvm prepare`: its workers die with it, and the next run removes what it left (issue 13)."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from data_trees import make_folder

from ulvm.data import load_prepared, prepare
from ulvm.io import HOST, atomic_directory, remove_stale_temporaries

REPO = Path(__file__).resolve().parents[1]

# Prepares with two worker processes, each sample slowed down so that the run can be killed midway.
SLOW_PREPARE = textwrap.dedent("""
    import importlib, sys, time

    prepare_module = importlib.import_module("ulvm.data.prepare")  # (ulvm.data.prepare is also a function)

    real = prepare_module._prepare_sample

    def slow(sample, **kwargs):
        time.sleep(0.3)
        return real(sample, **kwargs)

    prepare_module._prepare_sample = slow
    if __name__ == "__main__":
        prepare_module.prepare("folder", sys.argv[1], sys.argv[2], size=32, counts=(30, 5, 5), folds=0,
                               workers=2)
""")


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (from /proc)."""
    parent_of = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent_of[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parent_of.items() if parent in frontier} - found
        found |= frontier
    return found


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has ended; only its exit status remains


def dead_pid() -> int:
    """The id of a process that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find the workers")
def test_killed_prepare_leaves_no_worker_and_the_next_run_cleans_up(tmp_path):
    src = make_folder(tmp_path / "raw", 40, size=(64, 48))
    out = tmp_path / "out"
    script = tmp_path / "slow_prepare.py"
    script.write_text(SLOW_PREPARE)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.Popen([sys.executable, str(script), str(src), str(out)], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = set()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until the workers are writing
            temps = list(tmp_path.glob(".out.*.tmp"))
            if temps and list(temps[0].glob("images/*.png")):
                break
            time.sleep(0.1)
        else:
            pytest.fail("the prepare run never started writing")
        workers = descendants(run.pid)
        assert len(workers) >= 2
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(running(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers if running(pid)], "workers outlived the killed prepare"
    finally:
        run.kill()
        for pid in workers:  # only the processes this test started
            if running(pid):
                os.kill(pid, signal.SIGKILL)
    left = list(tmp_path.glob(".out.*.tmp"))
    assert len(left) == 1 and f".out.{HOST}.{run.pid}." in left[0].name and not out.exists()
    prepare("folder", src, out, size=32, counts=(30, 5, 5), folds=0, workers=1)
    assert not list(tmp_path.glob(".out.*")) and len(load_prepared(out)) == 40


def test_only_stale_temporaries_of_the_same_target_are_removed(tmp_path):
    gone, alive = dead_pid(), os.getpid()
    names = {
        "stale": f".out.{HOST}.{gone}.abcd1234.tmp",
        "stale_old": f".out.{HOST}.{gone}.abcd1234.old",
        "live": f".out.{HOST}.{alive}.abcd1234.tmp",               # a run still writing
        "other_host": f".out.elsewhere.{gone}.abcd1234.tmp",        # a shared disk: not ours to judge
        "other_target": f".output.{HOST}.{gone}.abcd1234.tmp",
        "older_ulvm": ".out.abcd1234.tmp",                          # no process id: left, with a warning
        "users": ".out.mine.tmp",
    }
    for name in names.values():
        (tmp_path / name).mkdir()
        (tmp_path / name / "file").write_text("x")
    with atomic_directory(tmp_path / "out") as tmp:
        (tmp / "a").write_text("new")
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {"out"} | set(names.values()) - {names["stale"], names["stale_old"]}
    assert remove_stale_temporaries(tmp_path / "out") == []
