"""`ulvm try-it`: build the book's Try it page's files (argument parsing only)."""
from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    from ..tryit.build import SITE_DIR

    p = sub.add_parser(
        "try-it", help="build the files of the book's Try it page (the model in the reader's browser)",
        description="Installs onnxruntime-web from the npm registry (pinned by book/web/package-lock.json; "
                    "needs npm) unless it is there, exports the weights to ONNX, and writes them with the "
                    "runtime, the page's script and synthetic samples into OUT/try_it/, which the book copies "
                    "into its HTML. `make book` runs it. --bench also measures the page in headless Chromium "
                    "(Playwright, the dev extra) and writes a JSON record.")
    p.add_argument("--weights", default="isic2017", help="the model the page runs (default: the shipped isic2017)")
    p.add_argument("--out", default=SITE_DIR, help=f"where to write (default {SITE_DIR})")
    p.add_argument("--bench", type=Path, metavar="JSON",
                   help="also measure the page (weight, time in the browser, agreement with `ulvm predict`) on a "
                        "synthetic image and write the record here, e.g. book/results/bench/browser.json")
    p.add_argument("--image", type=Path, help="with --bench: time this image instead of a synthetic one")
    p.add_argument("--also", type=Path, nargs="+", default=[], metavar="IMAGE",
                   help="with --bench: also record the agreement with `ulvm predict` on these images")
    p.set_defaults(func=_try_it)


def _try_it(args) -> int:
    import tempfile

    from ..report.book import project_root
    from ..tryit.build import build_site

    root = project_root()
    folder = build_site(root, args.weights, args.out)
    print(f"wrote {folder} (the Try it page's model, runtime, script and samples)")
    if args.bench:
        from ..io import atomic_write_json
        from ..tryit.browser import browser_record, minimal_site, synthetic_photo
        from ..version import code_version

        with tempfile.TemporaryDirectory(prefix="ulvm-try-it-") as scratch:
            site = Path(scratch)                 # not OUT: the book copies all of OUT into its HTML
            minimal_site(root, site, folder)
            image = args.image or synthetic_photo(site)
            record = browser_record(site, image, others=tuple(args.also))
        record["code_version"] = code_version()
        atomic_write_json(args.bench, record)
        print(f"wrote {args.bench}: model {record['median_ms']['model']} ms, whole page "
              f"{record['median_ms']['total']} ms (median), {record['page_weight']['total_bytes'] / 1e6:.1f} MB")
    return 0
