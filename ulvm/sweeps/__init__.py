"""Many runs: grids of runs on Dask, several runs sharing a GPU.

    grid.py         the grid file: schema, checks, the jobs it expands to
    experiments.py  a job (one run of a grid: a Config) and its record
    jobs.py         a job's state on disk, and the task that trains and tests it
    cluster.py      the GPUs, the Dask cluster, its worker slots
    status.py       progress and the time left
    sweep.py        `sweep()`: a grid run on the cluster, resumable
    throughput.py   how many runs one GPU holds (K runs at once, MPS off/on)
    mps.py          the CUDA MPS daemon and each client's share of the GPU
"""
