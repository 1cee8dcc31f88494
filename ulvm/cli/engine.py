"""`ulvm train` and `ulvm test`: the engine group (argument parsing only; the work is in ulvm.engine.train/evaluate)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import AUGMENT_MODES, PROFILES, Config, RunSettings, parse_overrides
from ..errors import UlvmError

# Flags named in the protocol; any other config field is set with `--set field=value`.
_FIELD_FLAGS = {
    "parallel": dict(type=int, choices=(1, 2, 4), help="PVM parallel chunks (paper: 4)"),
    "seed": dict(type=int, help="random seed (paper: 42)"),
    "fold": dict(type=int, help="cross-validation fold of the prepared data"),
    "model": dict(help="architecture: ultralight (default) or a baseline: unet, unext_s, malunet, egeunet, "
                       "vmunet, lightmunet"),
    "epochs": dict(type=int, help="number of epochs (paper: 250)"),
    "batch_size": dict(type=int, help="training batch (paper: 8)"),
    "augment": dict(choices=AUGMENT_MODES, help="training augmentation path"),
    "max_images": dict(type=int, help="use at most this many train and val images"),
}
_PROFILE_HELP = ("named config: 'paper' (the default) = the paper's protocol, 256², 250 epochs on every "
                 "image (a GPU job: minutes on a recent GPU, days on a CPU); 'quick' = 64², 6 epochs, at "
                 "most 64 train and val images (a minute or two on a CPU)")
_THREADS_HELP = ("CPU threads for torch (default: torch's choice). On a shared small machine use 1: "
                 "this tiny model gains little from threads and slows badly when a core is busy")


def register(sub) -> None:
    """Add `train` and `test` to the `ulvm` parser."""
    train = sub.add_parser("train", help="train UltraLight VM-UNet with the paper's protocol (resumable)",
                           description="Train into a run folder; resumes from RUN/last.pt when it exists, "
                                       "then tests best.pt (lowest validation loss) on the test split.")
    train.add_argument("--data", type=Path, help="prepared dataset folder (default: the synthetic default "
                                                 "under data/, created if missing)")
    train.add_argument("--out", type=Path, required=True, help="run folder, e.g. runs/NAME")
    start = train.add_mutually_exclusive_group()
    start.add_argument("--profile", choices=tuple(PROFILES), help=_PROFILE_HELP)
    start.add_argument("--config", type=Path, help="YAML config file (instead of --profile)")
    for name, options in _FIELD_FLAGS.items():
        train.add_argument("--" + name.replace("_", "-"), dest=name, default=None, **options)
    train.add_argument("--no-bridge", dest="bridge", action="store_const", const=False, default=None,
                       help="drop the SC_Att_Bridge (ablation)")
    train.add_argument("--amp", dest="amp", action="store_const", const=True, default=None,
                       help="mixed precision on CUDA (off in the paper)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                       help="override any config field (value parsed as YAML), repeatable")
    train.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                       help="train one run per seed together in this process, taking turns step by step (each "
                            "on its own CUDA stream); --out names the folders with {seed}, e.g. runs/p4_s{seed}")
    add_settings_flags(train)
    train.add_argument("--overwrite", action="store_true", help="start again even if RUN holds a run")
    train.add_argument("--no-resume", dest="resume", action="store_false",
                       help="refuse to continue an unfinished run in RUN")
    train.add_argument("--no-test", dest="test", action="store_false", help="skip the final test")
    train.add_argument("--no-progress", dest="progress", action="store_false",
                       help="no progress bars (the one-line summary of each epoch is still printed)")
    train.set_defaults(func=run_train)

    test = sub.add_parser("test", help="test a run's best.pt the paper's way (pooled metrics + CI)",
                          description="Pooled DSC/IoU/ACC/SE/SP, per-image DSC and a bootstrap CI; "
                                      "writes RUN/results_<data>_<split>.json.")
    test.add_argument("--run", type=Path, required=True, help="run folder written by `ulvm train`")
    test.add_argument("--data", type=Path, help="prepared dataset (default: the one the run trained on); "
                                                "another one = external validation")
    test.add_argument("--split", default="test", choices=("train", "val", "test"),
                      help="which split of --data to test on (default test)")
    test.add_argument("--fold", type=int, help="fold of --data (default: the run's own fold on its own data)")
    add_settings_flags(test)
    test.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates for the DSC CI")
    test.add_argument("--save-predictions", action="store_true",
                      help="also write prediction masks and overlays (PNG) into "
                           "RUN/predictions_<data>_<split>[_fold<k>]/")
    test.set_defaults(func=run_test)

    check = sub.add_parser(
        "determinism", help="train one config twice with --deterministic and twice without; compare the weights",
        description="Four `ulvm train` runs of a few epochs (ulvm.engine.determinism): two with --deterministic, "
                    "two without. Writes whether each pair's best.pt weights are bit-identical (SHA-256), their "
                    "largest difference and the epoch times of both modes to --out (JSON).")
    check.add_argument("--data", type=Path, required=True, help="prepared dataset, e.g. data/prepared/isic2017")
    check.add_argument("--out", type=Path, required=True, help="the JSON record to write")
    check.add_argument("--runs", type=Path, default=Path("runs/determinism"),
                       help="the four run folders (default runs/determinism)")
    check.add_argument("--epochs", type=int, default=3, help="epochs of each run (default 3)")
    check.add_argument("--profile", choices=tuple(PROFILES), default="paper", help="config profile (default paper)")
    check.add_argument("--seed", type=int, default=42, help="the seed of all four runs (default 42)")
    check.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    check.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                       help="override a config field of every run, repeatable")
    check.add_argument("--compile", action="store_true", help="train with --compile")
    check.add_argument("--threads", type=int, help=_THREADS_HELP)
    check.set_defaults(func=run_determinism)

    version = sub.add_parser("version", help="the code version that results are recorded with",
                             description="Prints the code version (git describe, or the stamp of a copy "
                                         "without .git). --write stamps this checkout's commit into the "
                                         "package, for copies that travel without .git (e.g. to a GPU machine).")
    version.add_argument("--write", action="store_true", help="write ulvm/VERSION.json from git")
    version.set_defaults(func=run_version)


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """How the command runs (`ulvm.config.RunSettings`): never part of a run's identity."""
    group = parser.add_argument_group("how it runs (does not change the result)")
    group.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    group.add_argument("--backend", default="auto",
                       help="selective-scan backend: auto | reference | parallel | chunked | cpp | triton | cuda "
                            "(default auto: triton on a GPU, parallel on a CPU; cpp: CPU inference only)")
    group.add_argument("--no-cuda-graph", dest="cuda_graph", action="store_false",
                       help="train eagerly on CUDA instead of replaying each step as a CUDA graph")
    group.add_argument("--eval-batch-size", type=int, default=8, help="validation/test batch (default 8)")
    group.add_argument("--compile", action="store_true",
                       help="on CUDA: torch.compile the model of the graphed training step (less GPU time a "
                            "step; compiling adds about a minute to the first epoch)")
    group.add_argument("--threads", type=int, help=_THREADS_HELP)
    group.add_argument("--deterministic", action="store_true",
                       help="deterministic kernels only: the same seed on the same GPU model and software gives "
                            "bit-identical weights (cuDNN autotuning off, no atomic adds; slower on CUDA)")


