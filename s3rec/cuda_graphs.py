"""Training steps replayed as CUDA graphs (RunConfig.compile "cuda-graph").

On a GPU the eager step is paced by the host: on an H200 a Beauty step took 12 ms while its
kernels ran about 4 ms (benchmarks/gpu/h200-2026-12-04), hundreds of launches a step. A CUDA
graph records a whole step once, forward, backward and the Adam update, and replays it with
one launch. A graph fixes every shape and every address, hence fixed-shape steps (pretraining:
PretrainModel.grid_forward on batches padded to max_len, one graph for an epoch's full batches,
one for its last; finetuning: finetuning.fixed_shape_loss, a graph per number of target slots),
each batch copied into the graph's own input tensors, and an Adam whose step count stays on the
device (`capturable`).

Recording needs eager steps first (cuBLAS picks its workspaces, Adam makes its state); they
run on the recorded batch and are then undone, parameters, optimizer state and the CUDA random
state put back, so that a run trains exactly the steps it is given, as the eager fixed-shape
step does (tests/test_cuda.py compares them). No torch.compile: nothing to compile, and the
kernels are the eager step's.
"""
from __future__ import annotations

import dataclasses

import torch

# The batch fields each step reads (the rest of a batch is not copied into the graph's inputs)
GRID_INPUTS = ("items", "masked_items", "negative_items", "masked_segments", "pos_segments", "neg_segments")
NEXT_ITEM_INPUTS = ("inputs", "targets", "negatives", "target_positions", "target_weights")
WARMUP_STEPS = 2  # eager steps before recording (torch's own examples take a few)


class GraphedSteps:
    """step([batch]) -> losses: one training step of `model` by `optimizer` on a batch already
    on the device, replayed from the graph recorded for its shapes (recorded on first sight).
    `losses_of(batch)` gives the step's losses, "loss" the one to minimise; it reads only the
    batch fields named in `inputs`. The losses are the graph's output tensors: read them before
    the next step overwrites them."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, losses_of, inputs: tuple[str, ...]):
        self.model, self.optimizer, self.losses_of, self.inputs = model, optimizer, losses_of, inputs
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, object, dict[str, torch.Tensor]]] = {}

    def __call__(self, chunks: list) -> dict[str, torch.Tensor]:
        (batch,) = chunks  # one chunk a step: iterate_batches(..., bounds=())
        shapes = self.shapes_of(batch)
        if shapes not in self.graphs:
            self.graphs[shapes] = self.record(batch)
        graph, inputs, losses = self.graphs[shapes]
        for name in self.inputs:
            getattr(inputs, name).copy_(getattr(batch, name))
        graph.replay()
        return losses

    def shapes_of(self, batch) -> tuple:
        """What selects a batch's graph: the shapes of the fields the step reads."""
        return tuple(tuple(getattr(batch, name).shape) for name in self.inputs)

    def eager_step(self, batch) -> dict[str, torch.Tensor]:
        losses = self.losses_of(batch)
        self.optimizer.zero_grad(set_to_none=True)  # the backward writes fresh gradients (in the graph's memory)
        losses["loss"].backward()
        self.optimizer.step()
        return losses

    def record(self, batch):
        """(the graph of a step on `batch`'s shapes, its input batch, its output losses)."""
        for group in self.optimizer.param_groups:  # set here: loading a checkpoint replaces the groups
            group["capturable"] = True
        inputs = dataclasses.replace(batch, **{name: getattr(batch, name).clone() for name in self.inputs})
        saved = self.snapshot()
        side = torch.cuda.Stream()  # warm-up off the default stream, as torch's CUDA-graph notes ask
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_STEPS):
                self.eager_step(inputs)
        torch.cuda.current_stream().wait_stream(side)
        self.restore(saved)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            # detached: a loss that keeps its autograd graph alive keeps the parameters'
            # AccumulateGrad nodes too, made on this recording's stream, and the next shape's
            # warm-up (on its own stream) would then accumulate across streams (torch warns)
            losses = {name: loss.detach() for name, loss in self.eager_step(inputs).items()}
        self.restore(saved)  # recording runs nothing; the random state, put back all the same
        return graph, inputs, losses

    def snapshot(self) -> dict:
        state = self.optimizer.state
        return {"parameters": [p.detach().clone() for p in self.model.parameters()],
                "optimizer": {p: {k: v.clone() for k, v in state[p].items() if torch.is_tensor(v)}
                              for p in self.model.parameters() if p in state},
                "rng": torch.cuda.get_rng_state()}

    @torch.no_grad()
    def restore(self, saved: dict) -> None:
        """Values back in place (the graph holds these tensors' addresses); optimizer state made
        since the snapshot back to zeros, which is how Adam starts it."""
        for p, value in zip(self.model.parameters(), saved["parameters"]):
            p.copy_(value)
        for p, state in self.optimizer.state.items():
            before = saved["optimizer"].get(p, {})
            for key, value in state.items():
                if torch.is_tensor(value):
                    value.copy_(before[key]) if key in before else value.zero_()
        torch.cuda.set_rng_state(saved["rng"])
