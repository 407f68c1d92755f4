"""Data parallelism under torchrun: one process (rank) per GPU, on one node or several.

torchrun gives every process WORLD_SIZE, RANK and LOCAL_RANK. Each rank steps its own envs on its
own device (cuda:LOCAL_RANK, or the CPU) with its own seed; rsl_rl broadcasts the parameters from
rank 0 and averages the gradients (bridge.runner.Go2Runner). The process group serves CUDA
tensors through NCCL and CPU tensors through gloo, so the same code runs on a CPU (gloo only).

The decisions every rank must take together go through here: whether any rank failed its checks
(then all stop, and one line names the problem) and whether any rank was asked to stop. So does what
happens when a rank dies or fails later, when no collective can vote any more (Group.fail): the
failing rank posts its reason in torchrun's key-value store, rank 0 keeps the last complete work
(Group.rescue) and prints one line naming the rank; the other ranks exit quietly.
"""
from __future__ import annotations

import contextlib
import datetime
import io
import os
import socket
import sys
import time
import traceback

from mjx_env.errors import UserError, first_line

# A collective that waits longer than this raises instead of hanging (a rank that died, a node
# that lost the network). Generous: a rank may wait for another's first JAX compilation.
TIMEOUT = datetime.timedelta(seconds=float(os.environ.get("GO2_DIST_TIMEOUT_S", 1800)))

# Once the ranks are in step (after the first training iteration), a collective waits at most this long.
# NCCL does not notice a dead peer on its own (its kernel waits for ever), and torchrun stops the other
# ranks of a node with SIGTERM and kills them --shutdown_timeout (30 s) later: 20 s leaves rank 0 time
# to save. gloo notices a closed connection at once, so on CPU ranks the timeout only catches a node
# that vanished from the network, and rank speeds may drift apart more: 300 s.
def step_timeout(nccl: bool) -> datetime.timedelta:
    return datetime.timedelta(seconds=float(os.environ.get("GO2_DIST_STEP_TIMEOUT_S", 20 if nccl else 300)))


# With these, a failed or timed-out NCCL collective raises in the Python thread that waits for it
# (blocking wait) and only its communicators are aborted (mode 2): torch's default (3) tears the
# process down from the watchdog thread, before rank 0 could save. Set unless the user set them.
NCCL_ENV = {"TORCH_NCCL_BLOCKING_WAIT": "1", "TORCH_NCCL_ASYNC_ERROR_HANDLING": "2"}

# How gloo and NCCL word a collective that failed because a peer is gone (they raise RuntimeError).
PEER_LOST = ("connection closed by peer", "connection reset by peer", "broken pipe", "timed out", "timeout",
             "nccl communicator was aborted", "nccl error", "remote process exited", "socket closed")


def is_peer_loss(exc: BaseException) -> bool:
    """Did a collective fail because another rank is gone (dead, hung, or its node lost)?"""
    import torch.distributed as dist
    if isinstance(exc, dist.DistError):
        return True
    return isinstance(exc, RuntimeError) and any(s in str(exc).lower() for s in PEER_LOST)


def where_raised(exc: BaseException) -> str:
    """'file.py:123', the innermost frame of an exception (one line instead of the traceback)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    path = os.path.abspath(frames[-1].filename)
    if path.startswith(os.getcwd() + os.sep):
        path = os.path.relpath(path)
    return f"{path}:{frames[-1].lineno}"


def pid_space() -> str:
    """Where this process's pid means something: the machine's boot id and its pid namespace
    (Linux; hostnames can repeat across containers). Processes with the same pid space can be checked."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f"{f.read().strip()}:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return socket.gethostname()


