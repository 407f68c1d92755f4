"""play.py --protocol (the README's accuracy tables), its figures (the signed v_x bias per commanded-speed
bin, the yaw rate at a zero yaw command), --model menagerie, and the policy's task name."""
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from tools.evaluate import KEYS, OPTIONAL_KEYS, PROTOCOLS, VxBias, ZeroYaw


def test_vx_bias_bins_computed_by_hand():
    """Three steps of four envs; bins 0.25 m/s wide, k*0.25 <= command < (k+1)*0.25, backward ones included."""
    bias = VxBias()
    cmd = np.array([-0.40, -0.25, 0.30, 0.90], np.float32)
    # step 1: every env counts
    bias.add(cmd, np.array([-0.30, -0.20, 0.25, 0.95]), np.array([True, True, True, True]))
    # step 2: env 3 left out (a fall's last step, or before its command settled)
    bias.add(cmd, np.array([-0.36, -0.29, 0.33, 0.00]), np.array([True, True, True, False]))
    # step 3: only env 0
    bias.add(cmd, np.array([-0.50, 9.00, 9.00, 9.00]), np.array([True, False, False, False]))
    s = bias.summary()
    # env 0 (-0.40, bin -0.50..-0.25): errors +0.10, +0.04, -0.10 -> mean +0.04/3
    # env 1 (-0.25 is the lower edge of -0.25..+0.00): errors +0.05, -0.04 -> +0.005
    # env 2 (0.30, bin +0.25..+0.50): errors -0.05, +0.03 -> -0.01
    # env 3 (0.90, bin +0.75..+1.00): error +0.05 (one step)
    assert list(s["vx_bias_by_command"]) == ["-0.50..-0.25", "-0.25..+0.00", "+0.25..+0.50", "+0.75..+1.00"]
    assert list(s["vx_bias_by_command"].values()) == pytest.approx([0.04 / 3, 0.005, -0.01, 0.05], abs=1e-6)
    assert s["vx_bias_steps_by_command"] == {"-0.50..-0.25": 3, "-0.25..+0.00": 2, "+0.25..+0.50": 2,
                                             "+0.75..+1.00": 1}
    # all 8 steps: (0.04 + 0.01 - 0.02 + 0.05) / 8
    assert s["vx_bias"] == pytest.approx(0.08 / 8, abs=1e-6)
    assert s["max_abs_vx_bias"] == pytest.approx(0.05, abs=1e-6)


def test_vx_bias_without_steps_is_empty():
    s = VxBias().summary()
    assert s["vx_bias_by_command"] == {} and s["vx_bias"] is None and math.isnan(s["max_abs_vx_bias"])


def test_zero_yaw_split_computed_by_hand():
    """Two envs; env 1 is commanded a turn (left out). Env 0's first episode: settled yaw rates 0.1, 0.3
    (steady turn 0.2, sway 0.1); its second, cut short: -0.2, -0.2 (steady 0.2, sway 0)."""
    z = ZeroYaw(2)
    yaw_cmd = np.array([0.0, 0.4])
    on = np.array([True, True])
    no = np.array([False, False])
    steps = [  # (yaw rate of env 0, settled, done)
        (0.5, False, False),      # before the command settled: in the mean |error|, not in the split
        (0.1, True, False),
        (0.3, True, False),
        (0.7, True, True),        # the episode's last step: in the mean |error|, not in the split
        (-0.2, True, False),
        (-0.2, True, False),
    ]
    for rate, settled, done in steps:
        z.add(yaw_cmd, np.array([rate, 0.4]), on, np.array([settled, settled]), np.array([done, done]))
    z.add(yaw_cmd, np.array([5.0, 5.0]), no, on, no)          # not counting (its episodes are done)
    s = z.summary()
    assert s["mean_abs_yaw_rate_error_at_zero_yaw_cmd"] == pytest.approx((0.5 + 0.1 + 0.3 + 0.7 + 0.2 + 0.2) / 6)
    assert s["yaw_steady_turn_at_zero_yaw_cmd"] == pytest.approx(0.2)
    assert s["yaw_sway_rms_at_zero_yaw_cmd"] == pytest.approx(0.05)       # (0.1 + 0.0) / 2
    none = ZeroYaw(1)
    none.add(np.array([0.3]), np.array([0.3]), np.array([True]), np.array([True]), np.array([False]))
    assert set(none.summary().values()) == {None}


