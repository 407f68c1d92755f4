"""The simulated Go2: MuJoCo playing the robot on Unitree's topics, as unitree_mujoco does.

Every physics step (the MJCF's own timestep) each motor applies the law of the latest valid LowCmd_:
tau + kp (q - q_m) + kd (dq - dq_m), clipped to the motor's torque limit (a q of POS_STOP or a dq
of VEL_STOP switches that term off, as on the robot). LowState_ goes out every 2 ms (500 Hz) with
the IMU (orientation, body-frame gyro and specific force, roll-pitch-yaw), the 12 motors' q, dq and
torque, the four feet's contact forces (N) and its CRC. A LowCmd_ whose CRC or header is wrong is
dropped and counted, as the robot drops it. Until the first LowCmd_ the motors are off.

The loop runs in wall-clock time: when the process falls behind (a loaded machine) physics catches
up step by step; a lag of more than MAX_LAG_S is skipped and counted instead.
"""
from __future__ import annotations

import dataclasses
import signal
import time
from dataclasses import dataclass

import mujoco
import numpy as np

from mjx_env.config import JOINT_NAMES, LEGS, EnvConfig
from robot import sdk, wire

MAX_LAG_S = 0.25


@dataclass(frozen=True)
class SimConfig:
    state_dt: float = 0.002                      # LowState_ period (500 Hz, as the robot)
    # "lying": on its belly, legs folded at Unitree's lie-down angles (the SDK stand example's first
    # target), motors off: how a robot is found when powered on. "standing": the training's reset pose.
    start: str = "lying"
    lying_joint_pos: tuple = (0.0, 1.36, -2.65)  # hip, thigh, calf of every leg (rad)
    lying_base_height: float = 0.14              # m: drops a few cm onto its belly in the first steps
    push_velocity: float = 0.0                   # m/s horizontal kick every push_every_s (0: none)
    push_every_s: float = 4.0
    corrupt_crc_every: int = 0                   # every Nth LowState_ with a wrong CRC (0: never; tests)
    log_every: int = 1                           # physics steps between rows of the ground-truth log


def quat_to_rpy(q):
    w, x, y, z = q
    roll = np.arctan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = np.arcsin(np.clip(2 * (w * y - z * x), -1.0, 1.0))
    yaw = np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return np.array([roll, pitch, yaw])


def rotate_inverse(quat, v):
    """A world-frame vector in the body frame of the unit quaternion (w, x, y, z)."""
    conj, out = np.empty(4), np.empty(3)
    mujoco.mju_negQuat(conj, np.asarray(quat, float))
    mujoco.mju_rotVecQuat(out, np.asarray(v, float), conj)
    return out


