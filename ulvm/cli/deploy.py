"""`ulvm predict` and `ulvm export`: the trained model on your own images, and as an ONNX file (parsing only)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

_WEIGHTS_HELP = ("a shipped model name (isic2017), a run folder or its best.pt, a weights file, or an official "
                 "UltraLight VM-UNet .pth (default isic2017)")
_PREDICT_WEIGHTS_HELP = _WEIGHTS_HELP[:-len(" (default isic2017)")] + (
    ", or a .pt2 package of `ulvm export --format pt2` (the fastest on a CPU; a package is compiled code that "
    "runs when loaded: only one you exported here is loaded, see --trust-package) (default isic2017)")


def register(sub) -> None:
    p = sub.add_parser("predict", help="segment your own images with a trained model (masks at the original size)",
                       description="Writes OUT/<stem>_mask.png (0/255, at each image's original size) and, with "
                                   "--overlay, OUT/<stem>_overlay.png. Inputs: image files or folders "
                                   "(jpg/png/bmp/tif; RGB, grey, RGBA, 16-bit); photos stored turned, with an EXIF "
                                   "orientation, are turned upright as viewers show them. Unreadable inputs are "
                                   "reported and skipped; the exit code is 1 if any failed. A file in OUT that "
                                   "ulvm predict did not write (OUT/.ulvm-predict.json lists what it wrote) is "
                                   "never replaced: that image fails. Files in OUT named like masks (_mask, "
                                   "_lesion, _segmentation...) are not segmented as photos. With --truth, the exit "
                                   "code is also 1 when more than half of the images could not be scored.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    p.add_argument("--weights", default="isic2017", help=_PREDICT_WEIGHTS_HELP)
    p.add_argument("--out", type=Path, required=True, help="folder for the masks (created if missing)")
    p.add_argument("--trust-package", action="store_true",
                   help="load a .pt2 --weights package that `ulvm export` did not write for you here: a package is "
                        "code, run when it is loaded, so pass this only for a package from someone you trust "
                        "(its digest is then recorded in your trust list)")
    p.add_argument("--overlay", action="store_true", help="also write the image with the mask's outline in red")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="probability threshold, strictly between 0 and 1 (default 0.5)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    p.add_argument("--backend", default="auto",
                   help="selective-scan backend (default auto); on a CPU 'cpp' runs the model about twice as fast "
                        "(its first use compiles it: about a minute)")
    p.add_argument("--batch-size", type=int, default=8,
                   help="images per forward pass, >= 1 (default 8; fewer when the images are large)")
    p.add_argument("--truth", type=Path, metavar="FOLDER",
                   help="a folder of expert masks (named like the images, or with _lesion, _segmentation, _mask...): "
                        "also score each mask against its expert mask (DSC, IoU...)")
    p.add_argument("--report", type=Path, metavar="JSON",
                   help="write what was predicted, how long it took and, with --truth, the scores as JSON here")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=_predict)

    p = sub.add_parser("export", help="export a trained model for CPU deployment: ONNX (optionally INT8) or a "
                                      "compiled .pt2 package",
                       description="The whole network, selective scan included, for a fixed input size S. onnx: "
                                   "the scan as the 'chunked' backend's plain tensor ops, portable, for ONNX Runtime "
                                   "with no ulvm; input 'image' (B, 3, S, S) float32 RGB already normalised the "
                                   "paper's way (each image min-max scaled to 0..255), output 'prob' (B, 1, S, S). "
                                   "pt2: the same function compiled ahead of time by AOTInductor with the fused C++ "
                                   "scan ('cpp'), for one image at a time, two to four times as fast on a CPU; it runs "
                                   "with this torch on this kind of CPU, through `ulvm predict --weights FILE.pt2` "
                                   "or `ulvm.deploy.package.load_pt2`; it is compiled code, so its SHA-256 is recorded "
                                   "in your trust list (~/.cache/ulvm/trusted_packages.json), and only such packages "
                                   "load without --trust-package (compiling takes about 3 minutes: it times its "
                                   "matrix products). Checked against PyTorch after writing.")
    p.add_argument("--weights", default="isic2017", help=_WEIGHTS_HELP)
    p.add_argument("--format", choices=("onnx", "pt2"),
                   help="onnx or pt2 (default: from the suffix of --out, .pt2 or else onnx)")
    p.add_argument("--out", type=Path, required=True, help="the .onnx or .pt2 file to write")
    p.add_argument("--size", type=int, default=None,
                   help="input size, a positive multiple of 32 (default: the size the weights were trained at)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17; onnx only)")
    p.add_argument("--quantize", choices=("int8",),
                   help="also write OUT with .int8.onnx: dynamic INT8 weights (onnx only)")
    p.add_argument("--evaluate", type=Path, metavar="DATA",
                   help="a prepared dataset: report the pooled metrics of each written file on its test split "
                        "(how much INT8 changes the DSC)")
    p.add_argument("--report", type=Path, help="with --evaluate: also write the numbers as JSON here")
    p.set_defaults(func=_export)


def _predict(args: argparse.Namespace) -> int:
    from ..deploy.prediction import predict_files
    from ..io import writable_file

    if args.report is not None:
        writable_file(args.report, "--report")             # before the work, not after it
    report = predict_files(args.inputs, args.out, args.weights, overlay_images=args.overlay,
                           threshold=args.threshold, device=args.device, backend=args.backend,
                           batch_size=args.batch_size, progress=args.progress, truth=args.truth,
                           trust_package=args.trust_package)
    for path, why in report.skipped.items():
        print(f"ulvm predict: not an input photo {path}: {why}", file=sys.stderr)
    for path, why in report.warnings.items():
        print(f"ulvm predict: warning: {path}: {why}", file=sys.stderr)
    for path, why in report.failed.items():
        print(f"ulvm predict: skipped {path}: {why}", file=sys.stderr)
    masks = sum(1 for p in report.written if p.name.endswith("_mask.png"))
    print(f"predicted {masks} image(s) into {args.out} in {report.seconds:.1f} s"
          + (f"; {len(report.failed)} failed" if report.failed else ""))
    agreement = report.agreement()
    if args.truth is not None:
        for path, why in report.unscored.items():
            print(f"ulvm predict: not scored {path}: {why}", file=sys.stderr)
        if agreement["images"]:
            pooled = agreement["pooled"]
            print(f"against the expert masks of {agreement['images']} image(s): pooled DSC {pooled['dsc']:.4f}, "
                  f"IoU {pooled['iou']:.4f}, SE {pooled['se']:.4f}, SP {pooled['sp']:.4f}; mean DSC per image "
                  f"{agreement['mean_dsc']:.4f}")
    unscored = args.truth is not None and 2 * len(report.unscored) > masks
    if unscored:
        print(f"ulvm predict: error: {len(report.unscored)} of {masks} predicted image(s) have no usable expert "
              f"mask in {args.truth}: check --truth", file=sys.stderr)
    if args.report:
        _write_predict_report(args, report, masks, agreement)
    return 1 if report.failed or unscored else 0


def _write_predict_report(args: argparse.Namespace, report, masks: int, agreement: dict) -> None:
    from ..io import atomic_write_json
    from ..runtime import provenance

    atomic_write_json(args.report, {
        "weights": str(args.weights), "package": report.package, "inputs": [str(i) for i in args.inputs],
        "truth": str(args.truth) if args.truth else None, "threshold": args.threshold, "device": report.device,
        "backend": args.backend, "batch_size": args.batch_size, "predicted": masks, "failed": report.failed,
        "skipped": report.skipped, "warnings": report.warnings,
        "unscored": report.unscored, "seconds": round(report.seconds, 3), "agreement": agreement,
        **provenance(report.device)})
    print(f"written {args.report}")


def _export(args: argparse.Namespace) -> int:
    from ..data.tensors import load_data
    from ..deploy import export, package
    from ..deploy.prediction import load_weights
    from ..errors import UlvmError
    from ..io import writable_file

    file_format = args.format or ("pt2" if args.out.suffix == ".pt2" else "onnx")
    if file_format == "pt2" and (args.quantize or args.opset is not None):
        raise UlvmError("--quantize and --opset are for --format onnx; a .pt2 package is float32")
    if Path(str(args.weights)).suffix == ".pt2":
        raise UlvmError(f"{args.weights}: a .pt2 package is already compiled; export from the checkpoint it came from")
    if file_format == "pt2" and args.out.suffix != ".pt2":
        raise UlvmError(f"{args.out}: a .pt2 package's name must end in .pt2 (torch expects it)")
    if args.size is not None and (args.size <= 0 or args.size % 32):
        raise UlvmError(f"--size {args.size}: must be a positive multiple of 32 (the network halves it five times)")
    export.check_export_target(args.out)            # before any work: no folder, no file of the user's
    if args.quantize:
        export.check_export_target(args.out.with_suffix(".int8.onnx"))
    if args.report is not None:
        if not args.evaluate:
            raise UlvmError("--report writes the numbers of --evaluate: give --evaluate DATA too")
        writable_file(args.report, "--report")
    if args.evaluate:
        load_data(args.evaluate)                     # a clear error now, not after both files are written
    model = load_weights(args.weights, "cpu")
    args.size = args.size or getattr(getattr(model, "config", None), "input_size", 256)
    path = (package.export_pt2(model, args.out, size=args.size) if file_format == "pt2" else
            export.export_onnx(model, args.out, size=args.size, opset=args.opset))
    error = export.deployed_parity(model, path)
    checked_in = "the package" if file_format == "pt2" else "ONNX Runtime"
    print(f"exported {path} ({path.stat().st_size / 1024:.0f} KB); {checked_in} vs PyTorch: max relative error "
          f"{error:.1e} (limit {export.MAX_PARITY_ERROR:.0e})")
    if error > export.MAX_PARITY_ERROR:
        print(f"ulvm export: error: {path} does not reproduce the model", file=sys.stderr)
        return 1
    files = {"fp32": path}
    if args.quantize:
        files["int8"] = export.quantize_int8(path, path.with_suffix(".int8.onnx"), method="dynamic")
        print(f"exported {files['int8']}; INT8 vs fp32 on random inputs: {export.int8_difference(path, files['int8'])}")
    if args.evaluate:
        from ..io import atomic_write_json
        from ..runtime import provenance

        metrics = {kind: export.deployed_pooled_metrics(file, args.evaluate) for kind, file in files.items()}
        for kind, values in metrics.items():
            print(f"{kind}: pooled DSC {values['dsc']:.4f} on the test split of {args.evaluate}")
        if "int8" in metrics:
            print(f"INT8 changes the DSC by {metrics['int8']['dsc'] - metrics['fp32']['dsc']:+.4f}")
        if args.report:
            data = load_data(args.evaluate)
            atomic_write_json(args.report, {
                "weights": str(args.weights), "size": args.size, "format": path.suffix[1:], "metrics": metrics,
                "data": {"name": Path(data.root).name, "content_hash": data.content_hash,
                         "n_images": int(len(data.indices("test")))},
                "parity_max_rel_error": error, **provenance("cpu")})
    return 0
