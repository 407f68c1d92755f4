"""The task registry (tools/registry.py) and train.py's --task, --print-config, --from-scratch and its
flag spellings: every task resolves, the printed config parses back to itself, a flag over a task
changes that field alone, no --task keeps the original defaults, and a chain runs, stops and resumes."""
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO

import train
from bridge.runner import ppo_train_cfg
from mjx_env.config import TaskConfig
from tools import registry


def printed_config(argv) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert train.main([*argv, "--print-config"]) == 0
    return json.loads(out.getvalue())


@pytest.mark.parametrize("from_scratch", [False, True])
@pytest.mark.parametrize("name", list(registry.TASKS))
def test_every_task_resolves_and_its_printed_config_parses_back(name, from_scratch):
    argv = ["--task", name] + ["--from-scratch"] * from_scratch
    parent = registry.get(name).parent
    if parent and not from_scratch and not (registry.get(parent).policy and
                                            registry.shipped_policy(registry.get(parent)).is_file()):
        with pytest.raises(train.UserError, match=f"train {parent} too with --from-scratch"):
            train.resolve(argv)
        return
    printed = printed_config(argv)
    _, stages = train.resolve(argv)
    assert printed["task"] == name and len(printed["stages"]) == len(stages)
    assert printed["stages"][-1]["task"] == name
    for record, (stage, args) in zip(printed["stages"], stages):
        assert record["flags"] == train.recipe(args)
        # the JSON's config sections give back the very TaskConfig and rsl_rl config the run would use
        assert TaskConfig.from_dict(record["config"]) == train.task_config(args)
        assert record["ppo"] == train.ppo_config(args, train.run_dir(args))
        # and its flags, given back to train.py, resolve to the same run
        again = train.parse_args([f"--{k.replace('_', '-')}={v}" for k, v in record["flags"].items()
                                  if v is not None and not isinstance(v, (bool, list))]
                                 + [f"--{k.replace('_', '-')}" for k, v in record["flags"].items() if v is True]
                                 + [x for k, v in record["flags"].items() if isinstance(v, list)
                                    for item in v for x in (f"--{'dr-range' if k == 'dr_ranges' else 'reward-scale'}",
                                                             item)])
        assert train.recipe(again) == record["flags"]


def test_a_chain_lists_its_ancestors_first_and_resumes_later_steps():
    stages = registry.chain("Go2-Jump", from_scratch=True)
    assert [(s.label, s.start, s.folder) for s in stages] == [
        ("Go2-Velocity-Robust", "fresh", "1-Go2-Velocity-Robust"),
        ("Go2-Jump", "parent", "2-Go2-Jump"),
        ("Go2-Jump step 2", "resume", "3-Go2-Jump-step2"),
        ("Go2-Jump step 3", "resume", "4-Go2-Jump-step3")]
    # the jump recipe as trained: 300 iterations, 701 more, then 200 without the entropy bonus on seed 2
    assert [s.flags["max_iterations"] for s in stages[1:]] == [300, 701, 200]
    assert stages[3].flags["entropy_coef"] == 0.0 and stages[3].flags["seed"] == 2 and stages[3].flags["jumps"]
    # without --from-scratch a one-step task writes into the run's own folder, from its parent's policy
    (walker,) = registry.chain("Go2-Velocity-Walker", from_scratch=False)
    assert walker.folder == "" and walker.start == "parent"
    _, [(_, args)] = train.resolve(["--task", "Go2-Velocity-Walker"])
    assert args.init_actor == str(REPO / "policies" / "go2_walk_robust_v1.pt") and args.exp_name == "Go2-Velocity-Walker"


SHIPPED = [t.name for t in registry.TASKS.values() if t.policy and registry.shipped_policy(t).is_file()]


def test_every_file_in_policies_has_a_task():
    assert {p.name for p in (REPO / "policies").glob("*.pt")} == {registry.get(n).policy for n in SHIPPED}


