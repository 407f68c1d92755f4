"""Under torchrun a rank that dies or fails loses nothing: rank 0 saves the last complete iteration
and says in one line which rank failed and how to resume; the other ranks exit quietly. Two CPU
ranks with gloo (tests/test_distributed.py's launcher and driver)."""
import os
import re
import signal
from pathlib import Path

import pytest
import torch

from bridge.policy import ActorInputs
from test_distributed import TRAIN, stop_torchrun, torchrun, updates, wait_for

# Each rank's stdout and stderr in files of their own, apart from torchrun's own report.
LAUNCHER = ("--redirects", "3", "--log-dir")
RAISE_AT = 2 * 24 + 5            # rank 1's 53rd env step: in the third iteration of a run


def rank_output(out: Path, rank: int) -> str:
    files = sorted(out.glob(f"ranks/*/attempt_0/{rank}/std*.log"))
    assert len(files) == 2, files
    return "".join(f.read_text() for f in files)


def error_lines(text: str) -> list:
    return [line for line in text.splitlines() if ": error:" in line]


def interval_checkpoints(run_dir: Path) -> list:
    return sorted(int(m.group(1)) for p in run_dir.iterdir() if (m := re.fullmatch(r"model_(\d+)\.pt", p.name)))


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """A run with no interval checkpoint after model_0; rank 1 SIGKILLed in its fifth iteration or later."""
    tmp = tmp_path_factory.mktemp("dist_kill")
    out, logs = tmp / "killed", tmp / "logs"
    proc = torchrun(out, "train", *TRAIN, "--max_iterations", "1000", "--save_interval", "1000",
                    "--log_root", str(logs), wait=False, launcher=(*LAUNCHER, str(out / "ranks")))
    try:
        wait_for(out / "rank1_update3.pt", proc, out / "torchrun.log")
        os.kill(int((out / "rank1.pid").read_text()), signal.SIGKILL)
        code = proc.wait(timeout=300)
    finally:
        stop_torchrun(proc)
    return tmp, out, code


@pytest.fixture(scope="module")
def raised(killed):
    """The killed run resumed, then rank 1's env step raises in its third iteration."""
    tmp, first, _ = killed
    k = len(updates(first, 0)) - 1
    out = tmp / "raised"
    r = torchrun(out, "train", *TRAIN, "--max_iterations", "1000", "--save_interval", "1000",
                 "--log_root", str(tmp / "logs"), "--resume", str(tmp / "logs" / "dist" / f"model_{k}.pt"),
                 env={"DIST_TEST_RANK1_RAISES_AT_STEP": str(RAISE_AT)},
                 launcher=(*LAUNCHER, str(out / "ranks")))
    return tmp, out, r, k


def check_rescue(out: Path, ckpt: Path, it: int, culprit: str) -> None:
    """Rank 0 wrote one line naming the culprit, the checkpoint and the resume command; no
    traceback anywhere; rank 1 said nothing. The checkpoint holds rank 0's weights after `it`."""
    rank0, rank1 = rank_output(out, 0), rank_output(out, 1)
    assert "Traceback" not in rank0 and "Traceback" not in rank1
    assert error_lines(rank1) == []
    assert error_lines(rank0) == [
        f"train.py: error: {culprit}; saved {ckpt} (iteration {it}); continue with: torchrun ... train.py "
        f"-e dist --resume {ckpt} --max_iterations N"]
    from bridge.runner import read_checkpoint
    saved = read_checkpoint(ckpt, ActorInputs(), 52, 12)
    assert saved["iter"] == it and "optimizer_state_dict" in saved
    last = updates(out, 0)[-1]["actor"]
    assert all(torch.equal(saved["actor_state_dict"][n], last[n]) for n in last)


@pytest.mark.slow
def test_sigkill_of_one_rank_saves_the_last_iteration_on_rank_0(killed):
    tmp, out, code = killed
    run_dir = tmp / "logs" / "dist"
    k = len(updates(out, 0)) - 1                 # rank 0's last complete iteration
    assert code != 0 and k >= 3
    assert interval_checkpoints(run_dir) == [0, k]           # newer than the last interval checkpoint
    check_rescue(out, run_dir / f"model_{k}.pt", k, "rank 1 of 2 died")


@pytest.mark.slow
def test_rank_whose_env_raises_is_named_and_resume_continued(raised):
    tmp, out, r, k = raised
    run_dir = tmp / "logs" / "dist"
    assert r.returncode != 0
    assert len(updates(out, 0)) == 2             # iterations k+1 and k+2; rank 1 raised in k+3
    assert f"Learning iteration {k + 1}/" in rank_output(out, 0)
    assert interval_checkpoints(run_dir) == [0, k, k + 2]
    check_rescue(out, run_dir / f"model_{k + 2}.pt", k + 2,
                 f"rank 1 of 2 failed (RuntimeError: injected env failure at step {RAISE_AT}, "
                 "at tests/dist_driver.py:45)")


