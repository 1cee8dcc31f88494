"""The training protocol as one typed object: the defaults ARE the paper's protocol.

UltraLight VM-UNet (Wu et al., arXiv 2403.20035, §4.1 "Implementation details") trains with input
256×256×3, batch 8, 250 epochs, AdamW (lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 1e-2) and
CosineAnnealingLR with T_max 50 and eta_min 1e-5 stepped once per epoch — so the learning rate goes down
and back up with a 100-epoch period over the 250 epochs (`ulvm.engine.optim.lr_schedule` lists it; the training chapter
plots it). The loss is
BCE + Dice (smooth 1, weights 1 and 1), the model kept is the one with the lowest validation loss, and it
is then tested on the test split at threshold 0.5. In the official code these values are spread over a
`setting_config` class; here they are fields of `Config`, each stated once.

Named profiles (`PROFILES`): `paper` (the protocol above) and `quick` (a few epochs on a small subset of
the images, sized for CPU: the book's default run and the tests). `Config.profile(name, **overrides)`
builds one; `to_yaml`/`from_yaml` write and read it (the run folder keeps the exact config it ran with);
the CLI turns `--flag value` into overrides. The book explains the protocol in the training chapter.

`Config` holds the protocol only: what decides the result. How a run executes — device, selective-scan
backend, CUDA graphs, evaluation batch size — is a `RunSettings`: it can change between a run and its
resume, and two runs that differ only in it are the same run.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import UlvmError
from .io import atomic_write_text

AUGMENT_MODES = ("auto", "paper", "batch", "none")
SPLIT_ATT_MODES = ("fc", "conv")


def _numbers(value) -> list[float]:
    """The floats in a config value (a number, or a tuple of them such as betas)."""
    values = value if isinstance(value, (tuple, list)) else [value]
    return [float(v) for v in values if isinstance(v, float)]


@dataclass(frozen=True)
class Config:
    """Everything that decides the result of a training run (paths and devices are not part of it)."""

    # Which named profile this started from (a label, but part of the config: a run resumes only
    # under the same name).
    profile_name: str = "paper"

    # --- model (UltraLightVMUNet's arguments) -----------------------------------------------------
    model: str = "ultralight"        # or a baseline of the comparison chapter (ulvm.registry.known();
                                     # checked by ulvm.registry.build_model)
    input_size: int = 256            # H = W; prepared data of another size is resized once on load
    input_channels: int = 3
    num_classes: int = 1
    c_list: tuple[int, ...] = (8, 16, 24, 32, 48, 64)
    width: float = 1.0               # channel multiplier of the six stages: c_list × width, each rounded to a
                                     # multiple of 4 (`ulvm.model.scale_channels`; 1.0 = the paper's model)
    split_att: str = "fc"
    parallel: int = 4                # PVM layer: channels split into this many parallel Mamba chunks
    bridge: bool = True              # SC_Att_Bridge (spatial + channel attention skip connections)

    # --- optimisation -----------------------------------------------------------------------------
    epochs: int = 250
    batch_size: int = 8
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 1e-2
    t_max: int = 50                  # CosineAnnealingLR period (half-cycle), in epochs
    eta_min: float = 1e-5
    amp: bool = False                # mixed precision on CUDA (the paper trains in fp32)

    # --- loss: bce_weight * BCE + dice_weight * (1 - mean over the batch of per-image Dice) ---------
    bce_weight: float = 1.0
    dice_weight: float = 1.0
    dice_smooth: float = 1.0

    # --- data -------------------------------------------------------------------------------------
    # Training augmentation: "paper" = the official per-image numpy/scipy transform
    # (ulvm.data.SegmentationDataset), "batch" = the same transformation family on a whole batch in torch
    # (ulvm.data.augment_batch, runs on the GPU), "none", or "auto" = batch on CUDA, paper on CPU.
    augment: str = "auto"
    max_images: int | None = None    # use at most this many train and val images (None = all)
    fold: int | None = None          # cross-validation fold of the prepared split (None = plain split)
    drop_last: bool = False          # drop the last short batch (else it runs eagerly beside the graph)

    # --- run --------------------------------------------------------------------------------------
    seed: int = 42
    threshold: float = 0.5           # prediction = prob >= threshold (the soft ground truth is always cut
                                     # at 0.5, ulvm.metrics.GT_THRESHOLD, as in the official test loop)

    def __post_init__(self) -> None:
        problems = [problem for f in fields(self) if (problem := self._coerce(f.name, f.type))]
        if problems:  # wrong types: the range checks below would only add confusion
            raise UlvmError("invalid config: " + "; ".join(problems))
        # nan passes every comparison below unnoticed (nan <= 0 is False): refuse it, and infinities, first
        numbers = [(f.name, v) for f in fields(self) for v in _numbers(getattr(self, f.name))]
        problems = [f"{name}={value} must be a finite number" for name, value in numbers if not math.isfinite(value)]
        if problems:
            raise UlvmError("invalid config: " + "; ".join(problems))
        if self.input_size <= 0 or self.input_size % 32:
            problems.append(f"input_size={self.input_size} must be a positive multiple of 32 "
                            "(the model halves the resolution five times)")
        if len(self.c_list) != 6:
            problems.append(f"c_list={self.c_list} must have 6 channel widths")
        if not 0.0 < self.width <= 16.0:
            problems.append(f"width={self.width} must be > 0 and <= 16 (a channel multiplier; 1 = the paper's)")
        if self.parallel not in (1, 2, 4):
            problems.append(f"parallel={self.parallel} must be 1, 2 or 4")
        if self.split_att not in SPLIT_ATT_MODES:
            problems.append(f"split_att={self.split_att!r} must be one of {SPLIT_ATT_MODES}")
        if self.augment not in AUGMENT_MODES:
            problems.append(f"augment={self.augment!r} must be one of {AUGMENT_MODES}")
        for name in ("epochs", "batch_size", "t_max", "num_classes", "input_channels"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} must be >= 1")
        if self.max_images is not None and self.max_images < 1:
            problems.append(f"max_images={self.max_images} must be >= 1 or None")
        if not 0.0 < self.threshold < 1.0:
            problems.append(f"threshold={self.threshold} must lie strictly between 0 and 1")
        if len(self.betas) != 2:
            problems.append(f"betas={self.betas} must be two numbers")
        if self.lr <= 0 or self.eta_min < 0:
            problems.append(f"lr={self.lr} must be > 0 and eta_min={self.eta_min} >= 0")
        if self.eps <= 0 or self.weight_decay < 0 or not all(0 <= beta < 1 for beta in self.betas):
            problems.append(f"eps={self.eps} must be > 0, weight_decay={self.weight_decay} >= 0 and "
                            f"betas={self.betas} in [0, 1)")
        if min(self.bce_weight, self.dice_weight, self.dice_smooth) < 0:
            problems.append("bce_weight, dice_weight and dice_smooth must be >= 0")
        if problems:
            raise UlvmError("invalid config: " + "; ".join(problems))

    def _coerce(self, name: str, annotation: str) -> str | None:
        """Check one field against its annotation; ints become floats and lists tuples where declared."""
        value = getattr(self, name)
        optional = annotation.endswith("| None")
        kind = annotation.removesuffix("| None").strip()
        if value is None and optional:
            return None
        is_int = isinstance(value, int) and not isinstance(value, bool)
        if kind == "float" and (is_int or isinstance(value, float)):
            object.__setattr__(self, name, float(value))
        elif kind.startswith("tuple") and isinstance(value, (list, tuple)):
            item = float if "float" in kind else int
            allowed = (int, float) if item is float else int   # an int field never truncates 8.5 to 8
            if not all(isinstance(v, allowed) and not isinstance(v, bool) for v in value):
                return f"{name}={value!r} must be a list of {'numbers' if item is float else 'integers'}"
            object.__setattr__(self, name, tuple(item(v) for v in value))
        elif not {"int": is_int, "bool": isinstance(value, bool), "str": isinstance(value, str)}.get(kind):
            return f"{name}={value!r} must be of type {annotation}"
        return None

    # --- construction -----------------------------------------------------------------------------
    @classmethod
    def profile(cls, name: str = "paper", **overrides: Any) -> "Config":
        """The named profile, with some fields replaced: `Config.profile("quick", epochs=3)`."""
        if name not in PROFILES:
            raise UlvmError(f"unknown profile {name!r}; known profiles: {', '.join(PROFILES)}")
        return PROFILES[name].replace(**overrides)

    def replace(self, **overrides: Any) -> "Config":
        """A copy with some fields changed; unknown field names are an error (typos must not pass)."""
        unknown = sorted(set(overrides) - {f.name for f in fields(self)})
        if unknown:
            raise UlvmError(f"unknown config field(s): {', '.join(unknown)}; "
                            f"known: {', '.join(f.name for f in fields(self))}")
        return dataclasses.replace(self, **overrides)

    # --- serialisation ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain types only (tuples become lists): fits YAML, JSON and `torch.load(weights_only=True)`."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in fields(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "Config":
        """Read a config written by `to_dict`; the run settings that older versions kept in the config
        (backend, cuda_graph, eval_batch_size) are dropped: they never decided a result."""
        if not isinstance(values, dict):
            raise UlvmError(f"{source}: expected a mapping of config fields, got {type(values).__name__}")
        values = {key: value for key, value in values.items() if key not in FORMER_RUN_SETTINGS}
        try:
            return cls().replace(**values)
        except UlvmError as error:
            raise UlvmError(f"{source}: {error}") from None

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The config as YAML text; also written (atomically) to `path` when given."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)
        if path is not None:
            atomic_write_text(path, text)
        return text

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Config":
        path = Path(path)
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise UlvmError(f"{path}: cannot read config ({error.strerror or error})") from None
        except yaml.YAMLError as error:
            raise UlvmError(f"{path}: not valid YAML ({error})") from None
        return cls.from_dict(values or {}, source=str(path))


FORMER_RUN_SETTINGS = ("backend", "cuda_graph", "eval_batch_size")


@dataclass(frozen=True)
class RunSettings:
    """How a run executes; none of it changes what is computed (beyond floating-point summation order)."""

    device: str = "auto"             # auto | cpu | cuda[:N]
    backend: str = "auto"            # selective-scan backend (ulvm.ssm.backends): auto | reference | parallel | ...
    cuda_graph: bool = True          # on CUDA, replay full-batch training steps as a CUDA graph (ulvm.engine.graphs;
                                     # same maths, one launch a step; not with amp or with a backend
                                     # that is not graph-safe)
    eval_batch_size: int = 8         # validation/test batch
    compile: bool = False            # on CUDA, the training step's model through torch.compile before its graph
                                     # is recorded (Inductor fuses the norms, activations and copies around the
                                     # scan: fewer, fused kernels, ulvm.report.bench); TF32 stays off in cuDNN
    threads: int | None = None       # CPU threads for torch (None: torch's choice); set by the command that runs
    deterministic: bool = False      # the same seed on the same GPU model and software gives bit-identical weights:
                                     # deterministic kernels only (ulvm.runtime.use_deterministic), slower

    def __post_init__(self) -> None:       # the backend name is checked by ulvm.ssm.backends, where they live
        if self.eval_batch_size < 1:
            raise UlvmError(f"eval_batch_size={self.eval_batch_size} must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise UlvmError(f"threads={self.threads} must be >= 1")


PAPER = Config()

# Small enough that the whole book (several quick models for the ablations included) runs in minutes on
# two CPU cores, large enough that the loss visibly falls and the DSC is far from chance:
# 64x64 inputs (the prepared 256x256 images are resized once on load), 6 epochs, at most 64 train and
# val images, one cosine half-period.
QUICK = PAPER.replace(profile_name="quick", input_size=64, epochs=6, max_images=64, t_max=6)

PROFILES: dict[str, Config] = {"paper": PAPER, "quick": QUICK}


def parse_overrides(items) -> dict[str, Any]:
    """`--set FIELD=VALUE` items (the CLI's, a grid job's) -> {field: value}, each VALUE read as YAML."""
    overrides = {}
    for item in items:
        field, sep, value = item.partition("=")
        if not sep:
            raise UlvmError(f"--set {item!r}: expected FIELD=VALUE")
        overrides[field.strip()] = yaml.safe_load(value)
    return overrides
