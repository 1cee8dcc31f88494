"""Many runs: grids of runs on Dask, several runs sharing a GPU.

    experiments.py  a job (one run of a grid) and its record
    sweep.py        a grid file run on a Dask cluster, resumable
    throughput.py   how many runs one GPU holds (K runs at once, MPS off/on)
    mps.py          the CUDA MPS daemon and each client's share of the GPU
"""
