"""examples/train_dynaflow.py: a DynaFlow trainer through Φ learns on a tiny dataset and reports finite
held-out figures beside its two baselines. The shapes of the README command (B = 32, H = 16), whose
programs the persistent compilation cache keeps: compiled once per machine (minutes), loaded after."""
import json
import math
import subprocess
import sys

import pytest

import collect_trajectories
from conftest import REPO

SCRIPT = REPO / "examples" / "train_dynaflow.py"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """4 episodes x 0.5 s of the shipped walking policy (C MuJoCo): 1 held out (every 4th)."""
    out = tmp_path_factory.mktemp("dynaflow") / "walk.npz"
    assert collect_trajectories.main(["--episodes", "4", "--num_envs", "4", "--duration", "0.5", "--vx", "0.3", "0.8",
                                      "--seed", "4", "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_loss_falls_and_heldout_figures_are_finite(data, tmp_path):
    out = tmp_path / "r.json"
    r = subprocess.run([sys.executable, str(SCRIPT), str(data), "--steps", "6", "--horizon", "16", "--batch", "32",
                        "--lr", "3e-3", "--residual-iters", "3", "--print-every", "0", "--json", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    print(r.stdout.strip().splitlines()[-1])
    assert res["train_windows"] == 3 * 9 and res["heldout_windows"] == 9
    # the same training batch (same noise and flow times) before and after 6 Adam steps
    for net in ("dynaflow", "direct"):
        before, after = res[net]["fixed_batch_loss"]
        assert after < before, (net, before, after)
        assert len(res[net]["losses"]) == 6 and all(math.isfinite(v) for v in res[net]["losses"])
    b = res["baselines"]
    for v in (res["heldout_state_rms"], b["hold_x0"], b["direct"], b["direct_physical_residual"]):
        assert math.isfinite(v) and v > 0.0
    # the recorded applied actions through Φ reproduce the held-out windows (the backends' parity)
    assert res["floor_recorded_actions"] < 1e-2 * b["hold_x0"]


def test_bad_input_is_one_line(tmp_path, data):
    for argv, msg in (([str(tmp_path / "none.npz")], "need an NPZ dataset"),
                      ([str(data), "--horizon", "40"], "no train windows of H = 40"),
                      ([str(data), "--heldout-every", "1"], "--heldout-every must be >= 2"),
                      ([str(data), "--json", str(tmp_path / "no" / "r.json")],
                       f"cannot write {tmp_path / 'no' / 'r.json'}: folder {tmp_path / 'no'} does not exist")):
        r = subprocess.run([sys.executable, str(SCRIPT), *argv], cwd=REPO, capture_output=True, text=True, timeout=300)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and msg in lines[0], r.stderr


def test_lr_schedule_cosine_by_default_constant_on_request():
    """The learning rate each Adam step uses: lr0 * (1 + cos(pi k / T)) / 2 by default, lr0 with
    --lr-schedule constant (the README's earlier rows)."""
    import importlib.util
    import torch
    spec = importlib.util.spec_from_file_location("train_dynaflow", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for argv, expect in (([], lambda k: 2e-3 * (1 + math.cos(math.pi * k / 4)) / 2), (["--lr-schedule", "constant"],
                                                                                      lambda k: 2e-3)):
        _, args = mod.parse_args(["d.npz", "--steps", "4", "--lr", "2e-3", *argv])
        w = torch.zeros(3, requires_grad=True)
        opt, sched = mod.optimizer([w], args)
        used = []
        for _ in range(4):
            used.append(opt.param_groups[0]["lr"])
            w.sum().backward()
            opt.step()
            if sched is not None:
                sched.step()
        assert used == pytest.approx([expect(k) for k in range(4)], rel=1e-12, abs=1e-15), (argv, used)
    assert used == [2e-3] * 4 and mod.parse_args(["d.npz"])[1].lr_schedule == "cosine"
