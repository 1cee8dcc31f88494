"""The book's side: what notebooks call, the tables and figures they show, running them all.

    book.py       paths, reuse-or-train, the recorded sets of runs
    plots.py      figures and tables from records
    bench.py      side-by-side timing of the scan backends and models
    reproduce.py  every notebook through papermill, then the book
"""
