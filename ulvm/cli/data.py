"""`ulvm download` and `ulvm prepare`: getting a dataset and preparing it (argument parsing only)."""
from __future__ import annotations

import argparse

from ..data.splits import DEFAULT_FOLD_VAL_FRACTION

PREPARE_DESCRIPTION = """\
Read a raw dataset, check every image and mask, resize them (bilinear, as the paper), split
them with a seed, and write ONE prepared format: OUT/images/<id>.png (RGB), OUT/masks/<id>.png
(8-bit grey) and OUT/manifest.json (sources and their SHA-256, split, folds, every fix-up, and
this very command). Bad input stops with one line naming the file, and nothing half-written is
left behind. Details: data/README.md."""

PREPARE_EXAMPLES = """examples:
  ulvm prepare isic2017 --src data/raw/isic2017 --out data/prepared/isic2017
  ulvm prepare ph2 --src PH2Dataset --out data/prepared/ph2 --all-test     # an external test set
  ulvm prepare folder --src my_data --out data/prepared/mine --counts 700 100 200 --min-size 256

Empty masks (no lesion) are accepted, warned about and listed in the manifest: some datasets rightly
have images without a lesion. A killed run leaves no prepared folder; the next run cleans up after it.
"""


def register(sub) -> None:
    p = sub.add_parser("download", help="download and safely extract ISIC 2017 / ISIC 2018 (resumable), "
                                        "or register a PH2 archive/folder you obtained by hand")
    p.add_argument("name", choices=("isic2017", "isic2018", "ph2"))
    p.add_argument("--root", default="data", help="data folder (default data/): downloads/ and raw/ go here")
    p.add_argument("--from", dest="source", default=None,
                   help="PH2 only: the archive (.zip/.tar) or extracted folder you downloaded")
    p.add_argument("--base-url", default=None, help="ISIC only: a mirror with the same paths as the ISIC archive")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_download)

    p = sub.add_parser(
        "prepare", help="check, resize and split (seeded) a raw dataset into a prepared dataset",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=PREPARE_DESCRIPTION,
        epilog=PREPARE_EXAMPLES)
    p.add_argument("kind", choices=("isic2017", "isic2018", "ph2", "folder"), metavar="KIND",
                   help="layout of --src: isic2017, isic2018 or ph2 (the official layouts), or folder "
                        "(images/ + masks/ with matching names)")
    where = p.add_argument_group("what to read and write")
    where.add_argument("--src", required=True, metavar="DIR",
                       help="raw dataset folder (searched recursively for the layout of KIND); only read")
    where.add_argument("--out", required=True, metavar="DIR",
                       help="new folder for the prepared dataset, e.g. data/prepared/ph2; not --src, nor "
                            "inside or around it")
    where.add_argument("--overwrite", action="store_true",
                       help="replace --out if it is a prepared dataset made by `ulvm prepare` (any other "
                            "folder is refused, never deleted)")
    where.add_argument("--size", type=int, default=256, metavar="PIXELS",
                       help="side of the square prepared images, a multiple of 32 (default 256, the paper's)")
    where.add_argument("--mask-suffix", default=None, metavar="SUFFIX",
                       help="folder only: mask name = image name + SUFFIX, e.g. _lesion for "
                            "IMD002.png / IMD002_lesion.png (default: detected)")
    split = p.add_argument_group("split (seeded: the same on every machine)")
    split.add_argument("--seed", type=int, default=42, help="seed of the split and folds (default 42)")
    counts = split.add_mutually_exclusive_group()
    counts.add_argument("--counts", type=int, nargs=3, metavar=("TRAIN", "VAL", "TEST"), default=None,
                        help="images per split, adding up to all images; 0 for no such split (default: the "
                             "paper's for ISIC, all test for PH2, 70/10/20%% for folders)")
    counts.add_argument("--all-test", action="store_true",
                        help="every image in the test split and no folds: an external test set")
    split.add_argument("--split", dest="split_method", choices=("seeded", "official"), default="seeded",
                       help="seeded (default): sorted ids permuted with --seed, then cut; official: sorted "
                            "ids cut into contiguous train/val/test parts, as the official ISIC 2017 script "
                            "slices its list ([0:1250], [1250:1400], [1400:2000])")
    split.add_argument("--folds", type=int, default=None, metavar="K",
                       help="also write K cross-validation folds, stratified by diagnosis where known "
                            "(default 5; 0: none; skipped with a note below 2K images)")
    split.add_argument("--fold-val-fraction", type=float, default=DEFAULT_FOLD_VAL_FRACTION, metavar="F",
                       help="share of each fold's non-test images held out for model selection "
                            f"(default {DEFAULT_FOLD_VAL_FRACTION})")
    checks = p.add_argument_group("input checks (each failure names the file)")
    checks.add_argument("--allow-soft-masks", action="store_true",
                        help="accept masks with values other than 0 and 255 (e.g. JPEG masks), kept as they "
                             "are; the lesion is then >= 128")
    inverted = checks.add_mutually_exclusive_group()
    inverted.add_argument("--inverted-check", dest="check_inverted", action="store_true", default=None,
                          help="refuse masks that look inverted (lesion on >= 95%% of the border and over "
                               "half the image); default for folders")
    inverted.add_argument("--no-inverted-check", dest="check_inverted", action="store_false",
                          help="accept such masks (a lesion that really fills the image); default for ISIC "
                               "and PH2")
    checks.add_argument("--min-size", type=int, default=None, metavar="PIXELS",
                        help="refuse images whose shorter side is below PIXELS (default: accept any size; "
                             "images smaller than --size are upscaled, warned about and listed in the "
                             "manifest's small_images)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes (default: one per core, at most 8)")
    p.set_defaults(func=_prepare)


def _download(args) -> int:
    from ..data import download

    kwargs = {"base_url": args.base_url} if args.base_url else {}
    raw = download(args.name, args.root, source=args.source, progress=not args.no_progress, **kwargs)
    print(f"{args.name}: raw data in {raw}")
    print(f"next: ulvm prepare {args.name} --src {raw} --out {args.root}/prepared/{args.name}")
    return 0


def _prepare(args) -> int:
    import time

    from ..data import load_prepared, prepare

    start = time.perf_counter()
    out = prepare(args.kind, args.src, args.out, size=args.size, seed=args.seed, counts=args.counts,
                  all_test=args.all_test, folds=args.folds, fold_val_fraction=args.fold_val_fraction,
                  overwrite=args.overwrite,
                  allow_soft_masks=args.allow_soft_masks, mask_suffix=args.mask_suffix,
                  check_inverted=args.check_inverted, workers=args.workers, min_size=args.min_size,
                  split_method=args.split_method)
    seconds = time.perf_counter() - start
    prepared = load_prepared(out)
    splits = ", ".join(f"{name} {len(prepared.indices(name))}" for name in prepared.split_names())
    print(f"prepared {len(prepared)} images in {seconds:.1f} s -> {out}")
    how = "official, contiguous" if args.split_method == "official" else f"seed {args.seed}"
    print(f"split ({how}): {splits}; {prepared.folds} folds; manifest sha256 {prepared.manifest_hash[:16]}")
    print(f"content sha256 {prepared.content_hash[:16]} (scheme {prepared.content_scheme}: the pixels, size, split "
          "and folds; the records of runs on this data name it)")
    return 0
