"""The fit loop: the paper's training protocol, with checkpoints that survive a kill.

Protocol (UltraLight VM-UNet §4.1, all values in `ulvm.config.Config`): AdamW, CosineAnnealingLR stepped
once per epoch, BCE + Dice loss (`ulvm.engine.losses`), a validation pass after every epoch, and the model with
the LOWEST VALIDATION LOSS kept as `best.pt` — the one `ulvm.engine.evaluate` then tests. The book's training
chapter runs this loop and plots its log.

Where the pieces live: the network from `ulvm.registry.build_model`, the split as tensors from
`ulvm.data.tensors`, batches and augmentation from `ulvm.data.batcher.TrainBatcher`, AdamW and the
schedule from `ulvm.engine.optim`, the run folder (fresh start, resume, refusal, log) from `ulvm.engine.runs`. Here is
only the loop: `_setup` (data, model, optimiser, resume), `_epoch_steps`, `_end_epoch` (validate,
checkpoint, log), and `fit_together`, which takes turns between several runs in one process.

How it is made fast: the split is held in memory as tensors (on the GPU when training there), the loss
is summed on the device and read once per epoch, and on CUDA (`RunSettings.cuda_graph`) the full-batch
step is recorded once as a CUDA graph (`ulvm.engine.graphs.GraphedTrainStep`) and replayed: the same maths, one
launch instead of many; the last short batch of an epoch (the official loader keeps it) runs eagerly.
With `RunSettings.compile` the full-batch step's model first goes through torch.compile (fewer, fused
kernels in the graph).

Resume: `last.pt` holds model, optimizer, scheduler, every RNG state, epoch and history; a run folder
with a `last.pt` is resumed automatically and, on CPU, ends bit-identical to an uninterrupted run
(tests/test_train.py kills a run with SIGKILL to check this). A finished run is not overwritten
unless asked; a NaN/inf loss stops the run with `RunError` and keeps the last good checkpoint.

Not deterministic on CUDA by default (same seed, same GPU, same software): cuDNN picks convolution
algorithms by timing them (`cudnn.benchmark`, set on CUDA for speed), some of them adding in a varying order,
and the backward passes of bilinear `F.interpolate` (every decoder upsampling), of `AdaptiveAvgPool2d` (the
bridge's pooling) and of the selective scan (ours in Triton: dB and dC; mamba-ssm's too) add with atomics.
Differences start in the last bits of the first gradients and grow over epochs, so two CUDA runs with one seed
end at slightly different weights and metrics. `RunSettings.deterministic` (`--deterministic`) removes these
sources (`ulvm.runtime.use_deterministic`; `ulvm determinism` checks it and times the cost), with our Triton scan
(mamba-ssm's backward stays atomic; with `--compile` it is the generated kernels' turn to be checked). With
`cuda_graph` the learning rate is a float32 GPU tensor (1e-3 is stored as 1.00000005e-3). What the seed fixes
either way: initialisation, data order, augmentation draws. Resume on CUDA continues the same RNG streams.
"""
from __future__ import annotations

import logging
import math
import sys
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Generator

import torch

from ..config import Config, RunSettings
from ..data.batcher import TrainBatcher
from ..data.tensors import load_data, pixel_hashes, split_tensors
from ..errors import RunError
from ..progress import progress_bar
from ..registry import build_model
from ..runtime import resolve_device, seed_everything, use_deterministic
from .checkpoint import restore_rng_states, rng_states, save_checkpoint
from .graphs import GraphedTrainStep, graphable, set_capturable
from .inference import validate
from .losses import bce_dice_loss, loss_weights
from .optim import build_optimizer
from .runs import RunFolder, TrainResult, epoch_line, open_tensorboard, prepare_run_dir, run_result

log = logging.getLogger(__name__)


def train_step(model, optimizer, images: torch.Tensor, masks: torch.Tensor, weights: dict[str, float],
               scaler: torch.amp.GradScaler | None = None, keep_grad_tensors: bool = False) -> torch.Tensor:
    """Forward, BCE + Dice, backward, AdamW step. Returns the loss as a detached device tensor.

    The gradients are set to None first, so backward writes them rather than adding to zeroed ones: in a
    CUDA graph that saves a fill and an add kernel a parameter, and more.
    `keep_grad_tensors`: zero them in place instead, for an eager step beside a graph: the graph's `.grad`
    tensors were allocated while it was recorded, and its replays write and read exactly those.
    """
    optimizer.zero_grad(set_to_none=not keep_grad_tensors)
    with torch.autocast(device_type=images.device.type, dtype=torch.float16, enabled=scaler is not None):
        probs = model(images)                                          # (batch, 1, S, S)
    loss = bce_dice_loss(probs, masks, **weights)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return loss.detach()