def test_remembered_iteration_is_a_copy_that_saves_as_a_checkpoint(tmp_path):
    """What rank 0 saves after a peer died mid-update is the iteration it remembered, not the
    half-updated live weights and optimizer state; the file is a checkpoint --resume reads."""
    from bridge.runner import Go2Runner, keep_last_iteration, ppo_train_cfg, read_checkpoint
    from bridge.vec_env import Go2VecEnv
    from mjx_env.env import Go2Env

    env = Go2Env(4, "mujoco")
    try:
        runner = Go2Runner(Go2VecEnv(env), ppo_train_cfg(), log_dir=None, device="cpu")
        params = [p for group in runner.alg.optimizer.param_groups for p in group["params"]]

        def step():                                   # an optimizer step on made-up gradients
            for p in params:
                p.grad = torch.ones_like(p)
            runner.alg.optimizer.step()
        step()
        runner.current_learning_iteration = 7
        assert keep_last_iteration(runner, tmp_path, "dist", None) == "no iteration completed, nothing to save"
        assert keep_last_iteration(runner, tmp_path, "dist", "m.pt") == (
            "no iteration completed since m.pt; continue with: torchrun ... train.py -e dist --resume m.pt "
            "--max_iterations N")
        runner.remember_iteration()
        actor = {k: v.clone() for k, v in runner.alg.actor.state_dict().items()}
        moments = [runner.alg.optimizer.state[p]["exp_avg"].clone() for p in params]
        step()                                        # the next update, cut short by a dead peer
        assert not torch.equal(runner.alg.actor.state_dict()["mlp.0.weight"], actor["mlp.0.weight"])
        assert keep_last_iteration(runner, tmp_path, "dist", None) == (
            f"saved {tmp_path / 'model_7.pt'} (iteration 7); continue with: torchrun ... train.py -e dist "
            f"--resume {tmp_path / 'model_7.pt'} --max_iterations N")
    finally:
        env.close()
    saved = read_checkpoint(tmp_path / "model_7.pt", ActorInputs(), 52, 12)
    assert saved["iter"] == 7
    assert all(torch.equal(saved["actor_state_dict"][k], v) for k, v in actor.items())
    state = saved["optimizer_state_dict"]["state"]
    assert all(torch.equal(state[i]["exp_avg"], m) for i, m in enumerate(moments))


class FakeGroup:
    """bridge.distributed.Group as rank 0 of 2 after the ranks started, its store a dict."""

    def __new__(cls, store: dict):
        from bridge.distributed import Group

        class Started(Group):
            started = True
            _store_get = staticmethod(store.get)
            _store_set = staticmethod(store.__setitem__)
        return Started(0, 0, 2)


def test_a_peer_still_exiting_is_named_once_it_has_ended(capsys):
    """A killed rank closes its sockets before it becomes a zombie, so rank 0 may learn of the loss
    while the process still runs: rank 0 looks again for a moment and names it (the race CI hit)."""
    import subprocess
    import sys
    import threading
    from bridge.distributed import EXIT_GRACE_S, pid_space
    closed = RuntimeError("[gloo] Connection closed by peer")
    timed_out = RuntimeError("[gloo] Timed out waiting 300000ms for recv operation to complete")
    # (the loss rank 0 saw, when the peer ends (s after the loss; None: it lives on), what rank 0 says)
    for loss, ends_s, said in ((closed, EXIT_GRACE_S / 4, "rank 1 of 2 died"),
                               (closed, None, "another rank is gone"),
                               (timed_out, None, "another rank stopped answering (a collective timed out)")):
        peer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        killer = threading.Timer(ends_s, peer.kill) if ends_s is not None else None
        try:
            store = {"go2/proc/1": f"{pid_space()} {peer.pid}"}
            if killer:
                killer.start()
            assert FakeGroup(store).fail("collect.py", loss) == 1
            assert capsys.readouterr().err == f"collect.py: error: {said}\n"
            assert "go2/lost/0" in store
        finally:
            if killer:
                killer.cancel()
            peer.kill()
            peer.wait()


# ---- collection ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_collection_keeps_the_parts_written_and_merge_names_the_missing_one(tmp_path, capsys):
    """Rank 1 dies before writing its part, once rank 0's is written: rank 0 keeps its part, says
    which is missing; the part loads on its own and merge refuses it without the other."""
    from collect_trajectories import load_dataset, main
    part0, part1 = tmp_path / ".all.h5.part0of2.h5", tmp_path / ".all.h5.part1of2.h5"
    r = torchrun(tmp_path, "collect", "--episodes", "4", "--num_envs", "2", "--duration", "0.3", "--seed", "5",
                 "--out", str(tmp_path / "all.h5"), env={"DIST_TEST_RANK1_DIES_AFTER": str(part0)},
                 launcher=(*LAUNCHER, str(tmp_path / "ranks")))
    assert r.returncode != 0
    rank0, rank1 = rank_output(tmp_path, 0), rank_output(tmp_path, 1)
    assert "Traceback" not in rank0 and "Traceback" not in rank1 and error_lines(rank1) == []
    assert error_lines(rank0) == [
        f"collect_trajectories.py: error: rank 1 of 2 died; kept {part0.name} in {tmp_path}; missing {part1.name}; "
        "run the collection again (merge refuses an incomplete set)"]
    assert sorted(p.name for p in tmp_path.glob("*.h5")) == [part0.name]        # no all.h5, no temporary file
    ds = load_dataset(part0)
    assert len(ds) == 2 and ds.episodes["seed"].tolist() == [5, 5]
    assert (ds.episodes["length"] == 15).all() and len(ds.steps["done"]) == 30    # 0.3 s at 50 Hz, complete
    capsys.readouterr()
    assert main(["merge", str(part0), "--out", str(tmp_path / "x.h5")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"collect_trajectories.py merge: error: {part1} is missing: it is rank 1's part of all.h5 from 2 ranks "
        "(1 of 2 missing); run the torchrun collection again")
    assert not (tmp_path / "x.h5").exists()
