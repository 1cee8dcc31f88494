"""`ulvm profile` and `ulvm bench`: the model's size and speed (argument parsing only)."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("profile", help="parameters, GFLOPs (paper's thop way and in full) and weight-file size "
                                       "for each PVM setting")
    p.add_argument("--size", type=int, default=256, help="input size (default 256, as the paper)")
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
    return 0


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
