"""Data parallelism under torchrun: one process (rank) per GPU, on one node or several.

torchrun gives every process WORLD_SIZE, RANK and LOCAL_RANK. Each rank steps its own envs on its
own device (cuda:LOCAL_RANK, or the CPU) with its own seed; rsl_rl broadcasts the parameters from
rank 0 and averages the gradients (bridge.runner.Go2Runner). The process group serves CUDA
tensors through NCCL and CPU tensors through gloo, so the same code runs on a CPU (gloo only).

The decisions every rank must take together go through here: whether any rank failed its checks
(then all stop, and one line names the problem) and whether any rank was asked to stop.
"""
from __future__ import annotations

import contextlib
import datetime
import io
import os
import sys

from mjx_env.errors import UserError

# A collective that waits longer than this raises instead of hanging (a rank that died, a node
# that lost the network). Generous: a rank may wait for another's first JAX compilation.
TIMEOUT = datetime.timedelta(seconds=float(os.environ.get("GO2_DIST_TIMEOUT_S", 1800)))


class OtherRankFailed(UserError):
    """Another rank failed its checks and reported it; this rank stops without a message."""


class Group:
    """This process's place among torchrun's ranks (rank 0 of 1 without torchrun)."""

    def __init__(self, rank: int = 0, local_rank: int = 0, world_size: int = 1):
        self.rank, self.local_rank, self.world_size = rank, local_rank, world_size
        self.agreed = False          # the ranks have voted on their checks (see agree)

    @classmethod
    def from_env(cls) -> "Group":
        try:
            world = int(os.environ.get("WORLD_SIZE", "1"))
            rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
        except ValueError:
            raise UserError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (torchrun sets them)") from None
        if world <= 1:
            return cls()
        if not (0 <= rank < world and 0 <= local < world):
            raise UserError(f"RANK {rank} / LOCAL_RANK {local} out of range for WORLD_SIZE {world}")
        return cls(rank, local, world)

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def __str__(self) -> str:
        return f"rank {self.rank} of {self.world_size}"

    @property
    def started(self) -> bool:
        import torch.distributed as dist
        return self.is_distributed and dist.is_available() and dist.is_initialized()

    def start(self) -> None:
        """Join the other ranks (torchrun's rendezvous: MASTER_ADDR, MASTER_PORT)."""
        if not self.is_distributed or self.started:
            return
        import torch
        import torch.distributed as dist
        nccl = torch.cuda.is_available() and dist.is_nccl_available()
        dist.init_process_group("cpu:gloo,cuda:nccl" if nccl else "gloo", rank=self.rank,
                                world_size=self.world_size, timeout=TIMEOUT)

    def close(self) -> None:
        if self.started:
            import torch.distributed as dist
            dist.destroy_process_group()

    def _all_reduce(self, values: list[int]) -> list[int]:
        import torch
        import torch.distributed as dist
        t = torch.tensor(values, dtype=torch.int64)          # CPU tensor: gloo, even beside NCCL
        dist.all_reduce(t)
        return t.tolist()

    def agree(self, error: UserError | None = None) -> None:
        """A collective every rank reaches after its checks, with its error if it failed one. If any
        rank failed, the lowest such rank raises its error and every other rank OtherRankFailed:
        all stop, and one line is printed (report)."""
        self.agreed = True
        if not self.started:
            if error is not None:
                raise error
            return
        votes = [0] * self.world_size
        votes[self.rank] = int(error is not None)
        votes = self._all_reduce(votes)
        if any(votes):
            if votes.index(1) == self.rank:
                raise error
            raise OtherRankFailed(f"rank {votes.index(1)} failed")

    def any(self, flag: bool) -> bool:
        """True on every rank if it is True on any rank (a collective: all ranks call it)."""
        if not self.started:
            return bool(flag)
        return self._all_reduce([int(bool(flag))])[0] > 0

    def report(self, prog: str, exc: UserError) -> None:
        """Print a user error as one line. An error before the ranks agreed takes part in the vote
        now (the other ranks are waiting in theirs), and only the lowest failing rank prints."""
        if not self.agreed:
            try:
                self.agree(exc)
            except OtherRankFailed as other:
                exc = other
            except UserError:
                pass
        if isinstance(exc, OtherRankFailed):
            return
        where = f"({self}) " if self.is_distributed else ""
        print(f"{prog}: error: {where}{exc}", flush=True, file=sys.stderr)

    def quiet_unless_main(self):
        """Argument parsing: torchrun gives every rank the same flags; say it once (rank 0)."""
        if self.is_main:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
        return stack
