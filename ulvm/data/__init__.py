"""Data: from raw files (ISIC 2017/2018, PH2, your own folder, or the synthetic default) to the tensors
the network sees, exactly as the paper prepares and loads them. Explained in `notebooks/04_data.ipynb`.

raw files -> `layouts` (one adapter per layout) -> `checks` -> `prepare` (resize, seeded split, manifest)
-> prepared folder -> `load_prepared` -> `SegmentationDataset` (paper normalisation + augmentation, one
image at a time) or, for a whole split held on the GPU, `paper_normalize` + `augment_batch` per batch
(the training loop, `ulvm.train`, does this).
"""
from .augment import AugmentParams, augment_batch, draw_params, paper_augment, transform_batch, transform_numpy
from .dataset import SegmentationDataset, paper_normalize, seeded_generator, split_statistics, worker_init_fn
from .download import PH2_INSTRUCTIONS, check_archive, download, fetch
from .layouts import parse_ph2_diagnoses, raw_samples
from .prepare import KINDS, PreparedDataset, load_prepared, prepare
from .splits import PAPER_COUNTS, kfold_splits, seeded_split
from .synthetic import default_dataset

__all__ = [
    "AugmentParams", "augment_batch", "draw_params", "paper_augment", "transform_batch", "transform_numpy",
    "SegmentationDataset", "paper_normalize", "seeded_generator", "split_statistics", "worker_init_fn",
    "PH2_INSTRUCTIONS", "check_archive", "download", "fetch",
    "parse_ph2_diagnoses", "raw_samples",
    "KINDS", "PreparedDataset", "load_prepared", "prepare",
    "PAPER_COUNTS", "kfold_splits", "seeded_split",
    "default_dataset",
]
