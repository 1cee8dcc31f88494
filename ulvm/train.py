"""The fit loop: the paper's training protocol, with checkpoints that survive a kill.

Protocol (UltraLight VM-UNet §4.1, all values in `ulvm.config.Config`): AdamW, CosineAnnealingLR stepped
once per epoch, BCE + Dice loss (`ulvm.losses`), a validation pass after every epoch, and the model with
the LOWEST VALIDATION LOSS kept as `best.pt` — the one `ulvm.evaluate` then tests. The book's training
chapter runs this loop and plots its log.

How it is made fast (issue "GPU speed"): the prepared split is normalised once and held in memory as
tensors `(n, 3, S, S)` / `(n, 1, S, S)` — on the GPU when training there — and batches are cut by
indexing a seeded permutation. Augmentation (`Config.augment`) is either the batch path
`ulvm.data.augment_batch` (torch ops on the whole batch, on the device) or the paper's exact per-image
NumPy/SciPy path (items of `ulvm.data.SegmentationDataset`, resized to the input size if needed).
"auto" = the batch path on CUDA and the paper path on CPU, so the book's CPU runs keep the official
transformation (on CPU it costs ~7 ms per 256² image: ~3% of a batch-8 step at 256², ~25% of an epoch
of the quick profile at 64² — set `augment="batch"` to save that). The loss is summed on the device and
read once per epoch (the progress bar reads it every 20 steps); the loop itself adds no host sync per
step (`augment_batch` currently copies its random draws to the host once per batch). On CUDA
(`Config.cuda_graph`, on by default) the full-batch training step is recorded once as a CUDA graph
(`ulvm.graphs.GraphedTrainStep`, AdamW made capturable) and replayed: the same maths, one launch
instead of ~1,000; the last short batch of an epoch (the official loader keeps it, so the paper
profile does too) runs eagerly beside it.

Resume: `last.pt` holds model, optimizer, scheduler, every RNG state, epoch and history; a run folder
with a `last.pt` is resumed automatically and, on CPU, ends bit-identical to an uninterrupted run
(tests/test_train.py kills a run with SIGKILL to check this). A finished run is not overwritten
unless asked; a NaN/inf loss stops the run with `RunError` and keeps the last good checkpoint.

Not deterministic on CUDA (same seed, same GPU, same software): the backward passes of
`AdaptiveAvgPool2d` (the attention bridge's pooling) and of bilinear `F.interpolate` (every decoder
upsampling) accumulate with atomic adds in an order that varies from run to run, and have no
deterministic CUDA implementation (`torch.use_deterministic_algorithms(True)` raises on them); cuDNN
picks convolution algorithms by timing them (`cudnn.benchmark`, set on CUDA for speed), some of them
non-deterministic; the selective-scan backwards of mamba-ssm (backend "cuda") and of ours in Triton
(backend "triton": dB and dC) also reduce with atomics. Differences start in the last bits of the first
gradients and grow over epochs, so two CUDA runs with one seed end at slightly different weights and
metrics. With `cuda_graph` the learning rate is a float32 GPU tensor (1e-3 is stored as 1.00000005e-3).
What the seed still fixes on CUDA: initialisation, data order, augmentation draws. Resume on CUDA
continues the same RNG streams, but is not bit-identical either.
"""
from __future__ import annotations

import logging
import math
import time
from functools import partial
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import read_run_checkpoint, restore_rng_states, rng_states, save_checkpoint
from .config import Config
from .errors import RunError
from .graphs import GraphedTrainStep, set_capturable
from .losses import bce_dice_loss, bce_dice_per_image
from .metrics import confusion_counts, pooled_metrics
from .runs import TrainResult, differences, open_tensorboard, prepare_run_dir, run_result, write_log
from .runtime import resolve_device, seed_everything

log = logging.getLogger(__name__)

# --- pieces built from the config ---------------------------------------------------------------------

def build_model(config: Config) -> torch.nn.Module:
    """The UltraLight VM-UNet a config describes (random weights, seeded by the caller)."""
    from .model import UltraLightVMUNet

    return UltraLightVMUNet(num_classes=config.num_classes, input_channels=config.input_channels,
                            c_list=config.c_list, split_att=config.split_att, bridge=config.bridge,
                            parallel=config.parallel, backend=config.backend)


