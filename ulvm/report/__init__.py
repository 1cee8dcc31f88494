"""The book's side: what notebooks call, the tables and figures they show, running them all.

    book.py       paths, reuse-or-train, the recorded sets of runs
    results/      records of runs as tables, seed-level statistics, the claims scorecard
    plots.py      figures (drawing only)
    bench.py      side-by-side timing of the scan backends and models
    reproduce.py  every notebook through papermill, then the book
"""
