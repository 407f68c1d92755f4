"""The shared floor under the commands: argument groups keep every command's defaults, tools.run's
one-line error, and demos.write's choice of format by suffix."""
import sys

import numpy as np
import pytest

from mjx_env.errors import UserError

DEVICE = dict(device=None, matmul_precision="highest")
PERTURB = dict(push=0.0, push_every=4.0, randomize=False, jump=None, jump_every=2.0)
# Each command's parse of [] before the argument groups existed (read off the old parsers).
BEFORE = {
    "play": dict(DEVICE, **PERTURB, backend="mujoco", checkpoint=None, duration=20.0, episodes=1, height=[0.3],
                 height_px=480, json=None, no_progress=False, num_envs=64, plot=None, seed=0, video=None,
                 video_env=0, vx=[0.3, 1.0], vy=[0.0], width=640, xml_path=None, yaw=[0.0]),
    "collect_trajectories": dict(DEVICE, **PERTURB, backend="mujoco", checkpoint=None, drop_falls=False,
                                 duration=20.0, episodes=64, grid=False, height=[0.3], no_progress=False,
                                 num_envs=64, out="demos.h5", seed=0, vx=[0.0, 1.0], vy=[0.0], xml_path=None,
                                 yaw=[0.0]),
    "train": dict(DEVICE, backend="auto", entropy_coef=None, exp_name="go2-ppo-dynaflow", final_noise_std=None,
                  init_actor=None, init_noise_std=None, jumps=False, logger="tensorboard", max_iterations=10000,
                  num_envs=4096, obs_noise=False, random_resample_prob=None, randomize=False, resume=None,
                  save_interval=100, seed=1, wandb_project="go2-mjx-ppo", xml_path=None),
}


@pytest.mark.parametrize("command", sorted(BEFORE))
def test_argument_groups_keep_every_default(command):
    import importlib
    args = vars(importlib.import_module(command).parse_args([]))
    args.pop("log_root", None)
    new = {k: v for k, v in args.items() if k not in BEFORE[command]}
    assert {k: args[k] for k in BEFORE[command]} == BEFORE[command]
    added = dict(mjx_impl="jax")                  # --mjx-impl (issue 23): its default is the old physics
    if command == "play":                         # play.py --viewer (issue 25) added these, off by default
        added.update(viewer=False, port=8080, host="127.0.0.1")
        added.update(protocol=None, model=None)   # play.py --protocol, --model (issue 39): none by default
    if command != "train":                        # flags added to train.py elsewhere are not this test's
        assert new == added


@pytest.mark.parametrize("command", ["play", "collect_trajectories", "train"])
def test_argument_groups_keep_both_spellings(command):
    import importlib
    parse = importlib.import_module(command).parse_args
    a = vars(parse(["--matmul_precision", "default", "--xml_path", "x.xml", "--device", "cpu"]))
    b = vars(parse(["--matmul-precision", "default", "--xml-path", "x.xml", "--device", "cpu"]))
    assert a == b and a["matmul_precision"] == "default" and a["xml_path"] == "x.xml"


def test_run_turns_a_user_error_into_one_line(capsys):
    from tools.cli import check_backend, run

    def bad():
        check_backend("gpu")
        return 0
    assert run("tool.py", bad) == 2
    err = capsys.readouterr().err
    assert err == "tool.py: error: unknown --backend 'gpu': choose mujoco or mjx\n"
    assert run("tool.py", lambda: 7) == 7 and capsys.readouterr().err == ""
    with pytest.raises(ValueError):             # only user errors are shortened; bugs keep their traceback
        run("tool.py", lambda: int("x"))


def test_check_backend_names_every_choice():
    from tools.cli import check_backend
    check_backend("auto", ("auto", "mjx", "mujoco"))
    with pytest.raises(UserError, match=r"^unknown --backend 'x': choose auto, mjx or mujoco$"):
        check_backend("x", ("auto", "mjx", "mujoco"))


def test_no_command_is_imported_below_the_commands():
    """tools/ and demos/ never import a top-level command, and demos/ never imports torch."""
    import subprocess
    code = ("import sys, demos, demos.npz, demos.hdf5, tools.cli, tools.jumps, tools.evaluate, tools.rollout; "
            "bad = {'play', 'train', 'bench', 'collect_trajectories', 'dynaflow_data', 'torch'} & set(sys.modules); "
            "print(sorted(bad))")
    from conftest import REPO
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_write_picks_the_format_by_suffix(tmp_path):
    import h5py

    import demos
    steps = {k: np.zeros((2, 3), np.float32) for k in demos.STEP_FIELDS}
    episodes = dict(start=np.array([0], np.int64), length=np.array([2], np.int32), fell=np.array([False]))
    meta = dict(configs={"env": {}}, joint_names=["a"], format_version=demos.FORMAT_VERSION)
    demos.write(tmp_path / "d.h5", steps, episodes, meta)
    assert h5py.is_hdf5(tmp_path / "d.h5")
    ds = demos.load_dataset(tmp_path / "d.h5")
    assert len(ds) == 1 and ds.meta["joint_names"] == ["a"] and ds.episode(0)["qpos"].shape == (2, 3)
    assert demos.WRITERS[".npz"] is demos.npz.write_npz
    assert not list(tmp_path.glob(".*.tmp"))            # atomic: no temporary file left behind


@pytest.mark.parametrize("script, argv", [
    ("train.py", []), ("play.py", []), ("collect_trajectories.py", []), ("collect_trajectories.py", ["merge"]),
    ("collect_trajectories.py", ["convert"]), ("bench.py", []), ("bridge/policy.py", []),
    ("examples/train_dynaflow.py", []), ("examples/recover_actions.py", []), ("examples/deploy_onnx.py", [])])
def test_every_flag_says_what_it_does(script, argv, monkeypatch, capsys):
    """`--help` is a user's first reference: every flag of every command has a help text."""
    import argparse
    import runpy

    from conftest import REPO
    parsers = []
    parse = argparse.ArgumentParser.parse_args

    def recording(self, *a, **k):
        parsers.append(self)
        return parse(self, *a, **k)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", recording)
    main = runpy.run_path(str(REPO / script), run_name="help_check")["main"]
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0 and "usage:" in capsys.readouterr().out
    assert parsers
    for p in parsers:
        silent = [a.option_strings[0] for a in p._actions if a.option_strings and not a.help]
        assert silent == [], f"{p.prog}: flags without help: {silent}"