class SimRobot:
    """The physics, without the bus: apply(cmd), step(), state()."""

    def __init__(self, xml_path=None, cfg: SimConfig = SimConfig(), seed: int = 0):
        from mjx_env.model import DEFAULT_XML, load_go2, load_spec
        xml_path = DEFAULT_XML if xml_path is None else xml_path
        timestep = load_spec(xml_path).option.timestep           # the model's own physics step
        go2 = load_go2(xml_path, dataclasses.replace(EnvConfig(), sim_dt=timestep))
        self.cfg, self.go2 = cfg, go2
        self.m = go2.mj_model
        # load_go2 makes actuator i a PD servo of JOINT_NAMES[i]; here it becomes a torque motor
        # (force = ctrl, clipped to the same forcerange): the PD law is the motor driver's, below.
        self.m.actuator_gainprm[:, :] = 0.0
        self.m.actuator_gainprm[:, 0] = 1.0
        self.m.actuator_biasprm[:, :] = 0.0
        self.limit = self.m.actuator_forcerange[:, 1].copy()
        self.d = mujoco.MjData(self.m)
        self.dt = float(self.m.opt.timestep)
        self.motors = sdk.JointMap(JOINT_NAMES)                   # actuator order <-> SDK motor order
        self.rng = np.random.default_rng(seed)
        self.cmd: sdk.MotorCommand | None = None
        self.base = int(go2.base_qpos_adr), int(go2.base_qvel_adr)
        # foot geom id -> its leg's index in LowState_.foot_force (the SDK's leg order)
        self._foot_leg = {gid: sdk.SDK_LEGS.index(leg) for leg, gid in zip(LEGS, go2.foot_geom_ids) if gid >= 0}
        self.reset()

    def reset(self):
        mujoco.mj_resetData(self.m, self.d)
        self.d.qpos[:] = self.go2.init_qpos
        if self.cfg.start == "lying":
            self.d.qpos[self.go2.qpos_idx] = np.tile(self.cfg.lying_joint_pos, 4)
            self.d.qpos[self.base[0] + 2] = self.cfg.lying_base_height
        mujoco.mj_forward(self.m, self.d)
        self.cmd = None
        self.time = 0.0
        self._fields_at = None

    def apply(self, cmd: sdk.MotorCommand):
        self.cmd = cmd

    def torques(self) -> np.ndarray:
        """The motor law of the latest command, actuator order."""
        if self.cmd is None:
            return np.zeros(self.m.nu)
        c = {f: self.motors.to_policy(getattr(self.cmd, f)) for f in ("q", "dq", "kp", "kd", "tau")}
        q, dq = self.d.qpos[self.go2.qpos_idx], self.d.qvel[self.go2.qvel_idx]
        pos = np.where(np.abs(c["q"]) < 1e8, c["kp"] * (c["q"] - q), 0.0)
        vel = c["kd"] * (np.where(np.abs(c["dq"]) < 1e4, c["dq"], 0.0) - dq)
        return np.clip(c["tau"] + pos + vel, -self.limit, self.limit)

    def step(self):
        self.d.ctrl[:] = self.torques()
        mujoco.mj_step(self.m, self.d)
        self.time += self.dt

    def push(self):
        angle = self.rng.uniform(0, 2 * np.pi)
        self.d.qvel[self.base[1]:self.base[1] + 2] += self.cfg.push_velocity * np.array([np.cos(angle), np.sin(angle)])

    def truth(self) -> np.ndarray:
        """Ground truth for the logs: simulated time, base x y z, roll pitch yaw, body-frame linear velocity,
        body-frame angular velocity (13 values)."""
        p, v = self.base
        quat = self.d.qpos[p + 3:p + 7] / np.linalg.norm(self.d.qpos[p + 3:p + 7])
        lin = rotate_inverse(quat, self.d.qvel[v:v + 3])
        return np.concatenate([[self.time], self.d.qpos[p:p + 3], quat_to_rpy(quat), lin, self.d.qvel[v + 3:v + 6]])

    def state_fields(self) -> dict:
        """The LowState_ contents, SDK motor order (computed once per physics step)."""
        if self._fields_at != self.time:
            self._fields, self._fields_at = self._state_fields(), self.time
        return self._fields

    def _state_fields(self) -> dict:
        p, v = self.base
        quat = self.d.qpos[p + 3:p + 7] / np.linalg.norm(self.d.qpos[p + 3:p + 7])
        # Specific force as an accelerometer reads it: the base's acceleration minus gravity, body frame.
        accel = rotate_inverse(quat, self.d.qacc[v:v + 3] - self.m.opt.gravity)
        feet = np.zeros(4)
        ncon = self.d.ncon
        if ncon:
            force = np.zeros(6)
            for i, (g1, g2) in enumerate(zip(self.d.contact.geom1[:ncon].tolist(), self.d.contact.geom2[:ncon].tolist())):
                leg = self._foot_leg.get(g1, self._foot_leg.get(g2))
                if leg is not None:
                    mujoco.mj_contactForce(self.m, self.d, i, force)
                    feet[leg] += abs(force[0])
        to_sdk = self.motors.to_sdk
        return dict(quat=quat, gyro=self.d.qvel[v + 3:v + 6].copy(), accel=accel, rpy=quat_to_rpy(quat),
                    q=to_sdk(self.d.qpos[self.go2.qpos_idx]), dq=to_sdk(self.d.qvel[self.go2.qvel_idx]),
                    tau=to_sdk(self.d.actuator_force.copy()), foot_force=feet)