def test_protocols_set_defaults_and_explicit_flags_win():
    import play
    plain = vars(play.parse_args([]))
    assert plain["protocol"] is None and plain["model"] is None
    assert (plain["vx"], plain["vy"], plain["yaw"], plain["push"]) == ([0.3, 1.0], [0.0], [0.0], 0.0)
    omni = play.parse_args(["--protocol", "omni"])
    assert (omni.vx, omni.vy, omni.yaw, omni.height) == ([-0.5, 1.0], [-0.3, 0.3], [-0.5, 0.5], [0.3])
    assert (omni.num_envs, omni.duration, omni.episodes, omni.seed, omni.push) == (64, 20.0, 1, 0, 0.0)
    assert PROTOCOLS["omni"].overrides(omni) == {}
    push = play.parse_args(["--protocol", "push"])
    assert (push.vx, push.yaw, push.push, push.push_every) == ([0.3, 1.0], [0.0], 1.0, 4.0)
    assert play.parse_args(["--protocol", "yaw"]).yaw == [-0.6, 0.6]
    assert vars(play.parse_args(["--protocol", "forward"])) == {**plain, "protocol": "forward"}
    mixed = play.parse_args(["--vx", "0.5", "--protocol", "omni", "--num_envs", "4", "--seed", "0"])
    assert (mixed.vx, mixed.vy, mixed.num_envs) == ([0.5], [-0.3, 0.3], 4)
    assert PROTOCOLS["omni"].overrides(mixed) == {"vx": [0.5], "num_envs": 4}      # --seed 0 is the protocol's
    for spelling in ("--num-envs", "--num_envs", "-B"):
        assert play.parse_args([spelling, "3"]).num_envs == 3


