"""Seeded, machine-independent splits with the paper's counts, and stratified k folds."""
import random
from collections import Counter

import pytest

from ulvm.data.splits import PAPER_COUNTS, kfold_splits, normalize_counts, official_split, seeded_split
from ulvm.errors import DataError


def isic_ids(n):
    return [f"ISIC_{i:07d}" for i in range(n)]


@pytest.mark.parametrize("kind, n", [("isic2017", 2000), ("isic2018", 2594)])
def test_paper_counts_partition_the_training_set(kind, n):
    ids = isic_ids(n)
    parts = seeded_split(ids, normalize_counts(PAPER_COUNTS[kind], n, kind), seed=42)
    assert {name: len(part) for name, part in parts.items()} == PAPER_COUNTS[kind]
    assert sorted(sum(parts.values(), [])) == ids  # every image exactly once


def test_split_depends_on_the_ids_not_on_their_order():
    ids = isic_ids(300)
    shuffled = ids[:]
    random.Random(1).shuffle(shuffled)
    counts = {"train": 200, "val": 30, "test": 70}
    assert seeded_split(ids, counts, 42) == seeded_split(shuffled, counts, 42)
    assert seeded_split(ids, counts, 42) != seeded_split(ids, counts, 43)
    # not a plain cut of the sorted list: the permutation mixes the ids
    assert seeded_split(ids, counts, 42)["train"] != ids[:200]


def test_split_is_pinned():
    # The split must not move with NumPy versions or machines (PCG64 streams are stable): a regression pin.
    parts = seeded_split(isic_ids(10), {"train": 6, "val": 2, "test": 2}, 42)
    assert parts["val"] == ["ISIC_0000004", "ISIC_0000009"]
    assert parts["test"] == ["ISIC_0000001", "ISIC_0000008"]


def test_counts_errors_and_defaults():
    assert normalize_counts(None, 200, "x") == {"train": 140, "val": 20, "test": 40}
    assert normalize_counts((5, 2, 3), 10, "x") == {"train": 5, "val": 2, "test": 3}
    with pytest.raises(DataError, match="add up to 9, but 10"):
        normalize_counts((5, 1, 3), 10, "somewhere")
    assert normalize_counts((7, 0, 3), 10, "x") == {"train": 7, "test": 3}     # 0: no such split
    assert normalize_counts((0, 0, 10), 10, "x") == {"test": 10}               # PH2 as a test set
    with pytest.raises(DataError, match="empty split 'val'"):
        normalize_counts({"train": 7, "val": 0, "test": 3}, 10, "somewhere")
    with pytest.raises(DataError, match="empty split 'val'"):
        normalize_counts((7, -1, 4), 10, "somewhere")
    with pytest.raises(DataError, match="unknown split"):
        normalize_counts({"training": 10}, 10, "somewhere")


def test_kfold_partitions_stratifies_and_carves_validation():
    ids = [f"IMD{i:03d}" for i in range(200)]
    labels = ["common"] * 80 + ["atypical"] * 80 + ["melanoma"] * 40
    label_of = dict(zip(ids, labels))
    folds = kfold_splits(ids, labels, 5, seed=42)
    tests = [set(f["test"]) for f in folds]
    assert sorted(sum((f["test"] for f in folds), [])) == ids  # test parts partition the set
    for fold in folds:
        assert set(fold["train"]) | set(fold["val"]) | set(fold["test"]) == set(ids)
        assert not (set(fold["train"]) & set(fold["val"])) and not (set(fold["val"]) & set(fold["test"]))
        assert Counter(label_of[i] for i in fold["test"]) == {"common": 16, "atypical": 16, "melanoma": 8}
        val = Counter(label_of[i] for i in fold["val"])
        assert sum(val.values()) == 16  # 10% of the 160 non-test images
        for label, share in (("common", 0.4), ("atypical", 0.4), ("melanoma", 0.2)):
            assert abs(val[label] - 16 * share) < 1  # proportional, up to rounding
    assert len(set(map(frozenset, tests))) == 5
    assert kfold_splits(ids, labels, 5, seed=42) == folds
    assert kfold_splits(ids, labels, 5, seed=7) != folds


def test_kfold_validation_is_stratified():
    ids = [f"x{i:03d}" for i in range(100)]
    labels = ["a"] * 50 + ["b"] * 50
    for fold in kfold_splits(ids, labels, 5, seed=0, val_fraction=0.25):
        counts = Counter(labels[ids.index(i)] for i in fold["val"])
        assert counts == {"a": 10, "b": 10}


def test_kfold_too_few_images():
    with pytest.raises(DataError, match="empty"):
        kfold_splits(["a", "b"], None, 2, seed=0)  # each fold: 1 test, 1 val, 0 train


def test_official_split_is_contiguous_slices_of_the_sorted_ids():
    ids = isic_ids(2000)
    shuffled = ids[:]
    random.Random(3).shuffle(shuffled)                        # a glob listing in any order
    parts = official_split(shuffled, normalize_counts(PAPER_COUNTS["isic2017"], 2000, "isic2017"))
    # the official Prepare_ISIC2017.py slices [0:1250], [1250:1400], [1400:2000]
    assert parts == {"train": ids[0:1250], "val": ids[1250:1400], "test": ids[1400:2000]}
    assert parts != seeded_split(ids, PAPER_COUNTS["isic2017"], 42)
