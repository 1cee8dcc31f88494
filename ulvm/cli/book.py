"""`ulvm` sub-commands of the book group (argument parsing only): `ulvm reproduce`."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub) -> None:
    """Add this group's sub-commands to the `ulvm` parser."""
    from ..report.reproduce import EXECUTED_DIR, NOTEBOOK_PARAMETERS
    from ..report.reproduce_paper import SCOPES

    parser = sub.add_parser(
        "reproduce", help="execute the book's notebooks in order (quick); or train the paper's runs, then them (paper)",
        description="--profile quick (default): execute notebooks/NN_*.ipynb in order with papermill, injecting the "
                    "profile's parameters; executed copies go to book/executed/ for `jupyter-book build .`. "
                    "--profile paper (a CUDA GPU): prepare the data that is missing, train and test the book's grids "
                    "through the sweep engine (as `ulvm sweep`; resumable), write the records into --results, then "
                    "execute the notebooks against them and build the book; every phase is timed into "
                    "RESULTS/reproduce/reproduce_<gpu>.json.")
    parser.add_argument("--profile", choices=sorted(NOTEBOOK_PARAMETERS), default="quick",
                        help="quick: CPU, synthetic data, minutes; paper: the full protocol on real data, on a GPU")
    parser.add_argument("--only", type=lambda text: [key.strip() for key in text.split(",") if key.strip()],
                        help="quick: comma-separated notebook numbers or names, e.g. 03,08")
    parser.add_argument("--resume", action="store_true",
                        help="quick: skip notebooks whose executed copy succeeded and is up to date")
    parser.add_argument("--data", help="quick: prepared dataset folder for training/evaluation "
                                       "(default: the profile's; 'synthetic' = the embedded default)")
    parser.add_argument("--ph2", help="quick: PH2 folder (prepared, or the flat images/ + masks/ set) for "
                                      "external validation, e.g. ../shared/realdata/PH2")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="quick: override the profile's device")
    parser.add_argument("--out", default=EXECUTED_DIR, help=f"quick: executed notebooks (default {EXECUTED_DIR})")

    paper = parser.add_argument_group("--profile paper")
    paper.add_argument("--results", default="runs/paper/results",
                       help="this build's records, in the layout of book/results (default runs/paper/results; "
                            "book/results itself is refused)")
    paper.add_argument("--runs", default="runs/paper", help="run folders and logs, RUNS/<grid>/ (default runs/paper)")
    paper.add_argument("--prepared", default="data/prepared",
                       help="prepared datasets PREPARED/isic2017 and PREPARED/ph2, used when present, else prepared "
                            "from --isic2017-raw / --ph2-raw (default data/prepared)")
    paper.add_argument("--isic2017-raw", metavar="RAW", help="the ISIC 2017 Task 1 training set with its official "
                       "folder names (ISIC-2017_Training_Data, ISIC-2017_Training_Part1_GroundTruth), prepared "
                       "1250/150/600 with seed 42 when PREPARED/isic2017 is missing")
    paper.add_argument("--ph2-raw", metavar="RAW", help="the PH2 images (the official layout, or images/ + masks/, "
                       "e.g. ../shared/realdata/PH2), prepared all-test with 5 folds when PREPARED/ph2 is missing")
    paper.add_argument("--scope", choices=tuple(SCOPES), default="grid",
                       help="grid: Table 1 + the PVM ablation (book/grids/isic2017.yaml, 14 runs; default); all: "
                            "+ the comparison's baselines and the PH2 -> ISIC2017 transfer run")
    paper.add_argument("--ph2-cv", action="store_true", help="also the PH2 5-fold cross-validation (30 runs)")
    paper.add_argument("--runs-per-gpu", type=int, default=1, metavar="K", help="runs at once on every GPU")
    paper.add_argument("--mps-percentage", type=int, metavar="P",
                       help="under CUDA MPS, each run's share of its GPU's SMs in %% (as ulvm sweep)")
    paper.add_argument("--compile", action="store_true", help="--compile of every run (as ulvm sweep)")
    paper.add_argument("--eval-batch-size", type=int, metavar="B", help="--eval-batch-size of every run")
    paper.add_argument("--deterministic", action="store_true",
                       help="--deterministic of every run: bit-identical runs on the same GPU and software, slower")
    paper.add_argument("--allow-dirty", action="store_true", help="record runs of a tree with uncommitted changes")
    paper.add_argument("--no-book", dest="book", action="store_false",
                       help="train, test and record only; the notebooks and the book later with --only-book")
    paper.add_argument("--only-book", action="store_true",
                       help="only execute the notebooks against --results and build the book (any machine)")
    # tests only: a tiny grid trained on the CPU through the same path
    parser.add_argument("--grid", dest="grids", action="append", type=Path, default=[], help=argparse.SUPPRESS)
    parser.add_argument("--allow-cpu", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    parser.set_defaults(func=_reproduce)


def _reproduce(args) -> int:
    from ..errors import UlvmError

    if args.profile == "paper":
        from ..report.reproduce_paper import PaperRun, reproduce_paper

        if args.runs_per_gpu < 1:
            raise UlvmError("--runs-per-gpu must be at least 1")
        if args.only_book and not args.book:
            raise UlvmError("--only-book and --no-book together leave nothing to do")
        raw = {"isic2017": args.isic2017_raw, "ph2": args.ph2_raw}
        reproduce_paper(PaperRun(
            results=args.results, runs=args.runs, prepared=args.prepared, raw={k: v for k, v in raw.items() if v},
            scope=args.scope, ph2_cv=args.ph2_cv, grids=tuple(args.grids), runs_per_gpu=args.runs_per_gpu,
            mps_percentage=args.mps_percentage, compile=args.compile, eval_batch_size=args.eval_batch_size,
            deterministic=args.deterministic, allow_dirty=args.allow_dirty, allow_cpu=args.allow_cpu,
            workers=args.workers, threads=args.threads, book=args.book, only_book=args.only_book))
        return 0
    from ..report.reproduce import reproduce

    reproduce(args.profile, only=args.only, resume=args.resume, out=args.out,
              DATA=args.data, PH2=args.ph2, DEVICE=args.device)
    return 0