@pytest.mark.parametrize("name", SHIPPED)
def test_each_shipped_policy_records_the_task_that_produces_it(name):
    ckpt = torch.load(registry.shipped_policy(registry.get(name)), map_location="cpu", weights_only=False)
    _, stages = train.resolve(["--task", name])
    assert ckpt["task"] == name
    now, defaults = train.recipe(stages[-1][1]), train.recipe(train.parse_args([]))
    # = --print-config's flags of its last stage; a flag added since the file was made is at its default
    assert ckpt["recipe"] == {k: now[k] for k in ckpt["recipe"]}
    assert all(now[k] == defaults[k] for k in set(now) - set(ckpt["recipe"]))
    assert ckpt["iter"] == sum(s.flags["max_iterations"] for s in registry.chain(name, False)) - 1


def test_the_shipped_walker_is_the_recipe_the_docs_give():
    """The flags of go2_walk.pt's recipe as run (the results page of 2026's drift runs), one by one."""
    (stage, args), = train.resolve(["--task", "Go2-Velocity-Walker"])[1]
    cfg = train.task_config(args)
    assert (args.num_envs, args.max_iterations, args.seed, args.history, args.estimator) == (512, 450, 2, 6, True)
    assert cfg.reward.tracking_sigma == 0.05 and dict(cfg.reward.scales)["tracking_lin_vel"] == 6.5
    assert dict(cfg.reward.scales)["tracking_ang_vel"] == 2.0 and cfg.command.random_resample_prob == 0.0
    r = cfg.randomization
    assert r.enabled and r.push and r.kp_scale_range == (0.75, 1.25) and r.joint_frictionloss_range == (0.0, 0.4)
    assert r.drift_accel_range == (-1.0, 1.0) and r.drift_yaw_accel_range == (-1.5, 1.5)
    assert r.foot_rolling_friction_range == (0.0, 0.02) and r.foot_torsional_friction_range == (0.0, 0.04)
    assert args.final_noise_std == 0.3


@pytest.mark.parametrize("override, field, value", [
    (["--seed", "7"], "seed", 7),
    (["-B", "64"], "num_envs", 64),
    (["--no-randomize"], "randomize", False),
    (["--tracking-sigma", "0.1"], "tracking_sigma", 0.1),
    (["--num-learning-epochs", "3"], "num_learning_epochs", 3),
])
def test_a_flag_over_a_task_changes_that_field_alone(override, field, value):
    _, [(_, base)] = train.resolve(["--task", "Go2-Velocity-Walker"])
    _, [(_, changed)] = train.resolve(["--task", "Go2-Velocity-Walker", *override])
    a, b = train.recipe(base), train.recipe(changed)
    assert b[field] == value and {k for k in a if a[k] != b[k]} == {field}


def test_a_reward_scale_over_a_task_changes_that_term_alone():
    _, [(_, base)] = train.resolve(["--task", "Go2-Velocity-Walker"])
    _, [(_, changed)] = train.resolve(["--task", "Go2-Velocity-Walker", "--reward-scale", "tracking_lin_vel=5"])
    a, b = dict(train.task_config(base).reward.scales), dict(train.task_config(changed).reward.scales)
    assert b["tracking_lin_vel"] == 5.0 and {k for k in a if a[k] != b[k]} == {"tracking_lin_vel"}
    assert train.task_config(changed).randomization == train.task_config(base).randomization


def test_no_task_is_the_original_defaults():
    args = train.parse_args([])
    assert (args.task, args.exp_name, args.num_envs, args.max_iterations, args.seed, args.log_root) == \
        (None, "go2-ppo-dynaflow", 4096, 10000, 1, "logs")
    assert train.task_config(args) == TaskConfig()
    assert train.ppo_config(args, train.run_dir(args)) == ppo_train_cfg()
    _, stages = train.resolve([])
    assert len(stages) == 1 and stages[0][0] is None and train.recipe(stages[0][1]) == train.recipe(args)


def test_underscore_spellings_are_aliases():
    under = train.parse_args(["--num_envs", "8", "--exp_name", "x", "--max_iterations", "3", "--xml_path", "m.xml",
                              "--save_interval", "5", "--log_root", "r", "--random_resample_prob", "0"])
    hyphen = train.parse_args(["--num-envs", "8", "--exp-name", "x", "--max-iterations", "3", "--xml-path", "m.xml",
                               "--save-interval", "5", "--log-root", "r", "--random-resample-prob", "0"])
    assert vars(under) == vars(hyphen)