def test_bad_protocol_and_model_flags_are_one_line(tmp_path, monkeypatch, capsys):
    import play
    with pytest.raises(SystemExit) as e:
        play.parse_args(["--protocol", "sideways"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "--protocol" in err and "omni" in err
    assert play.main(["--model", "menagerie", "--xml-path", "x.xml"]) == 2
    assert capsys.readouterr().err == ("play.py: error: --model menagerie and --xml-path x.xml both name a "
                                       "model: give one\n")
    monkeypatch.setenv("GO2_MENAGERIE", str(tmp_path))
    assert play.main(["--model", "menagerie", "-B", "1", "--duration", "0.1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"play.py: error: MuJoCo Menagerie's Go2 not found at {tmp_path / 'scene.xml'}: ")
    assert len(err.splitlines()) == 1 and "GO2_MENAGERIE" in err


def test_model_flag_resolves_through_menagerie_scene(ref_xml, monkeypatch):
    from tools.evaluate import model_path
    monkeypatch.setenv("GO2_MENAGERIE", str(ref_xml.parent))
    assert model_path(SimpleNamespace(model="menagerie", xml_path=None)) == str(ref_xml)
    assert model_path(SimpleNamespace(model="training", xml_path=None)) is None
    assert model_path(SimpleNamespace(model=None, xml_path="a.xml")) == "a.xml"


def test_task_name_from_the_policy_file():
    from tools.rollout import PolicyLoop

    def task(actor):
        return PolicyLoop.task(SimpleNamespace(actor=actor))
    assert task(SimpleNamespace(saved={"actor_state_dict": {}, "iter": 3, "task": "Go2-Velocity-Walker"})) \
        == "Go2-Velocity-Walker"
    assert task(SimpleNamespace(saved={"actor_state_dict": {}, "iter": 3})) is None      # files before tasks
    assert task(SimpleNamespace(metadata={"task": "Go2-Jump", "history_length": 1})) == "Go2-Jump"   # ONNX
    assert task(SimpleNamespace(metadata={})) is None


def test_play_shows_an_onnx_policys_task(tmp_path, capsys):
    """An exported ONNX policy whose metadata names its task: play's header line and --json carry it."""
    import onnx

    import play
    from bridge.policy import SHIPPED_POLICY, export_actor
    path = tmp_path / "walker.onnx"
    export_actor(SHIPPED_POLICY, path)
    proto = onnx.load(path)
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key != "task"]
    del proto.metadata_props[:]
    for key, value in kept + [("task", json.dumps("Go2-Velocity-Walker"))]:
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, path)
    out = tmp_path / "m.json"
    assert play.main(["--checkpoint", str(path), "-B", "1", "--duration", "0.1", "--no-progress",
                      "--json", str(out)]) == 0
    head = capsys.readouterr().out.splitlines()[0]
    assert head.startswith("model ") and head.endswith(", task Go2-Velocity-Walker")
    assert json.loads(out.read_text())["task"] == "Go2-Velocity-Walker"


def run_play(tmp_path, capsys, *argv):
    import play
    out = tmp_path / "m.json"
    assert play.main([*argv, "--no-progress", "--json", str(out)]) == 0
    return json.loads(out.read_text()), capsys.readouterr().out.splitlines()


def test_omni_protocol_run_reports_the_tables_figures(tmp_path, capsys):
    """The shipped policy under --protocol omni, shortened to 4 envs x 3 s (150 steps of 0.02 s). The bias
    counts each env's steps after its first second (50 steps), less the episode's last: 99 per env."""
    m, lines = run_play(tmp_path, capsys, "--protocol", "omni", "-B", "4", "--duration", "3")
    assert set(m) == set(KEYS) - {"jump"}                   # the shipped policy has an estimator
    assert set(KEYS) - set(m) <= set(OPTIONAL_KEYS)
    assert m["protocol"] == "omni" and m["protocol_overrides"] == {"num_envs": 4, "duration": 3.0}
    assert m["commands"] == {"vx": [-0.5, 1.0], "vy": [-0.3, 0.3], "yaw": [-0.5, 0.5], "height": [0.3, 0.3]}
    assert m["episodes"] == 4 and m["falls"] == 0 and m["fall_rate"] == 0.0
    for k in ("mean_abs_vx_error", "mean_abs_vy_error", "mean_abs_yaw_rate_error", "vx_bias"):
        assert math.isfinite(m[k]), k
    assert 0 < m["mean_abs_vx_error"] < 0.3 and 0 < m["mean_abs_yaw_rate_error"] < 0.5
    bins, steps = m["vx_bias_by_command"], m["vx_bias_steps_by_command"]
    assert list(bins) == list(steps) and sum(steps.values()) == 4 * 99
    assert all(-0.5 <= float(b.split("..")[0]) and float(b.split("..")[1]) <= 1.0 for b in bins)
    assert m["vx_bias"] == pytest.approx(sum(bins[b] * steps[b] for b in bins) / (4 * 99), abs=1e-9)
    assert m["max_abs_vx_bias"] == pytest.approx(max(abs(v) for v in bins.values()))
    assert m["mean_abs_yaw_rate_error_at_zero_yaw_cmd"] is None      # every omni command turns
    assert math.isfinite(m["estimator_abs_error_m_s"]["x"])
    assert lines[0].startswith("model ") and ", protocol omni (changed: --num-envs 4 --duration 3)" in lines[0]
    assert lines[-1] == (f"omni: v_x {m['mean_abs_vx_error']:.3f} | yaw {m['mean_abs_yaw_rate_error']:.3f} | bias "
                         + ", ".join(f"{v:+.3f}" for v in bins.values())
                         + f" | falls 0 of 4 | est. {m['estimator_abs_error_m_s']['x']:.3f}")


def test_forward_protocol_yaw_error_is_all_at_zero_yaw_command(tmp_path, capsys):
    """Under --protocol forward every step's yaw command is 0: the zero-yaw figure is the yaw error."""
    m, lines = run_play(tmp_path, capsys, "--protocol", "forward", "-B", "2", "--duration", "2")
    assert m["mean_abs_yaw_rate_error_at_zero_yaw_cmd"] == pytest.approx(m["mean_abs_yaw_rate_error"], rel=1e-6)
    turn, sway = m["yaw_steady_turn_at_zero_yaw_cmd"], m["yaw_sway_rms_at_zero_yaw_cmd"]
    assert 0 <= turn < 0.3 and 0 < sway < 0.3
    assert all(0.25 <= float(b.split("..")[0]) < 1.0 for b in m["vx_bias_by_command"])
    assert sum(m["vx_bias_steps_by_command"].values()) == 2 * 49
    assert any(ln.strip().startswith("at yaw command 0") for ln in lines)
