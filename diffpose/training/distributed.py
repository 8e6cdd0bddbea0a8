"""torch.distributed in one place: set-up from torchrun's environment, rank-0 helpers.

``torchrun --nproc_per_node=N diffpose train ...`` sets RANK, WORLD_SIZE and LOCAL_RANK; without
them training (or inference) runs in one process. Backend: NCCL when each process has a GPU, gloo
on the CPU. :func:`relaunch` makes a ``diffpose`` command replace itself by that torchrun command
(``train.processes``, ``infer.processes``).

Decisions that depend on files (resume or start over, the resume state itself) are taken by
rank 0 and sent to the others with :func:`broadcast_object` and :func:`broadcast_state`, so every
process follows the same path even when the processes do not see the same disk.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


PROCESS_GROUP_TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(preference: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> this process's GPU when there is one, else the CPU."""
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        from diffpose.errors import ConfigError

        raise ConfigError(f"train.device is '{preference}' but no CUDA device is available")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def setup(preference: str = "auto") -> DistContext:
    """Join the process group when launched by torchrun; a one-process context otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(preference, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        # rank 0 alone reads a resume point, scores a validation and writes checkpoints (7.7 GB of
        # last.pt at paper scale) while the others wait in a collective: more than NCCL's 10 minutes
        # on a slow disk or artifact store should not kill the run
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", timeout=PROCESS_GROUP_TIMEOUT)
    return DistContext(rank, world_size, local_rank, device)


def torchrun_argv(command: list[str], processes: int) -> list[str]:
    """``torchrun --standalone`` running ``diffpose <command...>`` in ``processes`` processes (one node)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            "-m", "diffpose", *command]


def relaunch(command: list[str], processes: int, knob: str) -> int | None:
    """Run ``diffpose <command...>`` in ``processes`` processes under torchrun's launcher when
    ``processes`` > 1 and this is not already a torchrun worker (no RANK in the environment), and
    return the launch's exit code; None otherwise (this process runs the command itself).

    ``command`` is this command's own command line (``args.command_line``, set by
    :func:`diffpose.cli.main`), so the DAG's unchanged stage command runs N
    processes; ``knob`` (``train.processes``) names the param in the line printed first. The
    launcher is :func:`torchrun_argv`'s, run in this process (what the ``torchrun`` executable
    does): SIGINT/SIGTERM stop every worker, and a failed worker stops the others and ends the
    launch with one line (the worker has printed its own error) instead of torchrun's report."""
    if processes <= 1 or "RANK" in os.environ:
        return None
    import logging

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    argv = torchrun_argv(command, processes)
    print(f"diffpose {command[0]}: {knob} is {processes}: {' '.join(argv[1:4])} ... ({processes} processes)",
          file=sys.stderr)
    for name, logger in list(logging.root.manager.loggerDict.items()):  # the agent's own failure report
        if name.startswith("torch.distributed.elastic") and isinstance(logger, logging.Logger):
            logger.setLevel(logging.CRITICAL)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        run(parse_args(argv[3:]))
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        print(f"diffpose {command[0]}: process {rank} of {processes} failed (exit code {failure.exitcode}); "
              f"the others were stopped", file=sys.stderr)
        return 1
    except SignalException as err:
        print(f"diffpose {command[0]}: stopped by signal {int(err.sigval)}", file=sys.stderr)
        return 128 + int(err.sigval)
    return 0


def teardown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def all_reduce_sum(ctx: DistContext, values: torch.Tensor) -> torch.Tensor:
    """Sum a small tensor over all processes (identity in one process)."""
    if ctx.distributed:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def broadcast_buffers(ctx: DistContext, module: torch.nn.Module) -> None:
    """Rank 0's buffers on every process. DDP broadcasts them before each forward, and each process
    then updates its BatchNorm statistics from its own batch: after a step they differ again."""
    if ctx.distributed:
        for buf in module.buffers():
            dist.broadcast(buf, src=0)


def broadcast_object(ctx: DistContext, obj: Any) -> Any:
    """Rank 0's picklable ``obj`` on every process (``obj`` of the other ranks is ignored)."""
    if not ctx.distributed:
        return obj
    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0, device=ctx.device if ctx.device.type == "cuda" else None)
    return box[0]


def gather_objects(ctx: DistContext, obj: Any) -> list[Any] | None:
    """Every process's picklable ``obj``, in rank order, on rank 0; None on the others."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] | None = [None] * ctx.world_size if ctx.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


@dataclass(frozen=True)
class _Slot:
    """Where a tensor was in a broadcast structure: its index, shape and dtype."""

    index: int
    shape: tuple[int, ...]
    dtype: torch.dtype


def _strip(obj: Any, tensors: list[torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors.append(obj)
        return _Slot(len(tensors) - 1, tuple(obj.shape), obj.dtype)
    if isinstance(obj, dict):
        return {k: _strip(v, tensors) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_strip(v, tensors) for v in obj)
    return obj


def _fill(obj: Any, tensors: list[torch.Tensor]) -> Any:
    if isinstance(obj, _Slot):
        return tensors[obj.index]
    if isinstance(obj, dict):
        return {k: _fill(v, tensors) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_fill(v, tensors) for v in obj)
    return obj


def broadcast_state(ctx: DistContext, state: Any) -> Any:
    """Rank 0's nested dicts/lists of tensors and plain values (a state dict, an optimizer state)
    on every process, as CPU tensors. The layout goes as one pickled object, then every tensor
    by itself through the backend (through the GPU under NCCL, one tensor at a time)."""
    if not ctx.distributed:
        return state
    tensors: list[torch.Tensor] = []
    layout = broadcast_object(ctx, _strip(state, tensors) if ctx.is_main else None)
    slots: list[_Slot] = []
    _collect(layout, slots)
    received: list[torch.Tensor] = [torch.empty(0)] * len(slots)
    for slot in sorted(slots, key=lambda s: s.index):
        if ctx.is_main:
            buf = tensors[slot.index].detach().to(ctx.device).contiguous()
        else:
            buf = torch.empty(slot.shape, dtype=slot.dtype, device=ctx.device)
        dist.broadcast(buf, src=0)
        received[slot.index] = tensors[slot.index] if ctx.is_main else buf.cpu()
    return _fill(layout, received)


def _collect(obj: Any, slots: list[_Slot]) -> None:
    if isinstance(obj, _Slot):
        slots.append(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            _collect(v, slots)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _collect(v, slots)
