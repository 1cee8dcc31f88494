"""`ulvm explain`: what the PVM layers look at in your own image (argument parsing only)."""
from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("explain", help="maps of what the PVM layers look at in one image (Δ, gate, Seg-Grad-CAM)",
                       description="Writes, for each PVM stage (encoder4-6, decoder1-3), OUT/<stem>_<stage>_delta.png "
                                   "(the selective scan's step Δ averaged over channels, the PVM chunks side by side), "
                                   "_gate.png (SiLU(z) likewise) and _gradcam.png (Seg-Grad-CAM of the lesion output), "
                                   "8-bit grey at the image's size, and OUT/<stem>_explain.json with each map's value "
                                   "range. Files ulvm explain did not write are never overwritten.")
    p.add_argument("image", type=Path, metavar="IMAGE", help="an image file (jpg/png/bmp/tif)")
    p.add_argument("--out", type=Path, required=True, help="folder for the maps (created if missing)")
    p.add_argument("--weights", default="isic2017",
                   help="a shipped model name (isic2017), a run folder or its best.pt of an UltraLight VM-UNet, "
                        "or an official .pth (default isic2017)")
    p.add_argument("--device", default="cpu", help="cpu | cuda[:N] (default cpu)")
    p.set_defaults(func=_explain)


def _explain(args) -> int:
    from ..deploy.explain import explain_files

    written = explain_files(args.image, args.out, weights=args.weights, device=args.device)
    print(f"wrote {len(written)} files to {args.out} (value ranges in {written[-1].name})")
    return 0
