"""Data-parallel training under torchrun: two processes on the CPU with gloo, through the same
rsl_rl code path that runs NCCL on GPUs (bridge.distributed, Go2Runner._configure_multi_gpu)."""
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO

DRIVER = REPO / "tests" / "dist_driver.py"
TRAIN = ["--device", "cpu", "--backend", "mujoco", "--num_envs", "16", "--exp_name", "dist"]


def torchrun(out: Path, tool: str, *args, env=None, timeout=900, wait=True, launcher=()):
    """Two ranks on this machine. Generous timeouts (a loaded 2-core machine starts a rank in
    minutes); gloo gives up on a lost peer after GO2_DIST_TIMEOUT_S, nothing waits forever.
    `launcher`: more torchrun flags (e.g. --redirects, to read each rank's output on its own)."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *launcher,
           str(DRIVER), str(out), tool, *args]
    env = dict(os.environ, PYTHONPATH=str(REPO), GO2_DIST_TIMEOUT_S="600", **(env or {}))
    if not wait:
        log = open(out / "torchrun.log", "w")
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        stop_torchrun(proc)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def stop_torchrun(proc) -> None:
    """After a timeout: SIGTERM to torchrun, which forwards it to its ranks (each in a session of
    its own) and SIGKILLs them after its --shutdown_timeout (30 s)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def updates(out: Path, rank: int) -> list:
    files = sorted(out.glob(f"rank{rank}_update*.pt"), key=lambda p: int(p.stem.split("update")[1]))
    return [torch.load(f) for f in files]


def wait_for(path: Path, proc, log: Path, timeout=600):
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
        time.sleep(0.5)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """2 ranks x 16 envs for 2 iterations; then a resume, stopped by a SIGTERM to rank 1 alone."""
    tmp = tmp_path_factory.mktemp("dist")
    logs = tmp / "logs"
    first = torchrun(tmp / "first", "train", *TRAIN, "--max_iterations", "2", "--log_root", str(logs))
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    out = tmp / "resumed"
    proc = torchrun(out, "train", *TRAIN, "--max_iterations", "1000", "--log_root", str(logs),
                    "--resume", str(logs / "dist" / "model_1.pt"), wait=False)
    try:
        wait_for(out / "rank1_update0.pt", proc, out / "torchrun.log")      # rank 1 has made an update
        os.kill(int((out / "rank1.pid").read_text()), signal.SIGTERM)
        assert proc.wait(timeout=600) == 0, (out / "torchrun.log").read_text()[-3000:]
    finally:
        stop_torchrun(proc)
    return tmp, first, (out / "torchrun.log").read_text()


@pytest.mark.slow
def test_actor_identical_on_both_ranks_after_every_update(run):
    tmp = run[0]
    for part in ("first", "resumed"):
        r0, r1 = updates(tmp / part, 0), updates(tmp / part, 1)
        assert len(r0) == len(r1) >= 1
        for a, b in zip(r0, r1):
            assert a["actor"].keys() == b["actor"].keys()
            for k in a["actor"]:
                assert torch.equal(a["actor"][k], b["actor"][k]), k
    # The updates did change the weights: the equality above comes from the averaged gradients.
    r0 = updates(tmp / "first", 0)
    assert not torch.equal(r0[0]["actor"]["mlp.0.weight"], r0[1]["actor"]["mlp.0.weight"])


@pytest.mark.slow
def test_ranks_step_different_env_streams(run):
    tmp = run[0]
    r0, r1 = updates(tmp / "first", 0), updates(tmp / "first", 1)
    assert r0[0]["obs"].shape == r1[0]["obs"].shape == (24, 16, 48)
    assert not torch.allclose(r0[0]["obs"], r1[0]["obs"])
    out = run[1].stdout
    assert "rank 0 of 2] backend=mujoco device=cpu num_envs=16 seed=1 " in out
    assert "rank 1 of 2] backend=mujoco device=cpu num_envs=16 seed=2 " in out


def stop_iteration(run) -> int:
    return len(updates(run[0] / "resumed", 0)) + 1       # the resumed run starts at iteration 2


