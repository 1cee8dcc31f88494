"""Deployment: the trained model on a user's own images.

    pretrained/    the shipped weights and their model card
    prediction.py  images in (any size), masks out, scored against expert masks on request
    export.py      ONNX and the AOTInductor .pt2 package for CPUs, and the CPU deployment benchmark
"""
