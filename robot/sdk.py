"""Unitree's low-level interface to the Go2, as its SDK (unitree_sdk2py) defines it.

Topics: the controller publishes LowCmd_ on rt/lowcmd, reads LowState_ on rt/lowstate and the
wireless remote's WirelessController_ on rt/wirelesscontroller. A LowCmd_ carries 20 motor slots
(the Go2 uses 12) with q, dq, kp, kd, tau each; the motor applies tau + kp (q - q_m) + kd (dq - dq_m).
Header 0xFE 0xEF, level_flag 0xFF (low level), motor mode 0x01 (servo), and a CRC32 over the message
(robot/wire.py) that the robot checks.

Joint order: the SDK numbers motors leg by leg FR, FL, RR, RL, each hip, thigh, calf. A policy lists
its own order in its metadata (joint_names); JointMap converts between the two by name, and it is the
only place that does.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mjx_env.errors import UserError
from robot import wire

TOPIC_LOWCMD = "rt/lowcmd"
TOPIC_LOWSTATE = "rt/lowstate"
TOPIC_REMOTE = "rt/wirelesscontroller"
HEAD = (0xFE, 0xEF)
LEVEL_FLAG = 0xFF                 # low-level control
MOTOR_MODE = 0x01                 # servo (PMSM) mode
POS_STOP = 2.146e9                # the SDK's "no position target" (go2 PosStopF)
VEL_STOP = 16000.0                # the SDK's "no velocity target" (go2 VelStopF)
NUM_SLOTS = 20                    # motor slots in LowCmd_ / LowState_
SDK_LEGS = ("FR", "FL", "RR", "RL")
SDK_JOINT_NAMES = tuple(f"{leg}_{part}_joint" for leg in SDK_LEGS for part in ("hip", "thigh", "calf"))
NUM_MOTORS = len(SDK_JOINT_NAMES)
# WirelessController_.keys: bit of each button (unitree_mujoco's bridge and the SDK's remote examples).
KEY_BITS = {"R1": 0, "L1": 1, "start": 2, "select": 3, "R2": 4, "L2": 5, "F1": 6, "F2": 7,
            "A": 8, "B": 9, "X": 10, "Y": 11, "up": 12, "right": 13, "down": 14, "left": 15}
INSTALL_HINT = "pip install -e '.[robot]' (unitree-sdk2py-dimos and cyclonedds)"


def message_types():
    """(LowCmd_, LowState_, WirelessController_) of the SDK, or a one-line UserError."""
    try:
        from unitree_sdk2py.idl.unitree_go.msg.dds_ import LowCmd_, LowState_, WirelessController_
    except ImportError as exc:
        raise UserError(f"Unitree's SDK is not installed ({exc}): {INSTALL_HINT}") from None
    return LowCmd_, LowState_, WirelessController_


def default_messages():
    """Fresh zeroed SDK messages (LowCmd_, LowState_, WirelessController_)."""
    message_types()
    from unitree_sdk2py.idl import default as d
    return (d.unitree_go_msg_dds__LowCmd_(), d.unitree_go_msg_dds__LowState_(),
            d.unitree_go_msg_dds__WirelessController_())


class JointMap:
    """Policy joint order <-> SDK motor order, by joint name. policy[i] = sdk[sdk_index[i]]."""

    def __init__(self, policy_joint_names):
        names = list(policy_joint_names)
        if sorted(names) != sorted(SDK_JOINT_NAMES):
            raise UserError(f"the policy's joint_names must be the 12 Go2 joints {SDK_JOINT_NAMES[0]} ... "
                            f"{SDK_JOINT_NAMES[-1]} in some order, got {names}")
        self.policy_names = tuple(names)
        self.sdk_index = np.array([SDK_JOINT_NAMES.index(n) for n in names])

    def to_policy(self, sdk_values) -> np.ndarray:
        return np.asarray(sdk_values)[..., self.sdk_index]

    def to_sdk(self, policy_values) -> np.ndarray:
        policy_values = np.asarray(policy_values)
        out = np.empty_like(policy_values)
        out[..., self.sdk_index] = policy_values
        return out


@dataclass
class LowState:
    """What a LowState_ tells, in SDK motor order (12 motors) and SI units as the robot reports them."""
    tick: int
    quat: np.ndarray          # IMU orientation w, x, y, z
    gyro: np.ndarray          # IMU angular velocity, body frame (rad/s)
    accel: np.ndarray         # IMU specific force, body frame (m/s^2)
    q: np.ndarray             # motor angles (rad)
    dq: np.ndarray            # motor velocities (rad/s)
    tau: np.ndarray           # estimated motor torques (N m)
    foot_force: np.ndarray    # FR, FL, RR, RL
    crc_ok: bool


@dataclass
class MotorCommand:
    """One LowCmd_ for the 12 motors, SDK order."""
    q: np.ndarray
    dq: np.ndarray
    kp: np.ndarray
    kd: np.ndarray
    tau: np.ndarray
    crc_ok: bool = True
    header_ok: bool = True


class Messages:
    """Encoders and decoders of LowCmd_, LowState_ and WirelessController_ (wire.Codec underneath)."""

    def __init__(self):
        cmd, state, remote = default_messages()
        self.cmd = wire.Codec(type(cmd), wire.header_of(cmd))
        self.state = wire.Codec(type(state), wire.header_of(state))
        self.remote = wire.Codec(type(remote), wire.header_of(remote))
        self._cmd_ix = self._motor_fields(self.cmd.layout, "motor_cmd", ("q", "dq", "kp", "kd", "tau", "mode"))
        self._state_ix = self._motor_fields(self.state.layout, "motor_state", ("q", "dq", "tau_est"))
        self._cmd_float_ix = sum((self._cmd_ix[f] for f in ("q", "dq", "kp", "kd", "tau")), [])
        # Templates: every field as the SDK's stand example initialises it.
        cmd.head[0], cmd.head[1] = HEAD
        cmd.level_flag = LEVEL_FLAG
        for slot in cmd.motor_cmd:
            slot.mode, slot.q, slot.dq, slot.kp, slot.kd, slot.tau = MOTOR_MODE, POS_STOP, VEL_STOP, 0.0, 0.0, 0.0
        self._cmd_template = self.cmd.layout.values(cmd)
        state.head[0], state.head[1] = HEAD
        state.level_flag = LEVEL_FLAG
        self._state_template = self.state.layout.values(state)
        L = self.state.layout
        self._quat, self._gyro = L.slice("imu_state.quaternion", 4), L.slice("imu_state.gyroscope", 3)
        self._accel, self._rpy = L.slice("imu_state.accelerometer", 3), L.slice("imu_state.rpy", 3)
        self._foot, self._tick = L.slice("foot_force", 4), L.index["tick"]
        ix = self._state_ix
        self._state_float_ix = [i for sl in (self._quat, self._gyro, self._accel, self._rpy)
                                for i in range(sl.start, sl.stop)] + ix["q"] + ix["dq"] + ix["tau_est"]

    @staticmethod
    def _motor_fields(layout, array, fields):
        return {f: [layout.index[f"{array}[{i}].{f}"] for i in range(NUM_MOTORS)] for f in fields}

    # ---- LowCmd_ ----
    def encode_cmd(self, c: MotorCommand) -> bytes:
        v = list(self._cmd_template)
        for i, x in zip(self._cmd_float_ix, np.concatenate([c.q, c.dq, c.kp, c.kd, c.tau]).tolist()):
            v[i] = x
        v[-1] = self.cmd.crc(v)
        return self.cmd.encode(v)

    def decode_cmd(self, data: bytes) -> MotorCommand:
        v = self.cmd.decode(data)
        ix = self._cmd_ix
        get = lambda f: np.array([v[i] for i in ix[f]])          # noqa: E731
        L = self.cmd.layout
        return MotorCommand(q=get("q"), dq=get("dq"), kp=get("kp"), kd=get("kd"), tau=get("tau"),
                            crc_ok=self.cmd.crc(v) == v[-1],
                            header_ok=(v[L.index["head[0]"]], v[L.index["head[1]"]]) == HEAD
                            and v[L.index["level_flag"]] == LEVEL_FLAG)

    # ---- LowState_ ----
    def encode_state(self, tick, quat, gyro, accel, rpy, q, dq, tau, foot_force, corrupt_crc=False) -> bytes:
        v = list(self._state_template)
        v[self._tick] = int(tick) & 0xFFFFFFFF
        floats = np.concatenate([quat, gyro, accel, rpy, q, dq, tau]).tolist()
        for i, x in zip(self._state_float_ix, floats):
            v[i] = x
        v[self._foot] = np.clip(np.round(foot_force), -32768, 32767).astype(int).tolist()
        v[-1] = self.state.crc(v) ^ (1 if corrupt_crc else 0)
        return self.state.encode(v)

    def decode_state(self, data: bytes) -> LowState:
        v = self.state.decode(data)
        ix = self._state_ix
        get = lambda f: np.array([v[i] for i in ix[f]])          # noqa: E731
        return LowState(tick=v[self._tick], quat=np.array(v[self._quat]), gyro=np.array(v[self._gyro]),
                        accel=np.array(v[self._accel]), q=get("q"), dq=get("dq"), tau=get("tau_est"),
                        foot_force=np.array(v[self._foot], float), crc_ok=self.state.crc(v) == v[-1])

    # ---- WirelessController_ ----
    def encode_remote(self, lx=0.0, ly=0.0, rx=0.0, ry=0.0, keys=()) -> bytes:
        bits = 0
        for k in keys:
            bits |= 1 << KEY_BITS[k]
        return self.remote.encode([float(lx), float(ly), float(rx), float(ry), bits])

    def decode_remote(self, data: bytes) -> tuple:
        """(lx, ly, rx, ry, set of pressed key names)."""
        lx, ly, rx, ry, bits = self.remote.decode(data)
        return lx, ly, rx, ry, {k for k, b in KEY_BITS.items() if bits >> b & 1}