@dataclass
class _Training:
    """What the steps of one `fit` call share."""
    config: Config
    settings: RunSettings
    run_dir: Path
    device: torch.device
    model: torch.nn.Module
    step_model: torch.nn.Module                   # what a full-batch training step calls: model, or it compiled
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler | None
    batcher: TrainBatcher
    val: tuple[torch.Tensor, torch.Tensor]
    data_info: dict[str, Any]
    graphed: bool
    step_graph: GraphedTrainStep | None = None    # recorded at the first full batch (after a resume: loaded state)
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, float] = field(default_factory=lambda: {"epoch": 0, "val_loss": math.inf})
    start_epoch: int = 0


def _setup(config: Config, data, run_dir: Path, settings: RunSettings, resume: bool, overwrite: bool,
           held: ExitStack) -> _Training:
    """Data first (a split it cannot train on is refused before the run folder is touched), then the run
    folder (refused if it holds files of the user's; locked in `held` while the run trains), model,
    optimiser, and the state to resume from."""
    device = resolve_device(settings.device)
    if settings.deterministic:
        use_deterministic()
    elif device.type == "cuda":
        # cuDNN's default backward for the bridge's 7x7 dilated 2->1 conv is a slow one; timing the
        # algorithms once per shape picks a much faster one (measured in `ulvm bench`).
        torch.backends.cudnn.benchmark = True
    prepared = load_data(data)
    train_images, train_masks, train_ids = split_tensors(prepared, "train", config, device, config.max_images)
    val_images, val_masks, val_ids = split_tensors(prepared, "val", config, device, config.max_images)
    batcher = TrainBatcher(prepared, train_images, train_masks, config, device)
    if batcher.steps() == 0:
        raise RunError(f"{prepared.root}: {train_images.shape[0]} training images are fewer than "
                       f"batch_size={config.batch_size} with drop_last=True: an epoch would have no step")
    seed_everything(config.seed)
    model = build_model(config, settings.backend).to(device)       # an unknown model or backend: refused here
    graphed = graphable(config, settings, device)
    folder = RunFolder(run_dir)
    folder.check_ours()
    held.enter_context(folder.locked())
    checkpoint = prepare_run_dir(run_dir, config, prepared.content_hash, resume, overwrite)
    config.to_yaml(folder.config_path)
    if config.amp and device.type != "cuda":
        log.warning("amp=True is ignored on %s: mixed precision is only used on CUDA", device)

    optimizer, scheduler = build_optimizer(model, config, capturable=graphed)
    data_info = {"root": str(Path(prepared.root).resolve()), "manifest_hash": prepared.manifest_hash,
                 "content_hash": prepared.content_hash,
                 "train_images": int(train_images.shape[0]), "val_images": int(val_images.shape[0]),
                 # the images the model saw (and was selected on), id -> pixel hash: `evaluate` refuses a test
                 # split holding any of them, even under another name or in data prepared again
                 "seen_images": pixel_hashes(prepared, [*train_ids, *val_ids])}
    scaler = torch.amp.GradScaler("cuda") if config.amp and device.type == "cuda" else None
    run = _Training(config, settings, run_dir, device, model, _step_model(model, settings, device), optimizer,
                    scheduler, scaler, batcher, (val_images, val_masks), data_info, graphed)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        set_capturable(optimizer, graphed)          # the checkpoint's state loads on the CPU, in its own mode
        scheduler.load_state_dict(checkpoint["scheduler"])
        if scaler is not None and "scaler" in checkpoint:
            scaler.load_state_dict(checkpoint["scaler"])
        try:
            restore_rng_states(checkpoint["rng"], batcher.generators())
        except RuntimeError as error:      # e.g. a CUDA generator's state given to a CPU generator
            raise RunError(f"{run_dir / 'last.pt'}: cannot continue this run's random streams on {device} "
                           f"({error}); resume it on the kind of device it was trained on") from error
        run.history, run.best = list(checkpoint["history"]), dict(checkpoint["best"])
        run.start_epoch = checkpoint["epoch"]
        log.info("%s: resuming after epoch %d of %d", run_dir, run.start_epoch, config.epochs)
    return run


def _step_model(model: torch.nn.Module, settings: RunSettings, device: torch.device) -> torch.nn.Module:
    """`model`, or with `settings.compile` on CUDA the same model through torch.compile for the full-batch
    steps, graphed or not (one static shape; the short last batch and validation run the plain model, which
    shares its weights)."""
    if not settings.compile:
        return model
    if device.type != "cuda":
        log.warning("compile=True is ignored on %s: it is for the graphed training step on CUDA", device)
        return model
    # fp32 stays fp32: Inductor moves the convolutions to channels-last, where cuDNN would otherwise use
    # TF32 tensor cores (1e-3 relative error in `ulvm bench`, `h200_compile_tf32.json`)
    torch.backends.cudnn.allow_tf32 = False
    return torch.compile(model, dynamic=False)


