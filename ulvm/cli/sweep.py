"""`ulvm sweep GRID.yaml`: a grid of runs on Dask distributed (the work is in ulvm.sweeps.sweep, which imports dask
only when a sweep runs), and `ulvm throughput`: how many runs one GPU holds (ulvm.sweeps.throughput). Parsing only."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..config import RunSettings

MPS_PERCENTAGE_HELP = ("under the CUDA MPS daemon, each run's share of its GPU's SMs in %% "
                       "(CUDA_MPS_ACTIVE_THREAD_PERCENTAGE; default: all), for many runs that share a GPU; a "
                       "lone run under a cap only loses SMs")


def register(sub) -> None:
    """Add `sweep` to the `ulvm` parser."""
    sweep = sub.add_parser(
        "sweep", help="run a grid of runs from a YAML file on Dask (resumable; records each finished run)",
        description="Expands GRID.yaml (see ulvm.sweeps.sweep and book/grids/) into named jobs, runs the unfinished "
                    "ones (`ulvm train` + `ulvm test` on every test_on dataset) on a local Dask cluster, one "
                    "worker per GPU slot, or on a running cluster (--scheduler), and writes one record per job "
                    "and test set under --record. Finished jobs are skipped, interrupted ones resume.")
    sweep.add_argument("grid", type=Path, help="grid file, e.g. book/grids/isic2017.yaml")
    sweep.add_argument("--dry-run", action="store_true", help="list the jobs, their state and command; run nothing")
    sweep.add_argument("--runs", type=Path, help="run folders (default runs/NAME)")
    sweep.add_argument("--record", type=Path, help="where the per-run JSON records go (default book/results/NAME)")
    sweep.add_argument("--data", type=Path, help="prepared dataset to train on, instead of the grid file's")
    sweep.add_argument("--test-on", type=Path, nargs="*", help="prepared datasets to also test on, instead of "
                                                               "the grid file's test_on")
    sweep.add_argument("--runs-per-gpu", type=int, default=1, metavar="K",
                       help="runs at once on every visible GPU (local cluster; default 1)")
    sweep.add_argument("--workers", type=int, metavar="N",
                       help="CPU workers when there is no GPU (local cluster; default 2)")
    sweep.add_argument("--scheduler", metavar="ADDRESS",
                       help="use a running Dask cluster (e.g. tcp://host:8786, or one started by dask-jobqueue "
                            "on SLURM/PBS) instead of a local one")
    sweep.add_argument("--device", default="auto", help="--device of every run: auto | cpu | cuda (default auto)")
    sweep.add_argument("--threads", type=int, help="--threads of every run (CPU threads for torch)")
    sweep.add_argument("--compile", action="store_true", help="--compile of every run (CUDA: a compiled step)")
    sweep.add_argument("--eval-batch-size", type=int, metavar="B",
                       help="--eval-batch-size of every run (validation/test batch; larger: fewer launches)")
    sweep.add_argument("--mps-percentage", type=int, metavar="P", help=MPS_PERCENTAGE_HELP)
    sweep.add_argument("--deterministic", action="store_true",
                       help="--deterministic of every run (bit-identical runs on the same GPU and software, slower)")
    sweep.add_argument("--allow-dirty", action="store_true",
                       help="record runs of a tree with uncommitted changes (the records say so)")
    sweep.set_defaults(func=run_sweep)

    p = sub.add_parser(
        "throughput", help="aggregate training throughput of K runs at once per GPU, CUDA MPS off and on",
        description="Starts K `ulvm train` processes at once (for each K), a few epochs each, and reports the "
                    "aggregate steady-state training images/s and epochs/min (first epoch left out) and the "
                    "speed-up over the first K; with --mps on, under the CUDA MPS daemon (started and stopped "
                    "here; where it cannot start, the rows say why).")
    p.add_argument("--data", type=Path, required=True, help="prepared dataset (e.g. data/prepared/isic2017)")
    p.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="runs at once (default 1 2 4 8 16)")
    p.add_argument("--mps", nargs="+", choices=("off", "on"), default=["off", "on"], help="default: off on")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run, the first is warm-up (default 3)")
    p.add_argument("--profile", default="paper", choices=("paper", "quick"), help="config profile (default paper)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a config field of every run, repeatable")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--gpus", type=int, nargs="*", default=[], help="GPU indices to spread the runs over, round-robin")
    p.add_argument("--together", type=int, default=1, metavar="P",
                   help="runs per process (default 1): P > 1 trains P runs in each `ulvm train --seeds` process, "
                        "taking turns on their own CUDA streams")
    p.add_argument("--compile", action="store_true", help="train with --compile (CUDA: a compiled step)")
    p.add_argument("--eval-batch-size", type=int, metavar="B", help="train with --eval-batch-size B (validation)")
    p.add_argument("--mps-percentage", type=int, metavar="P",
                   help=MPS_PERCENTAGE_HELP + " (the --mps on rows where processes share a GPU)")
    p.add_argument("--runs", type=Path, default=Path("runs/throughput"), help="run folders (default runs/throughput)")
    p.add_argument("--out", type=Path, help="also write the rows as JSON here (e.g. book/results/bench/)")
    p.set_defaults(func=run_throughput)


def run_settings(args: argparse.Namespace) -> RunSettings:
    """How every run of a sweep or throughput measurement executes (checked here, before any run starts)."""
    return RunSettings(device=args.device, compile=args.compile, threads=getattr(args, "threads", None),
                       deterministic=getattr(args, "deterministic", False),
                       **({"eval_batch_size": args.eval_batch_size} if args.eval_batch_size is not None else {}))


def run_sweep(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..sweeps.sweep import load_grid, sweep

    grid = load_grid(args.grid)
    if args.data is not None:
        grid = replace(grid, data=args.data)
    if args.test_on is not None:
        grid = replace(grid, test_on=tuple(args.test_on))
    result = sweep(grid, args.runs, args.record, dry_run=args.dry_run, scheduler=args.scheduler,
                   workers=args.workers, runs_per_gpu=args.runs_per_gpu, settings=run_settings(args),
                   mps_percentage=args.mps_percentage, allow_dirty=args.allow_dirty)
    return 0 if result.ok else 1


def run_throughput(args: argparse.Namespace) -> int:
    from ..io import atomic_write_json
    from ..sweeps.throughput import measure_throughput

    header = _throughput_header(args) if args.out else {}

    def keep(rows: list[dict]) -> None:         # after every K: what was measured survives a later failure
        if args.out:
            atomic_write_json(args.out, {"rows": rows, **header})

    rows = measure_throughput(args.data, args.runs, ks=tuple(args.ks), mps=tuple(args.mps), epochs=args.epochs,
                              profile=args.profile, settings=run_settings(args), gpus=tuple(args.gpus),
                              overrides=tuple(args.overrides), together=args.together,
                              mps_percentage=args.mps_percentage, on_row=keep)
    if args.out:
        print(f"written {args.out}")
    return 1 if any("failed" in row for row in rows) else 0


def _throughput_header(args: argparse.Namespace) -> dict:
    """What a throughput record says besides its rows: the settings, the machine and the code."""
    import subprocess

    from ..runtime import provenance

    gpu = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True) if args.device != "cpu" else None
    return {"epochs": args.epochs, "profile": args.profile, "overrides": args.overrides, "compile": args.compile,
            "eval_batch_size": args.eval_batch_size, "mps_percentage": args.mps_percentage,
            "data": str(args.data), "gpus": args.gpus,
            "gpu": gpu.stdout.strip() if gpu and gpu.returncode == 0 else None,
            **provenance(args.device)}
