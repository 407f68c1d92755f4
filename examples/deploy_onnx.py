"""Walk the Go2 with an exported ONNX policy: numpy, mujoco and onnxruntime only.

    python -m bridge.policy policies/go2_walk.pt go2_walk.onnx          # export (in this repository)
    python examples/deploy_onnx.py go2_walk.onnx --vx 0.5 --duration 20
    python examples/deploy_onnx.py go2_walk.onnx --xml ../shared/reference/unitree_go2/scene.xml

This is what a robot-side integration does, with MuJoCo standing in for the robot. Everything the
policy's numbers mean comes from the ONNX metadata: joint names in action order, default pose,
PD gains and torque limits, action scale and latency, control period, observation layout and
scales. Joints are found by name, so any Go2 MJCF works whatever its joint or actuator order.
The PD law runs at every physics step, as a motor driver would: torque = kp (target - q) - kd qdot,
clipped to the torque limits, applied through one motor per joint.

Nothing here imports torch, JAX or the training code.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import deque
from pathlib import Path

import mujoco
import numpy as np
import onnxruntime as ort

DEFAULT_XML = Path(__file__).resolve().parent.parent / "Unitree_go2" / "go2_mjx_gym.xml"


def load_policy(path):
    """An onnxruntime session and its metadata (JSON values)."""
    if not Path(path).is_file():
        raise ValueError(f"ONNX policy not found: {path} (export one: python -m bridge.policy CKPT out.onnx)")
    state = ort.capi.onnxruntime_pybind11_state
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except (state.Fail, state.InvalidProtobuf, state.InvalidGraph, state.InvalidArgument) as exc:
        raise ValueError(f"{path} is not an ONNX model onnxruntime can load ({str(exc).splitlines()[0][:120]})") from None
    meta = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
    return session, meta


class JointMap:
    """Where each policy joint (action order) lives in a model's qpos and qvel, found by name."""

    def __init__(self, m: mujoco.MjModel, joint_names):
        ids = [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, n) for n in joint_names]
        missing = [n for n, i in zip(joint_names, ids) if i < 0]
        if missing:
            raise ValueError(f"the model has no joint(s) {missing}")
        self.qpos = np.array([m.jnt_qposadr[i] for i in ids])
        self.qvel = np.array([m.jnt_dofadr[i] for i in ids])
        free = [j for j in range(m.njnt) if m.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE]
        if len(free) != 1:
            raise ValueError("the model needs exactly one free joint (the floating base)")
        self.base_qpos, self.base_qvel = int(m.jnt_qposadr[free[0]]), int(m.jnt_dofadr[free[0]])


def rotate_inverse(quat, v):
    """A world-frame vector in the body frame of the unit quaternion (w, x, y, z)."""
    w, u = quat[0], quat[1:]
    t = 2.0 * np.cross(u, v)
    return v - w * t + np.cross(u, t)


def base_state(jm: JointMap, qpos, qvel):
    quat = qpos[jm.base_qpos + 3:jm.base_qpos + 7]
    quat = quat / np.linalg.norm(quat)
    return dict(quat=quat, height=qpos[jm.base_qpos + 2],
                lin_vel=rotate_inverse(quat, qvel[jm.base_qvel:jm.base_qvel + 3]),   # free joint: world frame
                ang_vel=qvel[jm.base_qvel + 3:jm.base_qvel + 6])                     # free joint: body frame


def observation(meta, jm: JointMap, qpos, qvel, last_action, command) -> np.ndarray:
    """The policy input, term by term as the metadata's observation_layout lists it."""
    b = base_state(jm, qpos, qvel)
    raw = {
        "base_lin_vel": b["lin_vel"],       # only a policy trained with --actor-lin-vel reads it
        "base_ang_vel": b["ang_vel"],
        "projected_gravity": rotate_inverse(b["quat"], np.array([0.0, 0.0, -1.0])),
        "commands": command,
        "joint_pos": qpos[jm.qpos] - np.asarray(meta["default_joint_pos"]),
        "joint_vel": qvel[jm.qvel],
        "last_action": last_action,
        "jump_phase": np.zeros(1),          # no jump commands here
    }
    parts = []
    for term in meta["observation_layout"]:
        if term["name"] not in raw:
            raise ValueError(f"unknown observation term {term['name']!r} in the policy metadata")
        value = np.asarray(raw[term["name"]], np.float64).reshape(-1)
        if value.size != term["size"]:
            raise ValueError(f"observation term {term['name']} has {value.size} values, the policy expects "
                             f"{term['size']}")
        parts.append(value * np.asarray(term["scale"]))
    return np.concatenate(parts).astype(np.float32)


def build_model(xml_path, meta) -> mujoco.MjModel:
    """The MJCF with one torque motor per policy joint, in action order, and the training physics step."""
    spec = mujoco.MjSpec.from_file(str(xml_path))
    for key in list(spec.keys):          # keyframes hold ctrl vectors of the actuators replaced below
        spec.delete(key)
    for act in list(spec.actuators):
        spec.delete(act)
    for name, limit in zip(meta["joint_names"], meta["torque_limits"]):
        spec.add_actuator(name=f"{name}_motor", target=name, trntype=mujoco.mjtTrn.mjTRN_JOINT,
                          ctrllimited=mujoco.mjtLimited.mjLIMITED_TRUE, ctrlrange=[-limit, limit])
    if not any(g.type == mujoco.mjtGeom.mjGEOM_PLANE for g in spec.worldbody.geoms):
        spec.worldbody.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[0, 0, 0.05])
    spec.option.timestep = meta["sim_dt"]
    return spec.compile()