class SimProcess:
    """The robot on the bus: LowCmd_ in, LowState_ out, in wall-clock time."""

    def __init__(self, robot: SimRobot, bus, duration: float | None, log_path=None, viewer=None):
        LowCmd_, LowState_, _ = sdk.message_types()
        self.robot, self.duration, self.log_path, self.viewer = robot, duration, log_path, viewer
        self.msgs = sdk.Messages()
        self.writer = bus.writer(sdk.TOPIC_LOWSTATE, LowState_)
        self.reader = bus.reader(sdk.TOPIC_LOWCMD, LowCmd_)
        self.stop = False
        self.counts = dict(states=0, commands=0, bad_crc=0, bad_header=0, lag_skips=0, pushes=0)
        self.rows = []

    def _take_command(self):
        for data in wire.take_raw(self.reader):
            cmd = self.msgs.decode_cmd(data)
            if not cmd.crc_ok:
                self.counts["bad_crc"] += 1
            elif not cmd.header_ok:
                self.counts["bad_header"] += 1
            else:
                self.counts["commands"] += 1
                self.robot.apply(cmd)

    def _publish(self):
        r, n = self.robot, self.counts["states"]
        every = r.cfg.corrupt_crc_every
        data = self.msgs.encode_state(tick=int(r.time * 1000), corrupt_crc=bool(every) and (n + 1) % every == 0,
                                      **r.state_fields())
        wire.write_raw(self.writer, data)
        self.counts["states"] += 1

    def run(self) -> dict:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: setattr(self, "stop", True))
        r, cfg = self.robot, self.robot.cfg
        start = time.monotonic()
        next_phys = next_pub = start
        next_push = start + cfg.push_every_s
        next_view = start
        steps = 0
        while not self.stop:
            now = time.monotonic()
            if self.duration is not None and now - start >= self.duration:
                break
            if now - next_phys > MAX_LAG_S:                  # too far behind: skip, do not replay the past
                self.counts["lag_skips"] += 1
                next_phys = now
            if now >= next_phys:
                self._take_command()
                r.step()
                steps += 1
                if steps % cfg.log_every == 0:
                    self.rows.append(np.r_[time.time(), r.truth()])
                next_phys += r.dt
            if now >= next_pub:
                self._publish()
                next_pub = max(next_pub + cfg.state_dt, now - cfg.state_dt)
            if cfg.push_velocity > 0 and now >= next_push:
                r.push()
                self.counts["pushes"] += 1
                next_push += cfg.push_every_s
            if self.viewer is not None and now >= next_view:
                if not self.viewer.is_running():
                    break
                self.viewer.sync()
                next_view = now + 1 / 60
            pause = min(next_phys, next_pub) - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        self.counts["seconds"] = round(time.monotonic() - start, 3)
        self.counts["sim_seconds"] = round(r.time, 3)
        if self.log_path is not None:
            self.save_log()
        return self.counts

    def save_log(self):
        from mjx_env.files import atomic_write
        rows = np.array(self.rows) if self.rows else np.zeros((0, 14))
        names = np.array(["wall_time", "t", "x", "y", "z", "roll", "pitch", "yaw", "vx", "vy", "vz", "wx", "wy", "wz"])
        def write(tmp):
            with open(tmp, "wb") as f:          # a file object: np.savez would append .npz to a name
                np.savez(f, truth=rows, names=names, **self.counts)
        atomic_write(self.log_path, write)