def _epoch_steps(run: _Training, epoch: int, progress: bool) -> Generator[None, None, dict[str, float]]:
    """One pass over the training split, yielding after every step (so that `fit_together` can take turns
    between runs); returns the epoch's log row so far (epoch, lr, train_loss)."""
    config = run.config
    lr = float(run.optimizer.param_groups[0]["lr"])
    weights = loss_weights(config)
    run.model.train()
    loss_sum = torch.zeros((), device=run.device)
    # in a log (not a terminal) the epoch summary lines are the progress: no per-step lines
    bar = progress_bar(run.batcher.epoch(), total=run.batcher.steps(), disable=not (progress and sys.stderr.isatty()),
                       leave=False,
               desc=f"epoch {epoch}/{config.epochs}", unit="step")
    for step, (images, masks) in enumerate(bar, start=1):
        if run.graphed and images.shape[0] == config.batch_size:
            if run.step_graph is None:
                run.step_graph = GraphedTrainStep(
                    partial(train_step, run.step_model, run.optimizer, weights=weights),
                    run.model, run.optimizer, images, masks)
            loss_sum += run.step_graph(images, masks)
        else:  # CPU, amp, or the last short batch: eager (beside a graph: on the graph's .grad tensors)
            model = run.step_model if images.shape[0] == config.batch_size else run.model
            loss_sum += train_step(model, run.optimizer, images, masks, weights, run.scaler,
                                   keep_grad_tensors=run.graphed)
        if not bar.disable and (step % 20 == 0 or step == run.batcher.steps()):  # a few host syncs an epoch
            bar.set_postfix(loss=f"{loss_sum.item() / step:.4f}", lr=f"{lr:.2e}")
        yield
    bar.close()
    return {"epoch": epoch, "lr": lr, "train_loss": loss_sum.item() / run.batcher.steps()}