def settings_from_args(args: argparse.Namespace) -> RunSettings:
    """The run settings of a command; also sets torch's CPU threads when asked."""
    settings = RunSettings(device=args.device, backend=args.backend, cuda_graph=args.cuda_graph,
                           eval_batch_size=args.eval_batch_size, compile=args.compile, threads=args.threads,
                           deterministic=args.deterministic)
    if settings.threads is not None:
        import torch
        torch.set_num_threads(settings.threads)
    return settings


def config_from_args(args: argparse.Namespace):
    """Profile or YAML file, then the named flags, then `--set` overrides."""
    config = Config.from_yaml(args.config) if args.config else Config.profile(args.profile or "paper")
    overrides = {name: getattr(args, name) for name in (*_FIELD_FLAGS, "bridge", "amp")
                 if getattr(args, name) is not None}
    return config.replace(**{**overrides, **parse_overrides(args.overrides)})   # --set wins


def run_train(args: argparse.Namespace) -> int:
    from ..engine.evaluate import evaluate, summary_line, write_results
    from ..engine.train import fit_together

    settings = settings_from_args(args)
    config = config_from_args(args)
    if args.seeds:
        if args.seed is not None or "{seed}" not in str(args.out):
            raise UlvmError("--seeds trains one run per seed: give no --seed, and name the run folders with "
                            f"{{seed}} in --out (e.g. runs/p4_s{{seed}}), not {args.out}")
        configs = [config.replace(seed=seed) for seed in args.seeds]
        outs = [Path(str(args.out).replace("{seed}", str(seed))) for seed in args.seeds]
    else:
        configs, outs = [config], [args.out]
    for out in outs:
        if (out.exists() or out.is_symlink()) and not out.is_dir():
            raise UlvmError(f"--out {out}: exists and is not a folder; a run is a folder (e.g. runs/NAME)")
    data = args.data
    if data is None:
        from ..data import default_dataset
        data = default_dataset()
    trained = fit_together(configs, data, outs, settings=settings, resume=args.resume, overwrite=args.overwrite,
                           progress=args.progress, on_epoch=print)
    for out, result in zip(outs, trained):
        print(f"trained {out}: best epoch {result.best_epoch} (val loss {result.best_val_loss:.4f}), "
              f"{result.wall_time_s:.1f}s on {result.device}")
        if args.test:
            tested = evaluate(out, data, settings=settings)
            path = write_results(tested, out)
            print(summary_line(tested))
            print(f"results: {path}")
    return 0


