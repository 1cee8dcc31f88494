"""The book's side: what notebooks call, the tables and figures they show, running them all.

    book.py             paths, reuse-or-train, the sweep's runs, the recorded sets of runs
    results/            records of runs as tables, seed-level statistics, the claims scorecard
    plots.py            figures (drawing only)
    diagrams.py         figures drawn from the model itself: block and architecture diagrams, receptive field
    width.py            the width study's records
    bench.py            side-by-side timing of the scan backends and models
    reproduce.py        every notebook through papermill, then the book
    reproduce_paper.py  `ulvm reproduce --profile paper`: the grids through the sweep engine, then the book
"""