@pytest.mark.parametrize("argv, needle", [
    (["--task", "Go2-Nope"], "unknown --task 'Go2-Nope'; the tasks are: Go2-Velocity-Flat"),
    (["--from-scratch"], "--from-scratch trains a named task's chain: add --task NAME"),
    (["--task", "Go2-Jump", "--resume", "x.pt"], "--resume continues one run; Go2-Jump trains 3 stages"),
    (["--task", "Go2-Velocity-Walker", "--from-scratch", "--init-actor", "x.pt"], "drop --resume and --init-actor"),
])
def test_task_errors_are_one_line(argv, needle, capsys):
    assert train.main([*argv, "--print-config"]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and err.startswith("train.py: error: ")


def test_list_tasks_names_each_task_and_its_policy(capsys):
    assert train.main(["--list-tasks"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(registry.TASKS)
    assert any("Go2-Velocity-Walker" in line and "policies/go2_walk.pt" in line for line in lines)


CHAIN = ["--task", "Go2-Velocity-Walker", "--from-scratch", "-B", "8", "--max-iterations", "2", "--backend",
         "mujoco", "--device", "cpu", "-e", "chain"]


@pytest.mark.slow          # three train.py processes, two task configs compiled: minutes on 2 cores
def test_from_scratch_runs_each_stage_stops_and_resumes_in_stage_two(tmp_path):
    """Two stages of 2 iterations (the robust walker, then the shipped walker from its actor): killed
    once stage 2 has saved its first checkpoint, the same command resumes in stage 2 and exports."""
    cmd = [sys.executable, str(REPO / "train.py"), *CHAIN, "--log-root", str(tmp_path / "logs")]
    root = tmp_path / "logs" / "chain"
    stage2 = root / "2-Go2-Velocity-Walker"
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 900
    while not (stage2 / "model_0.pt").is_file():       # rsl_rl saves iteration 0 of every run
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline, "stage 2 did not save its first checkpoint in 15 min"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)                   # no save on the way out: what a crash leaves
    first = proc.communicate()[0]
    assert "stage 1/2 Go2-Velocity-Robust: iterations 0..1" in first and "stage 2/2 Go2-Velocity-Walker" in first
    assert sorted(p.name for p in (root / "1-Go2-Velocity-Robust").glob("model_*.pt")) == ["model_0.pt", "model_1.pt"]
    assert not (root / "go2_walk.pt").exists()

    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "stage 1/2 Go2-Velocity-Robust: done" in again.stdout
    assert "stage 2/2 Go2-Velocity-Walker: iterations 1..1" in again.stdout
    assert f"resumed from {stage2 / 'model_0.pt'}" in again.stdout
    exported = torch.load(root / "go2_walk.pt", map_location="cpu", weights_only=False)
    assert exported["task"] == "Go2-Velocity-Walker" and exported["iter"] == 1
    assert exported["recipe"]["history"] == 6 and exported["recipe"]["num_envs"] == 8
    ckpt1 = torch.load(root / "1-Go2-Velocity-Robust" / "model_1.pt", map_location="cpu", weights_only=False)
    assert ckpt1["task"] == "Go2-Velocity-Robust" and ckpt1["recipe"]["history"] == 1   # stage 1: one frame
    # a third run finds everything done and exports again, training nothing
    third = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert third.returncode == 0 and "stage 2/2 Go2-Velocity-Walker: done" in third.stdout
    assert "Learning iteration" not in third.stdout


def test_logs_go_to_the_working_directory(tmp_path):
    """An installed command writes where the user stands: ./logs/{exp_name}, not into the checkout."""
    args = train.parse_args(["-e", "here"])
    os.chdir(tmp_path)
    try:
        assert train.run_dir(args).resolve() == (tmp_path / "logs" / "here").resolve()
    finally:
        os.chdir(REPO)
