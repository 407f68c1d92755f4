"""robot/: Unitree's messages byte for byte (CDR as cyclonedds writes it, CRC as the SDK computes it),
the SDK <-> policy joint map, the observation from a LowState_ against the deploy example's from
MuJoCo, a bad-CRC LowState_ dropped and counted over real DDS, and the one-line refusals."""
import importlib.util
import json
import random
import mujoco
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from mjx_env.config import JOINT_NAMES, EnvConfig, ObsConfig

from conftest import REPO

from robot import sdk, wire  # noqa: E402  (needs the robot extra: pip install -e '.[robot]')
from unitree_sdk2py.idl.default import unitree_go_msg_dds__LowCmd_, unitree_go_msg_dds__LowState_  # noqa: E402
from unitree_sdk2py.idl.unitree_go.msg.dds_ import LowCmd_, LowState_  # noqa: E402
from unitree_sdk2py.utils.crc import CRC  # noqa: E402

from robot.controller import ControllerConfig, Controller, Policy, observation  # noqa: E402
from robot.dds import Bus  # noqa: E402
from robot.sim import SimConfig, SimRobot  # noqa: E402


def fill_random(msg, layout, rng):
    """Random values in every field of an SDK message (ints within their type, floats as float32)."""
    values = []
    for name, current in zip(layout.names, layout.values(msg)):
        value = float(np.float32(rng.uniform(-100, 100))) if isinstance(current, float) else rng.randrange(0, 120)
        obj, parts = msg, name.replace("]", "").replace("[", ".").split(".")
        for p in parts[:-1]:
            obj = obj[int(p)] if p.isdigit() else getattr(obj, p)
        if parts[-1].isdigit():
            obj[int(parts[-1])] = value
        else:
            setattr(obj, parts[-1], value)
        values.append(value)
    return values


@pytest.mark.parametrize("make", [unitree_go_msg_dds__LowState_, unitree_go_msg_dds__LowCmd_])
def test_cdr_and_crc_match_cyclonedds_and_the_sdk(make):
    rng = random.Random(3)
    for _ in range(5):
        msg = make()
        codec = wire.Codec(type(msg), wire.header_of(msg))
        values = fill_random(msg, codec.layout, rng)
        ref = msg.serialize()
        assert codec.encode(values) == ref + b"\0" * (-len(ref) % 4)
        assert list(codec.decode(ref)) == values
        assert codec.crc(values) == CRC().Crc(msg)
        words = np.frombuffer(codec.layout.c.pack(*values), "<u4")[:-1]
        assert wire.crc32_py(words.astype(">u4").tobytes()) == CRC().Crc(msg)   # the pure-Python CRC too
    # The C layout sizes the SDK's CRC code states: LowState_ 1180 bytes, LowCmd_ 812.
    assert codec.layout.c.size == {LowState_: 1180, LowCmd_: 812}[type(msg)]


def test_crc32_is_mpeg2():
    # CRC-32/MPEG-2's catalogue check value: the CRC of the ASCII bytes "123456789".
    assert wire.crc32_py(b"123456789") == 0x0376E6E7


def test_lowcmd_as_the_robot_reads_it():
    msgs = sdk.Messages()
    q = np.linspace(-1, 1, 12)
    cmd = sdk.MotorCommand(q=q, dq=np.zeros(12), kp=np.full(12, 20.0), kd=np.full(12, 0.5), tau=np.arange(12.0))
    data = msgs.encode_cmd(cmd)
    back = LowCmd_.deserialize(data)                    # cyclonedds's own decoder
    assert list(back.head) == [0xFE, 0xEF] and back.level_flag == 0xFF
    assert np.allclose([m.q for m in back.motor_cmd[:12]], q, atol=1e-6)
    assert [m.kp for m in back.motor_cmd[:12]] == [20.0] * 12
    assert [m.tau for m in back.motor_cmd[:12]] == list(range(12))
    assert all(m.mode == 0x01 for m in back.motor_cmd)
    assert all(m.q == np.float32(sdk.POS_STOP) and m.kp == 0 for m in back.motor_cmd[12:])   # unused slots: off
    assert back.crc == CRC().Crc(back)
    decoded = msgs.decode_cmd(data)
    assert decoded.crc_ok and decoded.header_ok and np.allclose(decoded.q, q, atol=1e-6)
    bad = bytearray(data)
    bad[40] ^= 0x01                                     # one bit of motor 0's q flipped in transit
    assert not msgs.decode_cmd(bytes(bad)).crc_ok