class Robot:
    """MuJoCo standing in for the robot: joint PD at every physics step, policy at control_dt."""

    def __init__(self, meta, xml_path=DEFAULT_XML):
        self.meta = meta
        self.m = build_model(xml_path, meta)
        self.d = mujoco.MjData(self.m)
        self.jm = JointMap(self.m, meta["joint_names"])
        self.default = np.asarray(meta["default_joint_pos"])
        self.kp, self.kd = np.asarray(meta["kp"]), np.asarray(meta["kd"])
        self.limit = np.asarray(meta["torque_limits"])
        self.substeps = int(round(meta["control_dt"] / meta["sim_dt"]))
        self.reset()

    def reset(self):
        mujoco.mj_resetData(self.m, self.d)
        self.d.qpos[self.jm.base_qpos:self.jm.base_qpos + 3] = self.meta["base_init_pos"]
        self.d.qpos[self.jm.base_qpos + 3:self.jm.base_qpos + 7] = (1.0, 0.0, 0.0, 0.0)
        self.d.qpos[self.jm.qpos] = self.default
        n = self.meta["num_actions"]
        self.last_action = np.zeros(n, np.float32)
        # Actions wait action_latency_steps control periods before they reach the motors.
        self.pending = deque([np.zeros(n)] * self.meta["action_latency_steps"])
        mujoco.mj_forward(self.m, self.d)

    def observe(self, command) -> np.ndarray:
        return observation(self.meta, self.jm, self.d.qpos, self.d.qvel, self.last_action, command)

    def step(self, action):
        """One control period: the PD target of the action due now, held for every physics step."""
        clip = self.meta["action_clip"]
        action = np.clip(np.asarray(action, np.float64), -clip, clip)
        self.pending.append(action)
        target = self.default + self.meta["action_scale"] * self.pending.popleft()
        for _ in range(self.substeps):
            q, qd = self.d.qpos[self.jm.qpos], self.d.qvel[self.jm.qvel]
            self.d.ctrl[:] = np.clip(self.kp * (target - q) - self.kd * qd, -self.limit, self.limit)
            mujoco.mj_step(self.m, self.d)
        self.last_action = action.astype(np.float32)


class History:
    """The policy input: the last history_length observations, oldest first, as one row. At an
    episode's start every slot holds its first observation (metadata history_fill)."""

    def __init__(self, meta):
        self.n = int(meta.get("history_length", 1))
        self.frames = deque(maxlen=self.n)

    def push(self, obs: np.ndarray) -> np.ndarray:
        if not self.frames:
            self.frames.extend([obs] * self.n)
        else:
            self.frames.append(obs)
        return np.concatenate(self.frames)


def run(policy_path, xml_path, command, duration) -> dict:
    session, meta = load_policy(policy_path)
    robot = Robot(meta, xml_path)
    max_tilt = np.deg2rad(meta["termination_roll_pitch_deg"])
    errors, fell_at = [], None
    history = History(meta)
    for k in range(int(round(duration / meta["control_dt"]))):
        action = session.run(None, {"obs": history.push(robot.observe(command))[None]})[0][0]
        robot.step(action)
        b = base_state(robot.jm, robot.d.qpos, robot.d.qvel)
        errors.append(np.abs([b["lin_vel"][0] - command[0], b["lin_vel"][1] - command[1],
                              b["ang_vel"][2] - command[2], b["height"] - command[3]]))
        w, x, y, z = b["quat"]
        roll = np.arctan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
        pitch = np.arcsin(np.clip(2 * (w * y - z * x), -1, 1))
        if abs(roll) > max_tilt[0] or abs(pitch) > max_tilt[1]:
            fell_at = (k + 1) * meta["control_dt"]
            break
    e = np.mean(errors, axis=0)
    return {"mean_abs_vx_error": e[0], "mean_abs_vy_error": e[1], "mean_abs_yaw_rate_error": e[2],
            "mean_abs_height_error": e[3], "fell_at_s": fell_at, "steps": len(errors)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("policy", help="ONNX policy exported by python -m bridge.policy CKPT out.onnx")
    p.add_argument("--xml", default=str(DEFAULT_XML), help="Go2 MJCF (e.g. Menagerie scene.xml)")
    p.add_argument("--vx", type=float, default=0.5, help="forward velocity command (m/s)")
    p.add_argument("--vy", type=float, default=0.0, help="lateral velocity command (m/s)")
    p.add_argument("--yaw", type=float, default=0.0, help="yaw-rate command (rad/s)")
    p.add_argument("--height", type=float, default=0.3, help="base height command (m)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds")
    args = p.parse_args(argv)
    command = np.array([args.vx, args.vy, args.yaw, args.height, 0.0])
    try:
        res = run(args.policy, args.xml, command, args.duration)
    except (OSError, ValueError, KeyError, ort.capi.onnxruntime_pybind11_state.Fail) as exc:
        print(f"deploy_onnx.py: error: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"{Path(args.xml).name}, command vx {args.vx} vy {args.vy} yaw {args.yaw} height {args.height}, "
          f"{res['steps']} control steps")
    for k in ("mean_abs_vx_error", "mean_abs_vy_error", "mean_abs_yaw_rate_error", "mean_abs_height_error"):
        print(f"  {k:<26} {res[k]:.4f}")
    print(f"  {'fell':<26} " + ("no" if res["fell_at_s"] is None else f"at {res['fell_at_s']:.2f} s"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
