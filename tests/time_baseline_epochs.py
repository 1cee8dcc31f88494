"""Epoch time of VM-UNet and LightM-UNet on one GPU, before and after SS2D's grouped scan, in ONE process.

Not a test (pytest does not collect it): a measurement script kept beside the tests because "before" uses
`per_direction_scan_2d` of test_baselines_fast.py, the implementation the grouped call replaced (four scan
calls a block). Variants (VARIANTS): "before" = four calls, one channel per Triton program (the kernel's
former launch); "grouped" = one grouped call, one channel per program; "after" = the modules and kernel
settings as they are (one grouped call, up to `triton_scan.BLOCK_D` channels per program). LightM-UNet has
no SS2D: its "before" is "grouped". For each mode (eager, CUDA graph, torch.compile + CUDA graph), model and
variant it times one epoch of the paper protocol on synthetic tensors of the paper's
shapes: 1250 training images of 3x256x256 at batch 8 (156 full batches through `ulvm.engine.train.train_step`,
graphed as `ulvm.engine.train` graphs them, and the short batch of 2 eagerly beside the graph), then the
validation pass over 150 images (`ulvm.inference.validate`). Left out against `ulvm train`'s epoch_time_s:
the GPU augmentation of the batches and the checkpoint writes. A few steps and one validation batch run
first, untimed (cuDNN's algorithm search, graph capture, compilation).

    python tests/time_baseline_epochs.py --out times.json [--models vmunet lightmunet] [--modes eager graph]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_baselines_fast import per_direction_scan_2d  # noqa: E402

from ulvm.baselines import build  # noqa: E402
from ulvm.baselines.vmunet import SS2D  # noqa: E402
from ulvm.config import Config, RunSettings  # noqa: E402
from ulvm.engine.graphs import GraphedTrainStep  # noqa: E402
from ulvm.engine.inference import validate  # noqa: E402
from ulvm.engine.losses import loss_weights  # noqa: E402
from ulvm.engine.optim import build_optimizer  # noqa: E402
from ulvm.engine.train import _step_model, train_step  # noqa: E402
from ulvm.ssm import triton_scan  # noqa: E402
from ulvm.version import code_version  # noqa: E402

TRAIN_IMAGES, VAL_IMAGES, SIZE = 1250, 150, 256
VARIANTS = {"before": (per_direction_scan_2d, 1), "grouped": (SS2D.scan_2d, 1),
            "after": (SS2D.scan_2d, triton_scan.BLOCK_D)}          # SS2D.scan_2d, channels per Triton program


def time_epoch(name: str, mode: str, data, device) -> float:
    """Seconds for one training epoch plus validation, after an untimed warm-up."""
    config = Config(model=name)
    torch.manual_seed(config.seed)
    model = build(name).to(device)
    graphed = mode != "eager"
    step_model = _step_model(model, RunSettings(compile=mode == "compile+graph"), device)
    optimizer, _ = build_optimizer(model, config, capturable=graphed)
    step = partial(train_step, step_model, optimizer, weights=loss_weights(config))
    images, masks, val_images, val_masks = data
    batch = config.batch_size
    graph = GraphedTrainStep(step, model, optimizer, images[:batch], masks[:batch]) if graphed else None

    def epoch(steps: int | None, val_count: int):
        model.train()
        order = torch.randperm(images.shape[0], device=device)
        loss_sum = torch.zeros((), device=device)
        starts = list(range(0, images.shape[0], batch))
        for start in starts if steps is None else starts[:steps] + starts[-1:]:
            part = order[start:start + batch]
            x, y = images[part], masks[part]
            if graph is not None and x.shape[0] == batch:
                loss_sum += graph(x, y)
            else:
                loss_sum += train_step(step_model if x.shape[0] == batch else model, optimizer, x, y,
                                       loss_weights(config), keep_grad_tensors=graphed)
        validate(model, val_images[:val_count], val_masks[:val_count], config)
        return loss_sum.item()

    epoch(steps=5, val_count=batch)                          # warm-up: cuDNN search, short batch, validation
    torch.cuda.synchronize()
    started = time.perf_counter()
    loss = epoch(steps=None, val_count=val_images.shape[0])
    seconds = time.perf_counter() - started
    if not torch.isfinite(torch.tensor(loss)):
        raise RuntimeError(f"{name} {mode}: non-finite loss")
    return seconds


def profile_steps(name: str, data, device, steps: int = 3) -> str:
    """The GPU kernels of a few eager training steps, by total GPU time: where an epoch goes."""
    config = Config(model=name)
    model = build(name).to(device).train()
    optimizer, _ = build_optimizer(model, config)
    images, masks = data[0][:config.batch_size], data[1][:config.batch_size]
    for _ in range(2):
        train_step(model, optimizer, images, masks, loss_weights(config))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            train_step(model, optimizer, images, masks, loss_weights(config))
        torch.cuda.synchronize()
    return prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models", nargs="+", default=["vmunet", "lightmunet"])
    parser.add_argument("--modes", nargs="+", default=["eager", "graph"], choices=["eager", "graph", "compile+graph"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--profile", action="store_true", help="also print the top GPU kernels of eager steps")
    parser.add_argument("--budget-s", type=float, default=1e9, help="skip what starts after this many seconds")
    args = parser.parse_args()
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True                    # as ulvm.train sets it on CUDA
    g = torch.Generator(device=device).manual_seed(0)
    data = (torch.rand(TRAIN_IMAGES, 3, SIZE, SIZE, device=device, generator=g),
            (torch.rand(TRAIN_IMAGES, 1, SIZE, SIZE, device=device, generator=g) > 0.7).float(),
            torch.rand(VAL_IMAGES, 3, SIZE, SIZE, device=device, generator=g),
            (torch.rand(VAL_IMAGES, 1, SIZE, SIZE, device=device, generator=g) > 0.7).float())
    script = Path(__file__).read_bytes()
    record = {"what": __doc__.split("\n\n")[0], "code_version": code_version(),
              "script_sha256": hashlib.sha256(script).hexdigest(),
              "command": "python tests/time_baseline_epochs.py " + " ".join(sys.argv[1:]),
              "machine": {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__},
              "protocol": {"train_images": TRAIN_IMAGES, "val_images": VAL_IMAGES, "size": SIZE, "batch": 8,
                           "excluded": "batch augmentation, checkpoint writes"},
              "variants": {"before": "SS2D as four per-direction scan calls, 1 channel per Triton program",
                           "grouped": "SS2D as one grouped scan call, 1 channel per Triton program",
                           "after": f"one grouped call, up to {triton_scan.BLOCK_D} channels per Triton program"},
              "epoch_s": {}}
    began = time.perf_counter()
    for mode in args.modes:
        for name in args.models:
            # LightM-UNet has no SS2D: "before" and "grouped" are the same code, timed once (as "before")
            for variant in [v for v in args.variants if name == "vmunet" or v != "grouped"]:
                key = f"{name}/{variant}/{mode}"
                if time.perf_counter() - began > args.budget_s:
                    record["epoch_s"][key] = "skipped: out of time budget"
                    continue
                SS2D.scan_2d, triton_scan.BLOCK_D = VARIANTS[variant]
                try:
                    record["epoch_s"][key] = round(time_epoch(name, mode, data, device), 3)
                except Exception as error:  # noqa: BLE001 - one failed path is a result, the others still run
                    record["epoch_s"][key] = f"failed: {type(error).__name__}: {error}"[:500]
                print(key, record["epoch_s"][key], flush=True)
                args.out.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
                torch.cuda.empty_cache()
    for name in args.models if args.profile else []:
        print(f"{name}: 3 eager training steps, GPU kernels by total time\n{profile_steps(name, data, device)}")


if __name__ == "__main__":
    main()