def build_optimizer(model: torch.nn.Module, config: Config, capturable: bool = False):
    """AdamW and CosineAnnealingLR exactly as the paper's config (scheduler stepped once per epoch).

    `capturable`: for a step recorded in a CUDA graph (`ulvm.graphs`): AdamW keeps its step count on the
    GPU and the learning rate is a GPU tensor, which the scheduler updates in place.
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=config.betas, eps=config.eps,
                                  weight_decay=config.weight_decay)
    optimizer.param_groups[0]["initial_lr"] = config.lr      # the scheduler's base rate: a float either way
    set_capturable(optimizer, capturable)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.t_max, eta_min=config.eta_min)
    return optimizer, scheduler


def lr_schedule(config: Config) -> list[float]:
    """The learning rate of each epoch (1..epochs), read off a real AdamW + CosineAnnealingLR."""
    optimizer, scheduler = build_optimizer(torch.nn.Linear(1, 1), config)
    rates = []
    for _ in range(config.epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()          # (no gradients: a no-op, but keeps the scheduler's call order honest)
        scheduler.step()
    return rates


def loss_weights(config: Config) -> dict[str, float]:
    return {"bce_weight": config.bce_weight, "dice_weight": config.dice_weight, "smooth": config.dice_smooth}


# --- data held in memory ------------------------------------------------------------------------------

def load_data(data):
    """A prepared dataset object from a path (or the object itself)."""
    from .data import load_prepared

    return data if hasattr(data, "indices") else load_prepared(data)


def split_tensors(prepared, split: str, config: Config, device: torch.device, limit: int | None = None,
                  *, normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """One split, normalised the paper's way and resized to `config.input_size`, as device tensors.

    Returns images `(n, 3, S, S)` float32 in [0, 255], soft masks `(n, 1, S, S)` float32 in [0, 1], ids
    (the first `limit` images of the split when given). The paper normalises each split with its own
    mean/std (`ulvm.data.paper_normalize`); `normalize=False` keeps the prepared pixel values (to show).
    """
    from .data import paper_normalize, split_statistics

    rows = prepared.indices(split, fold=config.fold)[:limit]
    if normalize:
        mean, std = split_statistics(prepared.images, rows)
        images = torch.from_numpy(paper_normalize(prepared.images[rows], mean, std))  # (n, S0, S0, 3)
    else:
        images = torch.from_numpy(prepared.images[rows]).float()                       # (n, S0, S0, 3)
    images = images.permute(0, 3, 1, 2).contiguous().to(device)                       # (n, 3, S0, S0)
    masks = torch.from_numpy(prepared.masks[rows]).to(device).float().div_(255.0).unsqueeze(1)
    images, masks = to_input_size(images, masks, config)
    return images, masks, [prepared.ids[i] for i in rows]


def to_input_size(images: torch.Tensor, masks: torch.Tensor, config: Config):
    """Resize a batch to the model's input size when the prepared data has another size (quick profile).

    Bilinear with antialiasing, images and masks alike. The filter weights are a convex combination, but
    their float sum can exceed 1 by an ulp: clamp, since BCE refuses targets above 1.
    """
    if images.shape[-2:] == (config.input_size, config.input_size):
        return images, masks
    size = (config.input_size, config.input_size)
    images = F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)
    masks = F.interpolate(masks, size=size, mode="bilinear", antialias=True, align_corners=False)
    return images.clamp_(0.0, 255.0), masks.clamp_(0.0, 1.0)


def _batches(n: int, batch_size: int, drop_last: bool) -> Iterator[slice]:
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield slice(start, min(start + batch_size, n))


# --- one step, one epoch ------------------------------------------------------------------------------

def train_step(model, optimizer, images: torch.Tensor, masks: torch.Tensor, weights: dict[str, float],
               scaler: torch.amp.GradScaler | None = None, keep_grad_tensors: bool = False) -> torch.Tensor:
    """Forward, BCE + Dice, backward, AdamW step. Returns the loss as a detached device tensor.

    `keep_grad_tensors`: zero the gradients in place instead of freeing them, as a CUDA graph needs.
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


@torch.no_grad()
def predict(model, images: torch.Tensor, batch_size: int) -> Iterator[tuple[slice, torch.Tensor]]:
    """Probabilities `(batch, 1, S, S)` for consecutive slices of `images` (model in eval mode)."""
    model.eval()
    for part in _batches(images.shape[0], batch_size, drop_last=False):
        yield part, model(images[part]).float()


def validate(model, images, masks, config: Config) -> dict[str, float]:
    """Validation loss (mean over images, as the official batch-1 loop) and pooled DSC / IoU."""
    loss_sum = torch.zeros((), device=images.device)
    counts = torch.zeros(4, dtype=torch.int64, device=images.device)
    for part, probs in predict(model, images, config.eval_batch_size):
        loss_sum += bce_dice_per_image(probs, masks[part], **loss_weights(config)).sum()
        counts += confusion_counts(probs, masks[part], config.threshold).sum(dim=0)
    metrics = pooled_metrics(counts.cpu())
    return {"val_loss": loss_sum.item() / images.shape[0], "val_dsc": metrics["dsc"], "val_iou": metrics["iou"]}