@pytest.mark.slow
def test_one_run_folder_and_one_set_of_checkpoints(run):
    tmp = run[0]
    logs = tmp / "logs"
    assert [p.name for p in logs.iterdir()] == ["dist"]
    files = sorted(p.name for p in (logs / "dist").iterdir() if p.is_file())
    events = [f for f in files if f.startswith("events.out.tfevents")]
    # One TensorBoard writer per launch, rank 0's (its pid is in the file name).
    rank0 = {(tmp / part / "rank0.pid").read_text() for part in ("first", "resumed")}
    assert len(events) == 2 and {f.split(".")[-2] for f in events} == rank0
    k = stop_iteration(run)
    assert sorted(set(files) - set(events)) == sorted(["cfgs.pkl", "cfgs_resume_2.pkl", "model_0.pt", "model_1.pt",
                                                       f"model_{k}.pt"])
    assert pickle.loads((logs / "dist" / "cfgs.pkl").read_bytes())[-1]["world_size"] == 2
    # The checkpoint holds the weights both ranks trained to.
    ckpt = torch.load(logs / "dist" / "model_1.pt", weights_only=False)
    last = updates(tmp / "first", 1)[-1]["actor"]
    assert all(torch.equal(ckpt["actor_state_dict"][k], last[k]) for k in last)


@pytest.mark.slow
def test_resume_continues_the_numbering_on_every_rank(run):
    tmp, _, log = run
    k = stop_iteration(run)
    assert torch.load(tmp / "logs" / "dist" / f"model_{k}.pt", weights_only=False)["iter"] == k
    assert "Learning iteration 2/1002" in log
    assert log.count("resumed from") == 2                    # both ranks loaded the checkpoint


@pytest.mark.slow
def test_signal_to_one_rank_stops_all_after_the_same_iteration(run):
    tmp, _, log = run
    k = stop_iteration(run)
    assert len(updates(tmp / "resumed", 1)) == k - 1          # both ranks made the same updates
    saved = tmp / "logs" / "dist" / f"model_{k}.pt"
    assert f"stopped by a signal to another rank after iteration {k}; saved {saved}" in log
    assert f"[train rank 1 of 2] stopped after iteration {k}" in log
    ckpt = torch.load(saved, weights_only=False)
    last = updates(tmp / "resumed", 1)[-1]["actor"]
    assert all(torch.equal(ckpt["actor_state_dict"][n], last[n]) for n in last)


@pytest.mark.slow   # the default group's torchrun launch is the two-rank collection below
def test_bad_flag_on_one_rank_stops_all_with_one_line(tmp_path):
    r = torchrun(tmp_path, "train", *TRAIN, "--max_iterations", "2", "--log_root", str(tmp_path / "logs"),
                 env={"DIST_TEST_EXTRA_RANK1": "--num_envs 0"})
    assert r.returncode != 0
    errors = [line for line in (r.stdout + r.stderr).splitlines() if "train.py: error:" in line]
    assert errors == ["train.py: error: (rank 1 of 2) --num_envs must be >= 1, got 0"]
    assert not list((tmp_path / "logs").rglob("*.p*"))         # no checkpoint, no cfgs.pkl


def test_rank_and_device_follow_torchrun_env(monkeypatch):
    from bridge import device
    from bridge.distributed import Group
    from mjx_env.errors import UserError
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    g = Group.from_env()
    assert (g.rank, g.world_size, g.is_distributed, g.is_main) == (0, 1, False, True)
    assert device.torchrun_local_rank() is None
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    g = Group.from_env()
    assert (g.rank, g.local_rank, g.world_size, g.is_main, str(g)) == (3, 1, 4, False, "rank 3 of 4")
    assert device.torchrun_local_rank() == 1
    with pytest.raises(UserError, match=r"under torchrun local rank 1 uses cuda:1: pass --device cuda"):
        device.resolve("cuda:0")
    assert device.resolve("cpu").name == "cpu"
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(UserError, match="out of range"):
        Group.from_env()


# ---- collection ----------------------------------------------------------------------------------
COLLECT = ["--episodes", "3", "--num_envs", "2", "--duration", "0.3", "--seed", "5", "--backend", "mujoco",
           "--no-progress"]


def collect_part(out, **kw):
    """One process's collection, as rank r does it (1 torch thread, as torchrun's ranks run)."""
    import argparse
    import collect_trajectories
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # the command line's own defaults for every flag not given (new flags need no edit here)
        args = collect_trajectories.parse_args(COLLECT + ["--out", str(out)])
        collect_trajectories.collect(argparse.Namespace(**dict(vars(args), **kw)))
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """3 episodes on 2 ranks (2 + 1), and each rank's part collected alone, the way rank r does."""
    tmp = tmp_path_factory.mktemp("collect")
    r = torchrun(tmp, "collect", "--episodes", "3", "--num_envs", "2", "--duration", "0.3", "--seed", "5",
                 "--out", str(tmp / "all.h5"))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    parts = [collect_part(tmp / "p0.h5", episodes=2, seed=5),
             collect_part(tmp / "p1.h5", episodes=1, seed=6)]
    return tmp, r, parts


def same_data(a, b):
    assert len(a) == len(b)
    for k in a.episodes:
        assert np.array_equal(a.episodes[k], b.episodes[k]), k
    for k in a.steps:
        assert np.array_equal(a.steps[k], b.steps[k]), k
    for k in set(a.meta) | set(b.meta):
        if k not in ("created", "merged_from"):
            assert a.meta[k] == b.meta[k], k