def run_test(args: argparse.Namespace) -> int:
    from ..engine.checkpoint import read_run_checkpoint
    from ..engine.evaluate import evaluate, summary_line, write_results
    from ..engine.runs import RunFolder, is_finished

    settings = settings_from_args(args)
    folder = RunFolder(args.run)
    checkpoint = read_run_checkpoint(folder.best_path)
    last = folder.checkpoint() or checkpoint
    if not is_finished(last):
        epochs = Config.from_dict(last["config"], source=str(folder.last_path)).epochs
        print(f"ulvm test: warning: {args.run} has not finished training (epoch {last['epoch']} of {epochs}); "
              "testing its best.pt so far", file=sys.stderr)
    data = args.data
    if data is None:
        data = Path(checkpoint["data"]["root"])
        if not data.is_dir():
            raise UlvmError(f"{data}: the dataset {folder.best_path} was trained on is not there (the path "
                            "is the one stored in the checkpoint); pass --data")
    results = evaluate(args.run, data, split=args.split, fold=args.fold, settings=settings,
                       bootstrap=args.bootstrap, save_predictions=args.save_predictions)
    path = write_results(results, args.run)
    print(summary_line(results))
    print(f"results: {path}")
    return 0


def run_determinism(args: argparse.Namespace) -> int:
    from ..engine.determinism import check_determinism

    if args.epochs < 1:
        raise UlvmError("--epochs must be at least 1")
    settings = (("--compile",) if args.compile else ()) + (("--threads", str(args.threads)) if args.threads else ())
    record = check_determinism(args.data, args.runs, args.out, epochs=args.epochs, profile=args.profile,
                               seed=args.seed, device=args.device, overrides=tuple(args.overrides), settings=settings)
    for mode in ("deterministic", "default"):
        entry = record[mode]
        print(f"{mode:<13} bit-identical weights: {'yes' if entry['identical'] else 'no'} (largest difference "
              f"{entry['largest_weight_difference']:.3g}); {entry['mean_epoch_s_after_first']:.2f} s an epoch")
    print(f"written {args.out}")
    return 0


def run_version(args: argparse.Namespace) -> int:
    from ..version import code_version, write_stamp

    if args.write:
        print(f"stamped {write_stamp()['version']}")
    print(code_version())
    return 0