class _Batcher:
    """Yields augmented training batches `(images, masks)` for one epoch.

    Data order comes from a seeded CPU torch generator. "batch"/"none": batches are cut from the split
    held in memory and augmented on the device by `ulvm.data.augment_batch` (its own torch generator).
    "paper": items come from `ulvm.data.SegmentationDataset` (per-image normalisation and NumPy/SciPy
    augmentation, with the dataset's NumPy generator). `generators()` hands every stream to the
    checkpoint, so a resumed run continues them exactly.
    """

    def __init__(self, prepared, images: torch.Tensor, masks: torch.Tensor, config: Config,
                 device: torch.device):
        from .data import SegmentationDataset

        self.images, self.masks, self.config = images, masks, config
        self.mode = config.augment if config.augment != "auto" else ("batch" if device.type == "cuda" else "paper")
        self.shuffle = torch.Generator().manual_seed(config.seed)
        self.batch_rng = torch.Generator(device=device).manual_seed(config.seed + 1)
        self.dataset = SegmentationDataset(prepared, "train", fold=config.fold, augment=True,
                                           seed=config.seed + 1)

    def generators(self) -> dict[str, torch.Generator | np.random.Generator]:
        return {"shuffle": self.shuffle, "batch_augment": self.batch_rng, "paper_augment": self.dataset.rng}

    def steps(self) -> int:
        n, b = self.images.shape[0], self.config.batch_size
        return n // b if self.config.drop_last else math.ceil(n / b)

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from .data import augment_batch

        order = torch.randperm(self.images.shape[0], generator=self.shuffle)   # positions in the split
        for part in _batches(len(order), self.config.batch_size, self.config.drop_last):
            if self.mode == "paper":
                items = [self.dataset[int(i)] for i in order[part]]              # (3, S0, S0), (1, S0, S0)
                images = torch.stack([image for image, _ in items]).to(self.images.device)
                masks = torch.stack([mask for _, mask in items]).to(self.images.device)
                yield to_input_size(images, masks, self.config)
                continue
            index = order[part].to(self.images.device)
            images, masks = self.images[index], self.masks[index]                # (batch, 3|1, S, S)
            if self.mode == "batch":
                images, masks = augment_batch(images, masks, generator=self.batch_rng)
            yield images, masks


def _graphable(config: Config, device: torch.device) -> bool:
    """Whether the training step may be recorded as a CUDA graph; says why not when it may not."""
    from .ssm import resolve_backend

    if config.amp:
        log.warning("cuda_graph is not used with amp=True: the gradient scaler decides on the host")
        return False
    if resolve_backend(config.backend, torch.empty(0, device=device)) == "cuda":
        log.warning("cuda_graph is not used with mamba-ssm's kernels (backend 'cuda'): not tested under "
                    "graph capture here; training eagerly")
        return False
    return True


# --- finished runs (the run folder itself: ulvm.runs) ---------------------------------------------------

def finished_run(config: Config, data, out_dir: str | Path) -> TrainResult | None:
    """The result of the run in `out_dir` if it finished with exactly `config` on `data`, else None.

    For callers that reuse finished runs (the book): `finished_run(c, d, out) or fit(c, d, out)`.
    """
    last = Path(out_dir) / "last.pt"
    if not last.is_file():
        return None
    checkpoint = read_run_checkpoint(last)
    if differences(checkpoint, config, load_data(data).content_hash, last) or checkpoint["epoch"] < config.epochs:
        return None
    return run_result(Path(out_dir), checkpoint, 0.0, checkpoint["epoch"], "")


# --- fit ----------------------------------------------------------------------------------------------

