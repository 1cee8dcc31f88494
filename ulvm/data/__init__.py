"""Data: from raw files (ISIC 2017/2018, PH2, your own folder, or the synthetic default) to the tensors
the network sees, exactly as the paper prepares and loads them. Explained in `notebooks/04_data.ipynb`.

raw files -> `layouts` (one adapter per layout) -> `checks` -> `prepare` (resize, seeded split, manifest)
-> prepared folder -> `load_prepared` -> `SegmentationDataset` (paper normalisation + augmentation, one
image at a time) or, for a whole split held on the GPU, `paper_normalize` + `augment_batch` per batch
(the training loop, `ulvm.engine.train`, does this).
"""
from importlib import import_module

from .download import PH2_INSTRUCTIONS, check_archive, download, fetch
from .layouts import parse_ph2_diagnoses, raw_samples
from .prepare import KINDS, prepare
from .prepared import PreparedDataset, load_prepared
from .splits import PAPER_COUNTS, kfold_splits, seeded_split
from .synthetic import default_dataset

# The torch-based pieces load on first use, so `ulvm --help` and `ulvm prepare` do not load torch.
_TORCH_API = {
    "AugmentParams": "augment", "augment_batch": "augment", "draw_params": "augment",
    "paper_augment": "augment", "transform_batch": "augment", "transform_numpy": "augment",
    "SegmentationDataset": "dataset", "paper_normalize": "dataset", "seeded_generator": "dataset",
    "split_statistics": "dataset", "worker_init_fn": "dataset",
}
__all__ = [
    *_TORCH_API, "PH2_INSTRUCTIONS", "check_archive", "download", "fetch", "parse_ph2_diagnoses", "raw_samples",
    "KINDS", "PreparedDataset", "load_prepared", "prepare", "PAPER_COUNTS", "kfold_splits", "seeded_split",
    "default_dataset",
]


def __getattr__(name: str):
    if name in _TORCH_API:
        return getattr(import_module(f"{__name__}.{_TORCH_API[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
