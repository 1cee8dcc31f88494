"""Seeded, machine-independent splits: the paper's train/val/test split and k-fold cross-validation.

The paper's scripts split `glob.glob(...)` output in the order the file system returns it, so the split
depends on the machine (a third-party replication found that sorting the list instead moves DSC by
~4 points). Here the ids are SORTED first, then PERMUTED with a seeded NumPy generator (PCG64, stable
across platforms and NumPy versions), then cut: the same ids and seed give the same split everywhere.

Paper counts (§4.1): ISIC 2017 1250/150/600 of 2000, ISIC 2018 1815/259/520 of 2594, PH2 all 200 as an
external test set. For our own experiments every prepared dataset also carries k folds (stratified by
diagnosis where known), each with a validation part carved from its training part for model selection.
The book discusses this in `notebooks/04_data.ipynb`.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from ..errors import DataError

SPLITS = ("train", "val", "test")
PAPER_COUNTS = {
    "isic2017": {"train": 1250, "val": 150, "test": 600},
    "isic2018": {"train": 1815, "val": 259, "test": 520},
    "ph2": {"test": 200},
}
# Custom data without explicit counts: 70% / 10% / 20%.
DEFAULT_FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}


def normalize_counts(counts, n: int, where: str) -> dict[str, int]:
    """Counts as a {split: count} dict, from a dict, a (train, val, test) sequence or None (70/10/20).

    In the sequence a 0 means "no such split" (how the command line says "all 200 PH2 images as test":
    `--counts 0 0 200`); a split named in a dict must be non-empty. The counts must add up to the n
    images found.
    """
    if counts is None:
        val, test = round(n * DEFAULT_FRACTIONS["val"]), round(n * DEFAULT_FRACTIONS["test"])
        counts = {"train": n - val - test, "val": val, "test": test}
    elif not isinstance(counts, dict):
        if len(counts) != 3:
            raise DataError(f"{where}: counts must be (train, val, test), got {tuple(counts)}")
        counts = {name: count for name, count in zip(SPLITS, counts) if count != 0}
    unknown = set(counts) - set(SPLITS)
    if unknown:
        raise DataError(f"{where}: unknown split names {sorted(unknown)} (train, val, test)")
    counts = {name: int(counts[name]) for name in SPLITS if name in counts}
    for name, count in counts.items():
        if count <= 0:
            raise DataError(f"{where}: empty split {name!r} (count {count}); every split needs images")
    if sum(counts.values()) != n:
        raise DataError(f"{where}: split counts {counts} add up to {sum(counts.values())}, but {n} "
                        f"images were found (pass counts that add up to {n})")
    return counts


SPLIT_METHODS = ("seeded", "official")


def official_split(ids: Sequence[str], counts: dict[str, int]) -> dict[str, list[str]]:
    """Sort, then cut into CONTIGUOUS parts of the given sizes, in train, val, test order (no seed).

    Twin of the official `dataprepare/Prepare_ISIC2017.py`, which slices its image list [0:1250],
    [1250:1400], [1400:2000] with no shuffling; its list comes from `glob`, ours is sorted so that the
    split is the same on every machine. ISIC ids are roughly in acquisition order, so this test set is
    the last 600 ids, not a random sample.
    """
    ordered = sorted(ids)
    parts, start = {}, 0
    for name in SPLITS:
        if name in counts:
            parts[name] = ordered[start:start + counts[name]]
            start += counts[name]
    return parts


def seeded_split(ids: Sequence[str], counts: dict[str, int], seed: int) -> dict[str, list[str]]:
    """Sort, permute with `seed`, cut into consecutive parts of the given sizes (each part sorted)."""
    ordered = sorted(ids)
    order = np.random.default_rng(seed).permutation(len(ordered))
    parts, start = {}, 0
    for name in SPLITS:
        if name in counts:
            parts[name] = sorted(ordered[i] for i in order[start:start + counts[name]])
            start += counts[name]
    return parts


def _by_label(ids: Sequence[str], label_of: dict) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for key in sorted(ids):
        groups[str(label_of[key])].append(key)
    return dict(sorted(groups.items()))


def stratified_sample(ids: Sequence[str], label_of: dict, n: int, rng: np.random.Generator) -> list[str]:
    """`n` ids drawn without replacement, each label in proportion to its share (largest remainder)."""
    groups = _by_label(ids, label_of)
    exact = {label: n * len(members) / len(ids) for label, members in groups.items()}
    quota = {label: int(share) for label, share in exact.items()}
    for label in sorted(exact, key=lambda lb: (-(exact[lb] - quota[lb]), lb))[: n - sum(quota.values())]:
        quota[label] += 1
    chosen = []
    for label, members in groups.items():
        chosen += [members[i] for i in rng.permutation(len(members))[: quota[label]]]
    return sorted(chosen)


DEFAULT_FOLD_VAL_FRACTION = 0.1   # of each fold's non-test images, held out to select the model


def kfold_splits(ids: Sequence[str], labels: Sequence[str | None] | None, folds: int, seed: int,
                 val_fraction: float = DEFAULT_FOLD_VAL_FRACTION) -> list[dict[str, list[str]]]:
    """k folds, stratified by `labels` (None: unstratified). Fold k tests on part k; its validation part
    (`val_fraction` of the rest, stratified too) is carved from the rest, the remainder trains. Each
    class is shuffled and dealt to the folds in turn, continuing from class to class, so fold sizes differ
    by at most one image and each class is spread evenly. Each list is sorted."""
    if folds < 2:
        raise DataError(f"k-fold cross-validation needs at least 2 folds, got {folds}")
    label_of = dict(zip(ids, labels if labels is not None else [None] * len(ids)))
    rng = np.random.default_rng([seed, folds])
    fold_of, dealt = {}, 0
    for members in _by_label(ids, label_of).values():
        for index in rng.permutation(len(members)):
            fold_of[members[index]] = dealt % folds
            dealt += 1
    result = []
    for k in range(folds):
        test = sorted(key for key in ids if fold_of[key] == k)
        rest = sorted(key for key in ids if fold_of[key] != k)
        val = stratified_sample(rest, label_of, max(1, round(len(rest) * val_fraction)), rng)
        in_val = set(val)
        fold = {"train": [key for key in rest if key not in in_val], "val": val, "test": test}
        for name, part in fold.items():
            if not part:
                raise DataError(f"fold {k} has an empty {name} split ({len(ids)} images are too few "
                                f"for {folds} folds)")
        result.append(fold)
    return result
