"""`ulvm download` and `ulvm prepare`: getting a dataset and preparing it (argument parsing only)."""
from __future__ import annotations

from ..data.splits import DEFAULT_FOLD_VAL_FRACTION


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

    p = sub.add_parser("prepare", help="resize to 256x256, check, split (seeded) and write a prepared dataset")
    p.add_argument("kind", choices=("isic2017", "isic2018", "ph2", "folder"))
    p.add_argument("--src", required=True, help="raw dataset folder (official layout, or images/ + masks/)")
    p.add_argument("--out", required=True, help="prepared dataset folder, e.g. data/prepared/ph2")
    p.add_argument("--size", type=int, default=256, help="side of the prepared images (default 256)")
    p.add_argument("--seed", type=int, default=42, help="split seed (default 42)")
    split = p.add_mutually_exclusive_group()
    split.add_argument("--counts", type=int, nargs=3, metavar=("TRAIN", "VAL", "TEST"), default=None,
                       help="split sizes, 0 for no such split (default: the paper's for ISIC, all-test for "
                            "PH2, 70/10/20%% for folders)")
    split.add_argument("--all-test", action="store_true",
                       help="every image in the test split and no folds (an external test set)")
    p.add_argument("--folds", type=int, default=None, help="k of the extra k-fold CV splits (0: none; default 5)")
    p.add_argument("--fold-val-fraction", type=float, default=DEFAULT_FOLD_VAL_FRACTION,
                   help="share of each fold's non-test images held out for model selection "
                        f"(default {DEFAULT_FOLD_VAL_FRACTION})")
    p.add_argument("--overwrite", action="store_true", help="replace an existing prepared dataset")
    p.add_argument("--allow-soft-masks", action="store_true", help="accept masks with values other than 0/255")
    p.add_argument("--mask-suffix", default=None,
                   help="folder only: mask stem = image stem + this (default: detected, e.g. _lesion)")
    inverted = p.add_mutually_exclusive_group()
    inverted.add_argument("--inverted-check", dest="check_inverted", action="store_true", default=None,
                          help="reject masks that look inverted (default for folders)")
    inverted.add_argument("--no-inverted-check", dest="check_inverted", action="store_false",
                          help="accept masks whose lesion covers the image border")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores, at most 8)")
    p.add_argument("--min-size", type=int, default=None, metavar="PIXELS",
                   help="refuse images whose shorter side is below PIXELS (default: accept any size; images "
                        "smaller than --size are upscaled and listed in the manifest's small_images)")
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
                  check_inverted=args.check_inverted, workers=args.workers, min_size=args.min_size)
    seconds = time.perf_counter() - start
    prepared = load_prepared(out)
    splits = ", ".join(f"{name} {len(prepared.indices(name))}" for name in prepared.split_names())
    print(f"prepared {len(prepared)} images in {seconds:.1f} s -> {out}")
    print(f"split (seed {args.seed}): {splits}; {prepared.folds} folds; manifest sha256 {prepared.manifest_hash[:16]}")
    return 0