def _end_epoch(run: _Training, row: dict[str, float], started: float, board) -> None:
    """Validate, step the schedule, stop on a non-finite loss, then write best.pt, last.pt and log.csv."""
    epoch, last_path = row["epoch"], run.run_dir / "last.pt"
    row.update(validate(run.model, *run.val, run.config, run.settings.eval_batch_size))
    run.scheduler.step()
    if not (math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"])):
        kept = f"{last_path} (epoch {epoch - 1})" if epoch > 1 else "no checkpoint yet"
        raise RunError(f"{run.run_dir}: epoch {epoch}: loss is not finite (train {row['train_loss']}, "
                       f"val {row['val_loss']}); stopped, last good checkpoint kept: {kept}")
    row["epoch_time_s"] = time.perf_counter() - started
    run.history.append(row)
    state = {"model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
             "scheduler": run.scheduler.state_dict(), "rng": rng_states(run.batcher.generators()),
             "epoch": epoch, "config": run.config.to_dict(), "history": run.history, "data": run.data_info}
    if run.scaler is not None:
        state["scaler"] = run.scaler.state_dict()
    try:
        if row["val_loss"] < run.best["val_loss"]:
            run.best = {"epoch": epoch, "val_loss": row["val_loss"]}
            save_checkpoint(run.run_dir / "best.pt", **state, best=run.best)
        # last.pt after best.pt: a kill in between leaves best.pt one epoch ahead, and the resumed run
        # redoes that epoch identically, so both files end up as in an uninterrupted run.
        save_checkpoint(last_path, **state, best=run.best)
        RunFolder(run.run_dir).write_log(run.history)
    except OSError as error:      # a full disk (ENOSPC), a quota, a disk gone read-only: every write is atomic
        kept = f"{last_path} of epoch {epoch - 1} is intact" if epoch > 1 else "no checkpoint was written yet"
        raise RunError(f"{run.run_dir}: epoch {epoch} could not be saved ({error.strerror or error}); {kept}: "
                       "free some space and run the same command again to resume") from None
    if board is not None:
        for key in ("lr", "train_loss", "val_loss", "val_dsc", "val_iou"):
            board.add_scalar(key, row[key], epoch)


def fit(config: Config, data, out_dir: str | Path, *, settings: RunSettings | None = None, resume: bool = True,
        overwrite: bool = False, progress: bool = True, on_epoch=None) -> TrainResult:
    """Train `config` on a prepared dataset (path or `load_prepared` object) into the run folder `out_dir`.

    Resumes from `out_dir/last.pt` when present (same config and data required); refuses to redo a
    finished run unless `overwrite`. `settings`: device, backend, CUDA graphs (default `RunSettings()`).
    `on_epoch(line)` receives each epoch's summary line (the CLI prints it; default: none). Returns a
    `TrainResult`; the model to test is `best.pt`.
    """
    return fit_together([config], data, [out_dir], settings=settings, resume=resume, overwrite=overwrite,
                        progress=progress, on_epoch=on_epoch)[0]


def fit_together(configs: list[Config], data, out_dirs: list[str | Path], *, settings: RunSettings | None = None,
                 resume: bool = True, overwrite: bool = False, progress: bool = True,
                 on_epoch=None) -> list[TrainResult]:
    """Train several runs in ONE process, one training step of each in turn, each run on its own CUDA
    stream: the GPU can then run the kernels of different runs at the same time, as it does for several
    processes under CUDA MPS, without the daemon (`ulvm train --seeds`, `ulvm throughput --together`).

    Each run is the run `fit` trains alone: its own folder, seed, data order, augmentation draws,
    checkpoints, log and resume (on a CPU, bit-identical to training it alone: tests/test_train.py). The
    runs share the prepared data on disk, not their tensors. A run's `epoch_time_s` is counted from the
    start of the group's epoch, so it is the time an epoch took while sharing.
    """
    out_dirs = [Path(out_dir) for out_dir in out_dirs]
    if not configs or len(configs) != len(out_dirs):
        raise RunError(f"{len(configs)} configs for {len(out_dirs)} run folders: give one folder per run")
    if len({out_dir.resolve() for out_dir in out_dirs}) < len(out_dirs):
        raise RunError(f"two runs would share a run folder: {', '.join(map(str, out_dirs))}")
    started = time.perf_counter()
    settings = settings or RunSettings()
    prepared = load_data(data)
    with ExitStack() as held:                          # each run folder locked until its run ends
        runs = [_setup(config, prepared, out_dir, settings, resume, overwrite, held)
                for config, out_dir in zip(configs, out_dirs)]
        _train_in_turn(runs, configs, progress, on_epoch)
    wall_time = time.perf_counter() - started
    return [run_result(run.run_dir, {"history": run.history, "best": run.best, "data": run.data_info}, wall_time,
                       run.start_epoch, str(run.device)) for run in runs]


def _train_in_turn(runs: list[_Training], configs: list[Config], progress: bool, on_epoch) -> None:
    """Every epoch of every run, the runs taking turns step by step (one run: plain training)."""
    together = len(runs) > 1
    streams = [torch.cuda.Stream(run.device) if together and run.device.type == "cuda" else None for run in runs]
    boards = [open_tensorboard(run.run_dir, run.start_epoch) for run in runs]
    try:
        for epoch in range(min(run.start_epoch for run in runs) + 1, max(c.epochs for c in configs) + 1):
            active = [i for i, run in enumerate(runs) if run.start_epoch < epoch <= run.config.epochs]
            epoch_started = time.perf_counter()
            rows = _epochs_in_turn([runs[i] for i in active], [streams[i] for i in active], epoch,
                                   progress and not together)
            for i, row in zip(active, rows):
                _end_epoch(runs[i], row, epoch_started, boards[i])
                if on_epoch is not None:
                    line = epoch_line(row, runs[i].config.epochs, runs[i].best["epoch"] == epoch)
                    on_epoch(f"{runs[i].run_dir.name}: {line}" if together else line)
    finally:
        for board in boards:
            if board is not None:
                board.close()


def _epochs_in_turn(runs: list[_Training], streams: list, epoch: int, progress: bool) -> list[dict[str, float]]:
    """One epoch of every run, a step of each in turn, each step issued on its run's stream (None: the
    current one); the runs' log rows so far. Ends with the streams synchronised, ready for validation."""
    for stream in streams:
        if stream is not None:                # the data, weights and learning rate were last written here
            stream.wait_stream(torch.cuda.current_stream(stream.device))
    steps = [_epoch_steps(run, epoch, progress) for run in runs]
    rows: list[dict[str, float] | None] = [None] * len(runs)
    while any(row is None for row in rows):
        for i, stream in enumerate(streams):
            if rows[i] is not None:
                continue
            with torch.cuda.stream(stream) if stream is not None else nullcontext():
                try:
                    next(steps[i])
                except StopIteration as done:
                    rows[i] = done.value
    for stream in streams:
        if stream is not None:
            torch.cuda.current_stream(stream.device).wait_stream(stream)
    return rows
