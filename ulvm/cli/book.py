"""`ulvm` sub-commands of the book group (argument parsing only): `ulvm reproduce`."""
from __future__ import annotations


def register(sub) -> None:
    """Add this group's sub-commands to the `ulvm` parser."""
    from ..report.reproduce import EXECUTED_DIR, NOTEBOOK_PARAMETERS

    parser = sub.add_parser(
        "reproduce", help="execute the book's notebooks in order with papermill",
        description="Execute notebooks/NN_*.ipynb in order with papermill, injecting the profile's "
                    "parameters; executed copies go to book/executed/ for `jupyter-book build .`.")
    parser.add_argument("--profile", choices=sorted(NOTEBOOK_PARAMETERS), default="quick",
                        help="quick: CPU, synthetic data, minutes; paper: the full protocol on real data")
    parser.add_argument("--only", type=lambda text: [key.strip() for key in text.split(",") if key.strip()],
                        help="comma-separated notebook numbers or names, e.g. 03,08")
    parser.add_argument("--resume", action="store_true",
                        help="skip notebooks whose executed copy succeeded and is up to date")
    parser.add_argument("--data", help="prepared dataset folder for training/evaluation "
                                       "(default: the profile's; 'synthetic' = the embedded default)")
    parser.add_argument("--ph2", help="PH2 folder (prepared, or the flat images/ + masks/ set) for "
                                      "external validation, e.g. ../shared/realdata/PH2")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="override the profile's device")
    parser.add_argument("--out", default=EXECUTED_DIR, help=f"executed notebooks (default {EXECUTED_DIR})")
    parser.set_defaults(func=_reproduce)


def _reproduce(args) -> int:
    from ..report.reproduce import reproduce

    reproduce(args.profile, only=args.only, resume=args.resume, out=args.out,
              DATA=args.data, PH2=args.ph2, DEVICE=args.device)
    return 0