def test_joint_map_round_trip():
    # A known pose in the SDK's order FR, FL, RR, RL (hip, thigh, calf): each value names its joint.
    sdk_pose = np.array([0.1, 0.8, -1.5, -0.1, 0.81, -1.51, 0.2, 1.0, -1.6, -0.2, 1.01, -1.61])
    assert sdk.SDK_JOINT_NAMES[:3] == ("FR_hip_joint", "FR_thigh_joint", "FR_calf_joint")
    same = sdk.JointMap(JOINT_NAMES)                    # this project's policies: the SDK's order
    assert np.array_equal(same.to_policy(sdk_pose), sdk_pose)
    # Menagerie's MJCF order FL, FR, RL, RR: the map moves whole legs.
    menagerie = [f"{leg}_{p}_joint" for leg in ("FL", "FR", "RL", "RR") for p in ("hip", "thigh", "calf")]
    jm = sdk.JointMap(menagerie)
    expected = np.array([-0.1, 0.81, -1.51, 0.1, 0.8, -1.5, -0.2, 1.01, -1.61, 0.2, 1.0, -1.6])
    assert np.array_equal(jm.to_policy(sdk_pose), expected)
    assert np.array_equal(jm.to_sdk(expected), sdk_pose)
    assert np.array_equal(jm.to_sdk(jm.to_policy(sdk_pose)), sdk_pose)
    with pytest.raises(sdk.UserError, match="12 Go2 joints"):
        sdk.JointMap(menagerie[:11] + ["FL_knee_joint"])