def test_collection_on_two_ranks_is_one_file_with_the_union_of_their_parts(collection):
    from collect_trajectories import load_dataset
    tmp, r, (p0, p1) = collection
    assert sorted(p.name for p in tmp.glob("*.h5")) == ["all.h5", "p0.h5", "p1.h5"]   # the ranks' parts are gone
    assert not list(tmp.glob(".all.h5.part*"))
    ds, a, b = load_dataset(tmp / "all.h5"), load_dataset(p0), load_dataset(p1)
    assert len(ds) == 3 and ds.episodes["seed"].tolist() == [5, 5, 6]
    starts, lengths = ds.episodes["start"], ds.episodes["length"]
    assert starts[0] == 0 and (starts[1:] == starts[:-1] + lengths[:-1]).all()
    assert lengths.sum() == len(ds.steps["done"])
    for i in range(3):
        part, j = (a, i) if i < 2 else (b, 0)
        mine, theirs = ds.episode(i), part.episode(j)
        assert all(np.array_equal(mine[k], theirs[k]) for k in mine)
        assert np.array_equal(ds.episodes["key"][i], part.episodes["key"][j])
    assert not np.array_equal(ds.episode(0)["actions"][:5], ds.episode(2)["actions"][:5])   # distinct streams
    assert json.loads(ds.meta["merged_from"]) == [".all.h5.part0of2.h5", ".all.h5.part1of2.h5"]
    assert "wrote " in r.stdout and "3 episodes" in r.stdout


def test_merge_of_parts_equals_the_file_the_ranks_wrote(collection):
    from collect_trajectories import load_dataset, main
    tmp, _, (p0, p1) = collection
    assert main(["merge", str(p0), str(p1), "--out", str(tmp / "merged.h5")]) == 0
    same_data(load_dataset(tmp / "merged.h5"), load_dataset(tmp / "all.h5"))


@pytest.mark.parametrize("attr, value, what", [
    ("model_sha256", "0" * 64, "model"),
    ("checkpoint_sha256", "0" * 64, "checkpoint"),
    ("configs", None, "task configs"),
])
def test_merge_refuses_parts_of_another_collection(collection, tmp_path, capsys, attr, value, what):
    import h5py
    from collect_trajectories import main
    _, _, (p0, p1) = collection
    other = tmp_path / "other.h5"
    shutil.copy(p1, other)
    with h5py.File(other, "r+") as f:
        if attr == "configs":
            cfg = json.loads(f.attrs["configs"])
            cfg["env"]["episode_length_s"] = 20.0
            value = json.dumps(cfg)
        f.attrs[attr] = value
    assert main(["merge", str(p0), str(other), "--out", str(tmp_path / "x.h5")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"collect_trajectories.py merge: error: {other} comes from a different {what} than {p0}: "
                   "merge only parts of one collection")
    assert not (tmp_path / "x.h5").exists()


def test_merge_refuses_parts_with_the_same_seed(collection, tmp_path, capsys):
    from collect_trajectories import main
    _, _, (p0, _) = collection
    assert main(["merge", str(p0), str(p0), "--out", str(tmp_path / "x.h5")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"collect_trajectories.py merge: error: {p0} and {p0} were both collected with seed 5, so their episodes "
        "repeat: give every part its own --seed")


# ---- the same on GPUs with NCCL (not run here: no GPU) --------------------------------------------
@pytest.mark.gpu
def test_two_gpus_nccl_train_in_lockstep(tmp_path):
    """torchrun on 2 GPUs: rank k on cuda:k, MJX envs, NCCL collectives; weights agree after every update."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 CUDA devices")
    logs = tmp_path / "logs"
    r = torchrun(tmp_path, "train", "--backend", "mjx", "--num_envs", "256", "--exp_name", "nccl",
                 "--max_iterations", "2", "--log_root", str(logs), timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "rank 0 of 2] backend=mjx device=cuda:0 " in r.stdout
    assert "rank 1 of 2] backend=mjx device=cuda:1 " in r.stdout
    r0, r1 = updates(tmp_path, 0), updates(tmp_path, 1)
    assert len(r0) == len(r1) == 2
    for a, b in zip(r0, r1):
        assert all(torch.equal(a["actor"][k].cpu(), b["actor"][k].cpu()) for k in a["actor"])
    assert not torch.allclose(r0[0]["obs"].cpu(), r1[0]["obs"].cpu())
    assert sorted(p.name for p in (logs / "nccl").glob("model_*.pt")) == ["model_0.pt", "model_1.pt"]
