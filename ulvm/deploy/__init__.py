"""Deployment: the trained model on a user's own images.

    pretrained/    the shipped weights and their model card
    prediction.py  images in (any size), masks out, scored against expert masks on request
    export.py      ONNX (export, ONNX Runtime, INT8) and the CPU deployment benchmark
    package.py     the AOTInductor .pt2 package for CPUs: compiled code, loaded only when trusted
    trust.py       which .pt2 packages may be loaded
"""
