"""Is training bit-reproducible on this machine? One config trained twice with `--deterministic` and twice
without, compared by the SHA-256 of the weights in each run's `best.pt`, with the epoch times of both modes.

`ulvm determinism --data DATA --out FILE.json` (a few epochs of the paper's protocol by default). Each run is its
own `ulvm train` process: deterministic mode is process-wide, and cuBLAS reads its workspace setting
(`CUBLAS_WORKSPACE_CONFIG`) only when a process first uses it. The weights are hashed, not the file: `best.pt`
also holds the run's history, whose epoch times differ between any two runs.

Where a CUDA run's variation comes from, and what `--deterministic` (`ulvm.runtime.use_deterministic`) does
about each: cuDNN times several convolution algorithms and keeps the fastest (`cudnn.benchmark`), and some of
them add partial sums in a varying order: benchmark off, deterministic algorithms only. The backward passes of
the decoder's bilinear upsampling and of the bridge's AdaptiveAvgPool2d add with atomics: matrix products and a
plain mean stand in (`ulvm.model`). The Triton scan's backward adds dB and dC over the channels with atomics:
each channel writes its own part, summed afterwards (`ulvm.ssm.triton_scan`). cuBLAS may split a product's
reduction differently from call to call: a fixed workspace. The augmentation draws, the data order and the
initialisation come from seeded generators and were never the source.
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import torch

from ..errors import RunError
from ..io import atomic_write_json
from .checkpoint import read_run_checkpoint

MODES = {"deterministic": ("--deterministic",), "default": ()}


def weights_sha256(checkpoint: str | Path) -> str:
    """SHA-256 over a run checkpoint's model tensors (name, dtype, shape and bytes, in name order)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(read_run_checkpoint(checkpoint)["model"].items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def largest_difference(first: str | Path, second: str | Path) -> float:
    """The largest absolute difference between two checkpoints' weights (0.0: identical)."""
    a, b = read_run_checkpoint(first)["model"], read_run_checkpoint(second)["model"]
    return max(((a[name].double() - b[name].double()).abs().max().item() for name in a if a[name].numel()),
               default=0.0)


def train_twice(data: Path, runs: Path, mode: str, train_flags: list[str]) -> dict:
    """Two identical `ulvm train` runs of one mode; their weight hashes, difference and epoch times."""
    folders = [runs / f"{mode}_{i}" for i in (1, 2)]
    runs.mkdir(parents=True, exist_ok=True)
    for folder in folders:
        command = [sys.executable, "-m", "ulvm", "train", "--data", str(data), "--out", str(folder), *train_flags,
                   *MODES[mode], "--overwrite", "--no-test", "--no-progress"]
        log = folder.with_suffix(".log")
        with open(log, "w", encoding="utf-8") as output:
            if subprocess.call(command, stdout=output, stderr=subprocess.STDOUT) != 0:
                raise RunError(f"{' '.join(command[1:])} failed, see {log}")
    hashes = [weights_sha256(folder / "best.pt") for folder in folders]
    times = [[round(row["epoch_time_s"], 3) for row in read_run_checkpoint(folder / "last.pt")["history"]]
             for folder in folders]
    return {"identical": hashes[0] == hashes[1], "weights_sha256": hashes,
            "largest_weight_difference": largest_difference(*(folder / "best.pt" for folder in folders)),
            "epoch_time_s": times,
            # the first epoch holds the start-up (graph capture, compiling): left out of the mean
            "mean_epoch_s_after_first": round(sum(t for run in times for t in run[1:])
                                              / max(1, sum(len(run) - 1 for run in times)), 3)}


def check_determinism(data: str | Path, runs: str | Path, out: str | Path, *, epochs: int = 3,
                      profile: str = "paper", seed: int = 42, device: str = "cuda",
                      overrides: tuple[str, ...] = (), settings: tuple[str, ...] = ()) -> dict:
    """Train the config twice per mode (see the module docstring) and write the comparison as JSON to `out`.
    `overrides`: more `--set FIELD=VALUE`; `settings`: more flags of how the runs run (e.g. --compile)."""
    from ..runtime import describe_machine
    from ..version import code_version

    flags = ["--profile", profile, "--seed", str(seed), "--device", device, "--set", f"epochs={epochs}",
             *(item for override in overrides for item in ("--set", override)), *settings]
    record = {mode: train_twice(Path(data), Path(runs), mode, flags) for mode in MODES}
    slower = record["deterministic"]["mean_epoch_s_after_first"] / max(record["default"]["mean_epoch_s_after_first"],
                                                                        1e-9)
    record.update({"deterministic_epoch_time_ratio": round(slower, 3), "train_flags": flags,
                   "data": str(data), "machine": describe_machine(device), "code_version": code_version()})
    atomic_write_json(out, record)
    return record