def process_ended(pid: int) -> bool:
    """The process is gone or a zombie (killed, not yet reaped by torchrun). Linux /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


# A killed process closes its sockets before the kernel marks it a zombie, so a peer can see the
# closed connection while the dying rank still looks alive in /proc: look again for this long.
EXIT_GRACE_S = 2.0


class Stopped(Exception):
    """A signal stopped this rank before its work was safe (torchrun sends SIGTERM to the ranks left
    when one died): Group.fail names the rank that died, if it can be known."""


class OtherRankFailed(UserError):
    """Another rank failed its checks and reported it; this rank stops without a message."""


class Group:
    """This process's place among torchrun's ranks (rank 0 of 1 without torchrun)."""

    def __init__(self, rank: int = 0, local_rank: int = 0, world_size: int = 1):
        self.rank, self.local_rank, self.world_size = rank, local_rank, world_size
        self.agreed = False          # the ranks have voted on their checks (see agree)
        self.nccl = False
        self.broken = False          # a collective failed: the group cannot be used or destroyed cleanly
        self.in_step = False         # the step timeout is in force (see in_step_now)
        # rank 0, when a rank failed or was lost: keeps what it can and returns the rest of the line
        self.rescue = None

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
        self.nccl = torch.cuda.is_available() and dist.is_nccl_available()
        if self.nccl:
            for k, v in NCCL_ENV.items():
                os.environ.setdefault(k, v)
        dist.init_process_group("cpu:gloo,cuda:nccl" if self.nccl else "gloo", rank=self.rank,
                                world_size=self.world_size, timeout=TIMEOUT)
        # Where this rank runs, so that rank 0 can tell later which of its node's ranks died.
        self._store_set(f"go2/proc/{self.rank}", f"{pid_space()} {os.getpid()}")

    def in_step_now(self) -> None:
        """The ranks are in step (every rank compiled and ran an iteration): from now on a collective
        waits at most step_timeout(), so that a dead or hung peer surfaces as an error in time."""
        if self.in_step or not self.started:
            return
        self.in_step = True
        from torch.distributed import distributed_c10d as c10d
        if hasattr(c10d, "_set_pg_timeout"):          # torch >= 2.3
            c10d._set_pg_timeout(step_timeout(self.nccl))

    def close(self) -> None:
        if self.started and not self.broken:
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

    # ---- a rank that fails or dies after the checks ----------------------------------------------
    def _store(self):
        from torch.distributed import distributed_c10d as c10d
        try:
            store = c10d._get_default_store()
            store.set_timeout(datetime.timedelta(seconds=10))     # torchrun's agent holds it; never wait long
            return store
        except Exception:
            return None

    def _store_set(self, key: str, value: str) -> None:
        store = self._store()
        try:
            if store is not None:
                store.set(key, value)
        except Exception:                                   # the store is gone too: nothing to tell
            pass

    def _store_get(self, key: str) -> str | None:
        store = self._store()
        try:
            return store.get(key).decode() if store is not None and store.check([key]) else None
        except Exception:
            return None

    def culprits(self) -> tuple[str | None, bool]:
        """Which ranks failed, as far as this rank can know: those that posted their reason, else
        the ranks of this node whose process has ended and that did not report losing a peer.
        Also whether some ranks run on other nodes (those cannot be checked)."""
        failed = [(r, why) for r in range(self.world_size) if r != self.rank
                  and (why := self._store_get(f"go2/failed/{r}")) is not None]
        local, remote = self._peers()
        if failed:
            return "; ".join(f"rank {r} of {self.world_size} failed ({why})" for r, why in failed), remote
        gone = [r for r, pid in local if process_ended(pid) and self._store_get(f"go2/lost/{r}") is None]
        if gone:
            return "; ".join(f"rank {r} of {self.world_size} died" for r in gone), remote
        return None, remote

    def _peers(self) -> tuple[list, bool]:
        """The other ranks of this node as (rank, pid), and whether some rank runs on another node."""
        here, local, remote = pid_space(), [], False
        for r in range(self.world_size):
            proc = self._store_get(f"go2/proc/{r}") if r != self.rank else None
            if proc is None:
                continue
            where, pid = proc.rsplit(" ", 1)
            if where != here:
                remote = True
            else:
                local.append((r, int(pid)))
        return local, remote

    def _silent_local_peers(self) -> bool:
        """Is a rank of this node still running without having posted that it failed or lost a peer?"""
        return any(not process_ended(pid) and self._store_get(f"go2/lost/{r}") is None
                   and self._store_get(f"go2/failed/{r}") is None for r, pid in self._peers()[0])

    def peer_failed(self) -> bool:
        """Has another rank failed or died (as far as culprits can tell)? For a SIGTERM handler:
        torchrun sends SIGTERM to the ranks left when one died."""
        return self.started and not self.broken and self.culprits()[0] is not None

    def fail(self, prog: str, exc: BaseException) -> int:
        """Under torchrun, after the ranks started: this rank failed on its own (exc is its error)
        or lost a peer (exc is the failed collective). The failing rank posts its reason; rank 0
        keeps what it can (rescue) and prints one line; the others exit quietly. Returns the exit code.
        (Without torchrun the caller lets the error go, with its traceback, as before.)"""
        self.broken = True
        lost = is_peer_loss(exc) or isinstance(exc, Stopped)
        if lost:
            self._store_set(f"go2/lost/{self.rank}", "")
        else:
            at = where_raised(exc) if not isinstance(exc, UserError) else ""
            why = f"{type(exc).__name__}: {first_line(exc)}" if not isinstance(exc, UserError) else str(exc)
            why += f", at {at}" if at else ""
            self._store_set(f"go2/failed/{self.rank}", why)
            what = f"rank {self.rank} of {self.world_size} failed ({why})"
        if not self.is_main:
            return 1
        if lost:
            timed_out = any(s in str(exc).lower() for s in ("timed out", "timeout"))
            what, remote = self.culprits()
            deadline = time.monotonic() + EXIT_GRACE_S
            # A closed connection, and a peer of this node still running that has said nothing: it
            # may be exiting. (A timeout means a peer that hangs; one on another node cannot be seen.)
            while what is None and not timed_out and self._silent_local_peers() and time.monotonic() < deadline:
                time.sleep(0.05)
                what, remote = self.culprits()
            if what is None and isinstance(exc, Stopped):
                what = f"rank {self.rank} of {self.world_size} {exc}"
            elif what is None and timed_out:
                what = "another rank stopped answering (a collective timed out)"
            elif what is None:
                what = "a rank on another node is gone" if remote else "another rank is gone"
        try:
            kept = self.rescue() if self.rescue is not None else ""
        except Exception as save_exc:            # say so, still in one line
            kept = f"could not save: {type(save_exc).__name__}: {first_line(save_exc)}"
        print(f"{prog}: error: {what}{'; ' + kept if kept else ''}", flush=True, file=sys.stderr)
        return 1

    def quiet_unless_main(self):
        """Argument parsing: torchrun gives every rank the same flags; say it once (rank 0)."""
        if self.is_main:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
        return stack
