"""Runs train.py or collect_trajectories.py under torchrun for tests/test_distributed.py and records
what each rank did (not a test itself):

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/dist_driver.py OUT train ARGS...

Rank R writes OUT/rank{R}.pid at the start and, for train, OUT/rank{R}_update{k}.pt after its k-th PPO
update: the actor's weights after the update and the policy observations of the rollout before it.
DIST_TEST_EXTRA_RANK1 holds flags added on rank 1 only (a bad flag on one rank).
Failures on rank 1 (tests/test_dist_failures.py): DIST_TEST_RANK1_RAISES_AT_STEP=N makes its N-th env
step raise; DIST_TEST_RANK1_DIES_AFTER=PATH SIGKILLs its collection, before its part is written, as
soon as PATH exists.
"""
import os
import signal
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def record_updates(out: Path, rank: int) -> None:
    import torch
    from rsl_rl.algorithms import PPO
    update, count = PPO.update, [0]

    def recorded(self):
        obs = self.storage.observations["policy"].clone()
        losses = update(self)
        torch.save({"actor": {k: v.clone() for k, v in self.actor.state_dict().items()}, "obs": obs},
                   out / f"rank{rank}_update{count[0]}.pt")
        count[0] += 1
        return losses
    PPO.update = recorded


def raise_at_step(n: int) -> None:
    from bridge.vec_env import Go2VecEnv
    step, count = Go2VecEnv.step, [0]

    def failing(self, actions):
        count[0] += 1
        if count[0] == n:
            raise RuntimeError(f"injected env failure at step {n}")
        return step(self, actions)
    Go2VecEnv.step = failing


def collect_dies_after(path: Path) -> None:
    """Rank 1 joins the group, then dies before its part is written, once rank 0's part exists."""
    import collect_trajectories

    def dying(args):
        while not path.exists():
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGKILL)
    collect_trajectories.collect = dying


def main() -> int:
    out, tool, args = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    rank = int(os.environ.get("RANK", "0"))
    (out / f"rank{rank}.pid").write_text(str(os.getpid()))
    if rank == 1:
        args += os.environ.get("DIST_TEST_EXTRA_RANK1", "").split()
        if os.environ.get("DIST_TEST_RANK1_RAISES_AT_STEP"):
            raise_at_step(int(os.environ["DIST_TEST_RANK1_RAISES_AT_STEP"]))
        if os.environ.get("DIST_TEST_RANK1_DIES_AFTER"):
            collect_dies_after(Path(os.environ["DIST_TEST_RANK1_DIES_AFTER"]))
    if tool == "train":
        record_updates(out, rank)
        import train
        return train.main(args)
    import collect_trajectories
    return collect_trajectories.main(args)


if __name__ == "__main__":
    sys.exit(main())