def deploy_example():
    spec = importlib.util.spec_from_file_location("deploy_onnx", REPO / "examples" / "deploy_onnx.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def meta_of(history=1, **override):
    """Deploy metadata as bridge.deploy writes it, from the task config (no torch needed)."""
    e, o = EnvConfig(), ObsConfig()
    meta = {"format": "go2-policy/1", "num_obs": o.num_obs, "num_actions": 12, "joint_names": list(JOINT_NAMES),
            "default_joint_pos": list(e.default_angles()), "kp": [e.kp] * 12, "kd": [e.kd] * 12,
            "torque_limits": [45.43 if n.endswith("calf_joint") else 23.7 for n in JOINT_NAMES],
            "action_scale": e.action_scale, "action_clip": e.clip_actions, "action_latency_steps": 1,
            "control_dt": e.dt, "sim_dt": e.sim_dt, "history_length": history,
            "observation_layout": [{"name": n, "size": s, "scale": list(c)} for n, s, c in o.policy_layout(12)],
            "command_names": ["lin_vel_x", "lin_vel_y", "ang_vel_z", "height", "jump"],
            "command_ranges": {"lin_vel_x": [-1, 2], "lin_vel_y": [-0.5, 0.5], "ang_vel_z": [-0.6, 0.6],
                               "height": [0.2, 0.4], "jump": [0.5, 1.5]},
            "base_init_pos": list(e.base_init_pos), "termination_roll_pitch_deg": [10, 10]}
    meta.update(override)
    return meta


def test_observation_from_lowstate_equals_the_deploy_examples(ref_xml):
    """MuJoCo state -> simulated robot's LowState_ bytes -> decode -> observation, against the deploy
    example's observation straight from qpos/qvel (which tests/test_deploy.py checks against the env's)."""
    example = deploy_example()
    meta = meta_of()
    robot = SimRobot(ref_xml, SimConfig(start="standing"))
    rng = np.random.default_rng(0)
    msgs = sdk.Messages()
    jm = sdk.JointMap(meta["joint_names"])
    m, d = robot.m, robot.d
    mjm = example.JointMap(m, meta["joint_names"])
    for _ in range(3):
        quat = rng.normal(size=4)
        d.qpos[3:7] = quat / np.linalg.norm(quat)
        d.qpos[robot.go2.qpos_idx] += rng.normal(scale=0.2, size=12)
        d.qvel[:] = rng.normal(size=m.nv)
        mujoco.mj_forward(m, d)
        robot.time += 1.0                                # a new physics time: fields recomputed
        s = msgs.decode_state(msgs.encode_state(tick=1, **robot.state_fields()))
        assert s.crc_ok
        last, command = rng.normal(size=12).astype(np.float32), np.array([0.5, -0.2, 0.3, 0.3, 0.0])
        ours = observation(meta, s.gyro, s.quat, jm.to_policy(s.q), jm.to_policy(s.dq), last, command)
        ref = example.observation(meta, mjm, d.qpos, d.qvel, last, command)
        np.testing.assert_allclose(ours, ref, atol=2e-6)   # LowState_ carries float32


def tiny_policy(path, meta, n_in=None, n_out=12, action=0.0):
    """An ONNX network obs -> actions (0 * obs + `action`) with the given metadata."""
    n_in = n_in or sum(t["size"] for t in meta["observation_layout"]) * meta["history_length"]
    w = helper.make_tensor("w", TensorProto.FLOAT, [n_in, n_out], np.zeros(n_in * n_out, np.float32))
    b = helper.make_tensor("b", TensorProto.FLOAT, [n_out], np.full(n_out, action, np.float32))
    graph = helper.make_graph([helper.make_node("MatMul", ["obs", "w"], ["wx"]),
                               helper.make_node("Add", ["wx", "b"], ["actions"])], "tiny",
                              [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", n_in])],
                              [helper.make_tensor_value_info("actions", TensorProto.FLOAT, ["batch", n_out])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=json.dumps(v))
    onnx.save(model, str(path))
    return path


def one_line_refusal(capsys, argv, text):
    from robot.deploy_cmd import main
    try:
        code = main(argv)
    except SystemExit as exc:        # argparse's errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("go2-deploy: error: ") and text in lines[0], err
    return lines[0]


def test_one_line_refusals(tmp_path, capsys):
    good = tiny_policy(tmp_path / "good.onnx", meta_of())
    bare = tiny_policy(tmp_path / "bare.onnx", {"history_length": 1,
                                                "observation_layout": meta_of()["observation_layout"]})
    lin_vel = meta_of(observation_layout=[{"name": "base_lin_vel", "size": 3, "scale": [2, 2, 2]}]
                      + meta_of()["observation_layout"])
    cases = [
        ([str(good)], "--interface is required"),
        ([str(good), "--interface", "nosuchif0"], "no network interface 'nosuchif0'"),
        ([str(tmp_path / "missing.onnx"), "--interface", "lo"], "policy not found"),
        ([str(tmp_path / "x.txt"), "--interface", "lo"], "not an ONNX model"),
        ([str(bare), "--interface", "lo"], "has no deploy metadata"),
        ([str(tiny_policy(tmp_path / "lv.onnx", lin_vel)), "--interface", "lo"], "observes base_lin_vel"),
        ([str(tiny_policy(tmp_path / "hist.onnx", meta_of(history=6), n_in=48)), "--interface", "lo"],
         "6 x 48 = 288 values, the network reads 48"),
        ([str(tiny_policy(tmp_path / "out.onnx", meta_of(), n_out=10)), "--interface", "lo"],
         "outputs 10 actions, the metadata lists 12 joints"),
        ([str(tiny_policy(tmp_path / "names.onnx", meta_of(joint_names=[n.replace("calf", "knee") for n in JOINT_NAMES]))),
          "--interface", "lo"], "joint_names must be the 12 Go2 joints"),
        ([str(good), "--interface", "lo", "--replay", str(tmp_path / "none.npz")], "replay file not found"),
        ([str(good), "--interface", "lo", "--domain", "300"], "--domain must lie in 0..232"),
        # Nobody publishes on this domain: after the 1 s probe for other controllers, 3 s for a LowState_.
        ([str(good), "--interface", "lo", "--domain", str(random.Random().randrange(1, 200))],
         "the robot is not answering: no LowState_ on rt/lowstate within 3 s"),
    ]
    (tmp_path / "x.txt").write_text("not a model")
    one_line_refusal(capsys, [str(good), "--interface", "lo", "--watchdog-ms", "0"], "--watchdog-ms must lie in")
    for argv, text in cases:
        one_line_refusal(capsys, argv, text)


@pytest.mark.parametrize("fast_io", [True, False])
def test_bad_crc_lowstate_dropped_and_counted(tmp_path, fast_io, monkeypatch):
    """Real DDS on loopback inside one process: 30 LowState_, every third with a wrong CRC; the
    controller's reader keeps the good ones and counts the others. Through the raw-bytes path and
    through cyclonedds's public write()/take() (any other cyclonedds version's path)."""
    monkeypatch.setattr(wire, "FAST_IO", fast_io and wire.FAST_IO)
    domain = random.Random().randrange(1, 200)
    bus = Bus(domain, "lo")
    policy = Policy(tiny_policy(tmp_path / "p.onnx", meta_of()))
    ctl = Controller(policy, bus, np.tile([[-np.inf, np.inf]], (12, 1)), ControllerConfig())
    _, LowState_type, Remote = sdk.message_types()
    ctl.state_reader = bus.reader(sdk.TOPIC_LOWSTATE, LowState_type)
    writer = bus.writer(sdk.TOPIC_LOWSTATE, LowState_type)
    msgs = sdk.Messages()
    import time
    zeros = np.zeros(12)
    for k in range(30):
        wire.write_raw(writer, msgs.encode_state(tick=k, quat=[1, 0, 0, 0], gyro=[0, 0, 0], accel=[0, 0, 9.81],
                                                 rpy=[0, 0, 0], q=zeros + k, dq=zeros, tau=zeros,
                                                 foot_force=[0, 0, 0, 0], corrupt_crc=k % 3 == 2))
        time.sleep(0.002)
        ctl._take_states()
    assert ctl.stats["bad_crc"] == 10 and ctl.stats["states"] == 20
    assert ctl.latest.tick == 28 and ctl.latest.q[0] == 28      # the last good one


class Harness:
    """A Controller on a real loopback bus, stepped by hand (no 500 Hz loop): this process plays the
    robot (LowState_, WirelessController_) and reads the controller's LowCmd_."""

    def __init__(self, tmp_path, action=0.0, cfg=ControllerConfig(stand_time_s=0.05)):
        self.bus = Bus(random.Random().randrange(1, 200), "lo")
        policy = Policy(tiny_policy(tmp_path / "p.onnx", meta_of(), action=action))
        from mjx_env.model import DEFAULT_XML
        from robot.controller import joint_ranges
        self.ranges = joint_ranges(DEFAULT_XML, policy.meta["joint_names"])
        self.ctl = Controller(policy, self.bus, self.ranges, cfg)
        LowCmd, LowState, Remote = sdk.message_types()
        self.ctl.state_reader = self.bus.reader(sdk.TOPIC_LOWSTATE, LowState)
        self.ctl.remote_reader = self.bus.reader(sdk.TOPIC_REMOTE, Remote)
        self.ctl.writer = self.bus.writer(sdk.TOPIC_LOWCMD, LowCmd)
        self.cmd_reader = self.bus.reader(sdk.TOPIC_LOWCMD, LowCmd)
        self.state_writer = self.bus.writer(sdk.TOPIC_LOWSTATE, LowState)
        self.remote_writer = self.bus.writer(sdk.TOPIC_REMOTE, Remote)
        self.msgs = sdk.Messages()
        self.q = np.array(meta_of()["default_joint_pos"])      # SDK order = this policy's order

    def state(self, quat=(1.0, 0.0, 0.0, 0.0)):
        zeros = np.zeros(12)
        wire.write_raw(self.state_writer, self.msgs.encode_state(
            tick=0, quat=quat, gyro=[0, 0, 0], accel=[0, 0, 9.81], rpy=[0, 0, 0], q=self.q, dq=zeros, tau=zeros,
            foot_force=[0, 0, 0, 0]))

    def tick(self, n=1):
        import time
        for _ in range(n):
            self.state()
            time.sleep(0.003)
            self.ctl.tick()
        return [self.msgs.decode_cmd(d) for d in wire.take_raw(self.cmd_reader)][-1]

    def walk(self):
        import time
        self.tick()
        self.ctl.stand()
        time.sleep(0.06)
        self.tick()
        self.ctl.walk()
        assert self.ctl.state == "Walk"


def test_passive_on_non_finite_action_and_tilt(tmp_path, capsys):
    h = Harness(tmp_path, action=float("nan"))
    h.walk()
    cmd = h.tick()
    assert h.ctl.state == "Passive" and np.all(cmd.kp == 0) and np.all(cmd.kd == ControllerConfig().damping_kd)
    assert "Passive (damping) from Walk: non-finite action" in capsys.readouterr().err
    h = Harness(tmp_path)
    h.walk()
    assert h.tick(3).kp[0] == 20.0                              # walking: the metadata's gains
    h.state(quat=(np.cos(0.6), np.sin(0.6), 0.0, 0.0))         # rolled by 1.2 rad
    import time
    time.sleep(0.003)
    h.ctl._take_states()
    h.ctl.tick()
    assert h.ctl.state == "Passive"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "from Walk: tilt 1.20 rad past 1" in err[0], err


def test_targets_clamped_to_joint_ranges(tmp_path):
    # Every action 100 (the clip): default + 0.3 * 100 = 30 rad past the default on every joint.
    h = Harness(tmp_path, action=100.0)
    h.walk()
    cmd = h.tick(12)                                           # one policy step, then its latency step
    q = h.ctl.p.joints.to_policy(cmd.q)
    assert np.allclose(q, h.ranges[:, 1], atol=1e-6)           # every target at its joint's upper limit
    assert np.all(h.ranges[:, 1] < h.ctl.p.default + 30.0)


def test_remote_buttons_and_sticks(tmp_path):
    """WirelessController_ over DDS: A stands, start walks, the sticks command within the trained
    ranges (ly 0.5 -> vx 0.5 * 2.0; lx 1 -> vy -0.5; rx -1 -> yaw +0.6), B is the e-stop."""
    h = Harness(tmp_path)
    h.tick()

    def remote(keys=(), lx=0.0, ly=0.0, rx=0.0):
        wire.write_raw(h.remote_writer, h.msgs.encode_remote(lx=lx, ly=ly, rx=rx, keys=keys))
        return h.tick()

    remote(keys=("A",))
    assert h.ctl.state == "Stand"
    import time
    time.sleep(0.06)
    remote()
    remote(keys=("start",), ly=0.5, lx=1.0, rx=-1.0)
    assert h.ctl.state == "Walk"
    assert np.allclose(h.ctl.command[:3], [1.0, -0.5, 0.6], atol=1e-6)
    cmd = remote(keys=("B",))
    assert h.ctl.state == "Passive" and np.all(cmd.kp == 0)


def test_every_flag_says_what_it_does():
    from robot import deploy_cmd, sim_cmd
    for parser in (deploy_cmd.parser(), sim_cmd.parser()):
        silent = [a.option_strings[0] for a in parser._actions if a.option_strings and not a.help]
        assert silent == [], f"{parser.prog}: flags without help: {silent}"
        assert all("_" not in o for a in parser._actions for o in a.option_strings if o.startswith("--"))


def test_no_stand_while_the_robot_is_silent(tmp_path, capsys):
    import time
    h = Harness(tmp_path)
    h.tick()
    time.sleep(0.05)                                           # no LowState_ for 50 ms: the watchdog
    h.ctl.tick()
    assert h.ctl.robot_lost and capsys.readouterr().err == ""  # Passive already: a stall says nothing
    time.sleep(0.25)
    h.ctl.tick()
    h.ctl.tick()
    assert capsys.readouterr().err.count("robot stopped answering") == 1
    h.ctl.stand()
    assert h.ctl.state == "Passive" and "Stand refused: the robot is not answering" in capsys.readouterr().err
    h.tick()                                                   # it answers again: Stand is allowed
    assert not h.ctl.robot_lost and "LowState_ again" in capsys.readouterr().out
    h.ctl.stand()
    assert h.ctl.state == "Stand"


def test_simulated_robot_motor_law_and_sensors(ref_xml):
    """The PD law each motor applies, POS_STOP switching the position term off, the torque limits,
    and what a standing robot's LowState_ says: upright, still, its weight on its feet."""
    robot = SimRobot(ref_xml, SimConfig(start="standing"))
    m, d = robot.m, robot.d
    q, dq = d.qpos[robot.go2.qpos_idx].copy(), np.linspace(-1, 1, 12)
    d.qvel[robot.go2.qvel_idx] = dq
    target = q + 0.1
    cmd = sdk.MotorCommand(q=target, dq=np.full(12, 0.5), kp=np.full(12, 20.0), kd=np.full(12, 2.0), tau=np.full(12, 1.0))
    robot.apply(cmd)                                 # SDK order = actuator order for JOINT_NAMES
    np.testing.assert_allclose(robot.torques(), 1.0 + 20.0 * 0.1 + 2.0 * (0.5 - dq), atol=1e-9)
    robot.apply(sdk.MotorCommand(q=np.full(12, sdk.POS_STOP), dq=np.full(12, sdk.VEL_STOP), kp=np.full(12, 20.0),
                                 kd=np.full(12, 2.0), tau=np.zeros(12)))
    np.testing.assert_allclose(robot.torques(), -2.0 * dq, atol=1e-9)   # damping only
    robot.apply(sdk.MotorCommand(q=q + 10, dq=np.zeros(12), kp=np.full(12, 100.0), kd=np.zeros(12), tau=np.zeros(12)))
    np.testing.assert_allclose(robot.torques(), [45.43 if n.endswith("calf_joint") else 23.7 for n in JOINT_NAMES])
    # Stand on the default pose with Unitree's stand gains, then read the sensors.
    d.qvel[:] = 0
    default = np.array(meta_of()["default_joint_pos"])
    robot.apply(sdk.MotorCommand(q=default, dq=np.zeros(12), kp=np.full(12, 60.0), kd=np.full(12, 5.0), tau=np.zeros(12)))
    for _ in range(int(2.0 / robot.dt)):
        robot.step()
    f = robot.state_fields()
    weight = mujoco.mj_getTotalmass(m) * 9.81
    assert abs(f["foot_force"].sum() - weight) < 0.05 * weight
    assert f["quat"][0] > 0.99 and np.abs(f["gyro"]).max() < 0.05
    np.testing.assert_allclose(f["accel"], [0, 0, 9.81], atol=0.2)      # specific force: gravity's opposite
    np.testing.assert_allclose(f["q"], default, atol=0.1)
    before = d.qvel[:2].copy()
    robot.cfg = SimConfig(push_velocity=1.0)
    robot.push()
    assert abs(np.linalg.norm(d.qvel[:2] - before) - 1.0) < 1e-9


def test_simulated_robot_drops_a_bad_lowcmd(ref_xml):
    """Over DDS in one process: a LowCmd_ with a bad CRC or a wrong header is dropped and counted,
    a good one is applied."""
    import time

    from robot.sim import SimProcess
    bus = Bus(random.Random().randrange(1, 200), "lo")
    proc = SimProcess(SimRobot(ref_xml, SimConfig(start="standing")), bus, duration=None)
    LowCmd, _, _ = sdk.message_types()
    writer = bus.writer(sdk.TOPIC_LOWCMD, LowCmd)
    msgs = sdk.Messages()
    good = msgs.encode_cmd(sdk.MotorCommand(q=np.ones(12), dq=np.zeros(12), kp=np.full(12, 5.0), kd=np.zeros(12),
                                            tau=np.zeros(12)))
    bad_crc = bytearray(good)
    bad_crc[40] ^= 0x04
    # A wrong header with a CRC that matches it: the robot still refuses a message not marked 0xFE 0xEF.
    msg = LowCmd.deserialize(good)
    msg.head = [0xFE, 0xEE]
    msg.crc = CRC().Crc(msg)
    for data in (bytes(bad_crc), msg.serialize() + b"\0" * (-len(msg.serialize()) % 4), good):
        wire.write_raw(writer, data)
        time.sleep(0.003)
        proc._take_command()
    assert proc.counts["bad_crc"] == 1 and proc.counts["bad_header"] == 1 and proc.counts["commands"] == 1
    assert np.allclose(proc.robot.cmd.q, 1.0) and np.allclose(proc.robot.cmd.kp, 5.0)


def test_replay_file_of_dynaflow_episodes(tmp_path):
    """--replay reads DynaFlow's NPZ (per-episode object arrays, demos/npz.py) or one (T, 12) array."""
    from robot.controller import load_replay
    episodes = np.empty(2, dtype=object)
    episodes[0], episodes[1] = np.zeros((5, 12), np.float32), np.ones((7, 12), np.float32)
    np.savez(tmp_path / "demos.npz", actions=episodes)
    assert load_replay(tmp_path / "demos.npz", 1).shape == (7, 12) and load_replay(tmp_path / "demos.npz", 1)[0, 0] == 1
    np.savez(tmp_path / "one.npz", actions=np.full((3, 12), 0.5))
    assert load_replay(tmp_path / "one.npz", 0).shape == (3, 12)
    with pytest.raises(sdk.UserError, match="has 2 episodes, --episode 2"):
        load_replay(tmp_path / "demos.npz", 2)
    np.savez(tmp_path / "bad.npz", actions=np.full((3, 11), 0.5))
    with pytest.raises(sdk.UserError, match=r"shape \(T, 12\), got \(3, 11\)"):
        load_replay(tmp_path / "bad.npz", 0)
    np.savez(tmp_path / "none.npz", states=np.zeros(3))
    with pytest.raises(sdk.UserError, match="cannot read actions from"):
        load_replay(tmp_path / "none.npz", 0)
