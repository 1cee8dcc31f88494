"""`ulvm profile` and `ulvm bench`: the model's size and speed (argument parsing only)."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("profile", help="parameters, GFLOPs (paper's thop way and in full) and weight-file size "
                                       "for each PVM setting")
    p.add_argument("--size", type=int, default=256, help="input size (default 256, as the paper)")
    p.add_argument("--widths", type=float, nargs="+", default=None, metavar="W",
                   help="also the width study: every stage's channels times W (e.g. 0.125 0.25 0.5 1 2), x1 and x4")
    p.add_argument("--models", nargs="*", default=None, metavar="NAME",
                   help="also the comparison chapter's models counted the same way (no names = all)")
    p.set_defaults(func=_profile)

    p = sub.add_parser("bench", help="time inference and a training step for every scan backend, side by side")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument("--size", type=int, default=256, help="input size (default 256)")
    p.add_argument("--repeats", type=int, default=20, help="timed repeats per measurement (median reported)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--paths", nargs="*", default=None, help="only these paths, e.g. parallel 'parallel + graph'")
    p.add_argument("--onnx", action="store_true",
                   help="CPU: also time ONNX Runtime fp32 and INT8 at batch 1 against eager PyTorch, in this process "
                        "(needs the export extra)")
    p.add_argument("--compile", action="store_true",
                   help="with --onnx: also time torch.compile with the 'chunked' scan and with the fused C++ "
                        "one ('cpp', where it builds); compiling takes ~3 and ~1 minutes on 2 cores")
    p.add_argument("--models", nargs="*", default=None, metavar="NAME",
                   help="instead of the scan paths: time the comparison chapter's models side by side (ultralight "
                        "and the baselines; no names = all), inference b1/b8 and a training step b8")
    p.add_argument("--out", default=None, help="also write the results as JSON here")
    p.set_defaults(func=_bench)


def _profile(args) -> int:
    from ..complexity import pvm_settings_table

    print(f"UltraLight VM-UNet, input 1x3x{args.size}x{args.size}. "
          "Paper (x4): 49,457 params, 0.060 GFLOPs, 229.1 KB.")
    print(f"{'PVM':<5} {'params':>9} {'GFLOPs (thop, paper)':>21} {'GFLOPs (full)':>14} {'weights KB':>11}")
    for row in pvm_settings_table(args.size):
        print(f"{row['setting']:<5} {row['params']:>9,} {row['gflops_thop']:>21.4f} {row['gflops_full']:>14.4f} "
              f"{row['weight_kb']:>11.1f}")
    if args.widths:
        _profile_widths(args.widths, args.size)
    if args.models is not None:
        _profile_models(args.models, args.size)
    return 0


def _profile_widths(widths: list[float], size: int) -> None:
    from ..complexity import width_table
    from ..errors import UlvmError

    bad = [w for w in widths if not 0 < w <= 16]
    if bad:
        raise UlvmError(f"--widths: {bad[0]:g} is not a channel multiplier in (0, 16]")
    print("\nWidth study (stage channels = the paper's x width, rounded to multiples of 4):")
    print(f"{'width':>6} {'PVM':<4} {'channels':<28} {'params':>9} {'GFLOPs thop':>12} {'GFLOPs full':>12}")
    for row in width_table(widths, input_size=size):
        print(f"{row['width']:>6g} x{row['parallel']:<3} {str(tuple(row['channels'])):<28} {row['params']:>9,} "
              f"{row['gflops_thop']:>12.4f} {row['gflops_full']:>12.4f}")


def _profile_models(names: list[str], size: int) -> None:
    from ..complexity import comparison_table

    print(f"\n{'model':<16} {'params':>10} {'GFLOPs thop':>12} {'GFLOPs full':>12} {'weights KB':>11}")
    for row in comparison_table(names or None, input_size=size):
        print(f"{row['model']:<16} {row['params']:>10,} {row['gflops_thop']:>12.4f} {row['gflops_full']:>12.4f} "
              f"{row['weight_kb']:>11.1f}")


def _bench(args) -> int:
    import torch

    from ..io import atomic_write_json
    from ..report.bench import format_table, run_benchmark

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.models is not None:
        from ..report.bench import compare_models

        result = compare_models(args.device, names=args.models or None, size=args.size, repeats=args.repeats,
                                progress=lambda line: print(line, flush=True))
        if args.out:
            atomic_write_json(args.out, result)
            print(f"written {args.out}")
        return 0
    result = run_benchmark(args.device, size=args.size, repeats=args.repeats, paths=args.paths,
                           progress=lambda line: print(line, flush=True))
    print(format_table(result))
    if args.onnx:
        from ..deploy.export import cpu_benchmark

        result["deployment_rows"] = cpu_benchmark(threads=torch.get_num_threads(), compile=args.compile,
                                                  progress=print)
    if args.out:
        atomic_write_json(args.out, result)
        print(f"written {args.out}")
    return 0
