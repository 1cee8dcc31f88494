"""The engine: one training run from a config to a checkpoint, and its test.

    runs.py         the run folder (RunFolder): its files, whether it is finished, its log, results and lock
    commands.py     a config and run settings as the argv of `ulvm train` / `ulvm test`
    checkpoint.py   weights-only checkpoints (ours and the official .pth)
    losses.py       BCE + Dice, the paper's loss
    optim.py        AdamW and the cosine schedule
    graphs.py       a training step replayed as a CUDA graph, and whether a step may be one
    inference.py    batched prediction, validation, overlays
    train.py        the fit loop (one run, or several trained together)
    evaluate.py     the paper's test: pooled metrics, per-image DSC, the results JSON
    determinism.py  one config trained twice with and without deterministic kernels, weights compared
"""
