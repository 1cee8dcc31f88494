"""CUDA graphs: record a step's many tiny kernel launches once, replay them with one launch.

A 49k-parameter model is launch-bound on a GPU: a batch-8 training step is on the order of a thousand
kernels, each doing less work than its launch costs. Replaying a recorded graph removes the Python and
launch overhead (the measurements are in `book/results/bench/NOTES.md`).
Used by `ulvm bench` and by `ulvm.engine.train.fit` (`RunSettings.cuda_graph`); `graphable` says whether a run
may use one.

What a graph needs: static shapes, inputs copied into the same tensors every time, no host syncs or
data-dependent Python inside the step, gradients set to None inside the step (backward then allocates them
in the graph's own memory while it records, and every replay rewrites those same tensors; an eager step
beside the graph zeroes them in place rather than freeing them), and a capturable optimizer
(`AdamW(capturable=True)`, with a tensor learning rate that the scheduler updates in place).
"""
from __future__ import annotations

import logging
from contextlib import contextmanager

import torch

from ..config import Config, RunSettings
from ..ssm import resolve

log = logging.getLogger(__name__)


def capture_cuda_graph(step, warmup: int = 3):
    """Record `step()` once as a CUDA graph; return a function that replays it.

    The replayer returns what `step()` returned during capture: the same tensors, refreshed by each
    replay (read them before the next one). torch.cuda.graphs requires the warm-up calls, on a side
    stream; they really run `step()`: see `GraphedTrainStep` for a training step that must not count them.
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    # Several graphs in one process (`ulvm.engine.train.fit_together`: one per run) must not share memory. cuBLAS
    # keeps one workspace per stream and a graph bakes its address in, so graphs recorded on torch's shared
    # capture stream share one (pytorch/pytorch#193402: a replay then faults with "an illegal memory
    # access" when several runs train in one process). So each graph is recorded on its own
    # stream, and the cached workspaces are dropped around the capture, as torch's cudagraph trees do: the
    # one the graph needs is then allocated in the graph's own memory pool and lives as long as the graph.
    torch._C._cuda_clearCublasWorkspaces()
    with torch.cuda.graph(graph, stream=side):
        output = step()
    torch._C._cuda_clearCublasWorkspaces()

    def replay():
        graph.replay()
        return output

    return replay


@contextmanager
def training_state_restored(model: torch.nn.Module, optimizer: torch.optim.Optimizer):
    """Run a block that trains (graph warm-up), then put weights, buffers and optimizer state back.

    In place (`copy_`), so tensors captured in a graph stay valid. Optimizer state created inside the
    block (the first step creates AdamW's moments and step count) is zeroed: zero is its initial value.
    """
    model_state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    optimizer_state = {param: {key: value.clone() for key, value in state.items() if torch.is_tensor(value)}
                       for param, state in optimizer.state.items()}
    yield
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            tensor.copy_(model_state[name])
        for param, state in optimizer.state.items():
            saved = optimizer_state.get(param, {})
            for key, value in state.items():
                if torch.is_tensor(value) and key in saved:
                    value.copy_(saved[key])
                elif torch.is_tensor(value):
                    value.zero_()


def set_capturable(optimizer: torch.optim.Optimizer, capturable: bool) -> None:
    """Put an optimizer (AdamW, Adam) in this run's mode, e.g. after loading a checkpoint's state.

    A state dict carries the mode of the run that saved it, and loads on the CPU: a graphed run needs a
    learning rate and step counts as tensors on the parameters' device, an eager one plain floats and step
    counts on the CPU (PyTorch's foreach AdamW refuses a tensor learning rate without `capturable`).
    A graphed run also takes PyTorch's fused AdamW: the whole update as one multi-tensor kernel, where the
    capturable foreach form is ~16 elementwise passes over the parameter list (a graph replays each one).
    """
    for group in optimizer.param_groups:
        device = group["params"][0].device
        group["capturable"] = capturable
        group["fused"] = capturable
        lr = float(group["lr"])
        group["lr"] = torch.tensor(lr, device=device) if capturable else lr
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            if "step" in state:
                state["step"] = state["step"].to(device if capturable else "cpu", torch.float32)


class GraphedTrainStep:
    """A training step recorded as a CUDA graph for one batch shape, replayed for every batch of it.

    `step(images, masks)` must return the loss as a tensor and set the gradients to None before its backward
    (as `ulvm.engine.train.train_step` does). The warm-up steps that capture needs leave the
    model and optimizer as they found them, so a graphed run follows the same trajectory as an eager one.
    Call it with batches of the example's shape; the returned loss tensor is overwritten by the next call.
    """

    def __init__(self, step, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 images: torch.Tensor, masks: torch.Tensor):
        self.images, self.masks = images.clone(), masks.clone()        # the graph's static inputs
        with training_state_restored(model, optimizer):
            self._replay = capture_cuda_graph(lambda: step(self.images, self.masks))

    def __call__(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        self.images.copy_(images)
        self.masks.copy_(masks)
        return self._replay()


def graphable(config: Config, settings: RunSettings, device: torch.device) -> bool:
    """Whether the training step may be recorded as a CUDA graph; says why not when it may not."""
    if not (settings.cuda_graph and device.type == "cuda"):
        return False
    if config.amp:
        log.warning("cuda_graph is not used with amp=True: the gradient scaler decides on the host")
        return False
    backend = resolve(settings.backend, torch.empty(0, device=device))
    if not backend.graph_safe:
        log.warning("cuda_graph is not used with backend %r: not tested under graph capture here; "
                    "training eagerly", backend.name)
        return False
    return True