def fit(config: Config, data, out_dir: str | Path, *, device: str = "auto", resume: bool = True,
        overwrite: bool = False, progress: bool = True) -> TrainResult:
    """Train `config` on a prepared dataset (path or `load_prepared` object) into the run folder `out_dir`.

    Resumes from `out_dir/last.pt` when present (same config and data required); refuses to redo a
    finished run unless `overwrite`. Returns a `TrainResult`; the model to test is `best.pt`.
    """
    from tqdm.auto import tqdm

    started = time.perf_counter()
    device = resolve_device(device)
    if device.type == "cuda":
        # cuDNN's default backward for the bridge's 7x7 dilated 2->1 conv costs ~40% of a step on an H100;
        # timing the algorithms once per shape picks one ~20x faster (measured in `ulvm bench`).
        torch.backends.cudnn.benchmark = True
    prepared = load_data(data)
    # The data first: a split it cannot train on is refused before the run folder is touched.
    train_images, train_masks, _ = split_tensors(prepared, "train", config, device, config.max_images)
    val_images, val_masks, _ = split_tensors(prepared, "val", config, device, config.max_images)
    batcher = _Batcher(prepared, train_images, train_masks, config, device)
    if batcher.steps() == 0:
        raise RunError(f"{prepared.root}: {train_images.shape[0]} training images are fewer than "
                       f"batch_size={config.batch_size} with drop_last=True: an epoch would have no step")
    run_dir = Path(out_dir)
    checkpoint = prepare_run_dir(run_dir, config, prepared.content_hash, resume, overwrite)
    run_dir.mkdir(parents=True, exist_ok=True)
    config.to_yaml(run_dir / "config.yaml")
    if config.amp and device.type != "cuda":
        log.warning("amp=True is ignored on %s: mixed precision is only used on CUDA", device)

    seed_everything(config.seed)
    model = build_model(config).to(device)
    scaler = torch.amp.GradScaler("cuda") if config.amp and device.type == "cuda" else None
    graphed = config.cuda_graph and device.type == "cuda" and _graphable(config, device)
    optimizer, scheduler = build_optimizer(model, config, capturable=graphed)
    weights = loss_weights(config)
    step_graph = None          # recorded at the first full batch (after a resume: with the loaded state)

    history: list[dict[str, float]] = []
    best = {"epoch": 0, "val_loss": math.inf}
    start_epoch = 0
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
        history, best, start_epoch = list(checkpoint["history"]), dict(checkpoint["best"]), checkpoint["epoch"]
        log.info("%s: resuming after epoch %d of %d", run_dir, start_epoch, config.epochs)

    best_path, last_path, log_path = run_dir / "best.pt", run_dir / "last.pt", run_dir / "log.csv"
    data_info = {"root": str(prepared.root), "manifest_hash": prepared.manifest_hash,
                 "content_hash": prepared.content_hash,
                 "train_images": int(train_images.shape[0]), "val_images": int(val_images.shape[0])}
    board = open_tensorboard(run_dir, start_epoch)
    try:
        for epoch in range(start_epoch + 1, config.epochs + 1):
            epoch_started = time.perf_counter()
            lr = float(optimizer.param_groups[0]["lr"])
            model.train()
            loss_sum = torch.zeros((), device=device)
            bar = tqdm(batcher.epoch(), total=batcher.steps(), disable=not progress, leave=False,
                       desc=f"epoch {epoch}/{config.epochs}", unit="step")
            for step, (images, masks) in enumerate(bar, start=1):
                if graphed and images.shape[0] == config.batch_size:
                    if step_graph is None:
                        step_graph = GraphedTrainStep(
                            partial(train_step, model, optimizer, weights=weights, keep_grad_tensors=True),
                            model, optimizer, images, masks)
                    loss_sum += step_graph(images, masks)
                else:  # CPU, amp, or the last short batch: eager (beside a graph: on the graph's .grad tensors)
                    loss_sum += train_step(model, optimizer, images, masks, weights, scaler,
                                           keep_grad_tensors=graphed)
                if progress and (step % 20 == 0 or step == batcher.steps()):  # a few host syncs per epoch
                    bar.set_postfix(loss=f"{loss_sum.item() / step:.4f}", lr=f"{lr:.2e}")
            bar.close()
            train_loss = loss_sum.item() / batcher.steps()
            row = {"epoch": epoch, "lr": lr, "train_loss": train_loss}
            row.update(validate(model, val_images, val_masks, config))
            scheduler.step()
            if not (math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"])):
                kept = f"{last_path} (epoch {epoch - 1})" if epoch > 1 else "no checkpoint yet"
                raise RunError(f"{run_dir}: epoch {epoch}: loss is not finite (train {row['train_loss']}, "
                               f"val {row['val_loss']}); stopped, last good checkpoint kept: {kept}")
            row["epoch_time_s"] = time.perf_counter() - epoch_started
            history.append(row)

            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "rng": rng_states(batcher.generators()),
                     "epoch": epoch, "config": config.to_dict(), "history": history, "data": data_info}
            if scaler is not None:
                state["scaler"] = scaler.state_dict()
            if row["val_loss"] < best["val_loss"]:
                best = {"epoch": epoch, "val_loss": row["val_loss"]}
                save_checkpoint(best_path, **state, best=best)
            # last.pt after best.pt: a kill in between leaves best.pt one epoch ahead, and the resumed run
            # redoes that epoch identically, so both files end up as in an uninterrupted run.
            save_checkpoint(last_path, **state, best=best)
            write_log(log_path, history)
            if board is not None:
                for key in ("lr", "train_loss", "val_loss", "val_dsc", "val_iou"):
                    board.add_scalar(key, row[key], epoch)
            if progress:
                tqdm.write(f"epoch {epoch:>3}/{config.epochs}  lr {lr:.2e}  train {train_loss:.4f}  "
                           f"val {row['val_loss']:.4f}  val DSC {row['val_dsc']:.4f}  "
                           f"{row['epoch_time_s']:.1f}s" + ("  *best" if best["epoch"] == epoch else ""))
    finally:
        if board is not None:
            board.close()

    return run_result(run_dir, state | {"best": best}, time.perf_counter() - started, start_epoch, str(device))
