"""The robot-side controller: Passive -> Stand -> Walk over Unitree's low-level topics.

Every 2 ms (500 Hz, as Unitree's low-level examples) one LowCmd_ goes out; the policy runs every
control_dt of its metadata (20 ms for this project's policies) on the latest LowState_.

  Passive  damping only (kp 0, kd damping_kd): at start, and whenever anything is wrong.
  Stand    the joints move from where they are to the policy's default pose in stand_time_s
           (linear interpolation, Unitree's stand gains), then hold it.
  Walk     the policy's PD targets: default + action_scale * clip(action), applied
           action_latency_steps control periods late as in training, with the metadata's kp and kd.

Back to Passive, with one line on stderr: the e-stop key or button, a tilt past max_tilt_rad, no
valid LowState_ for watchdog_s, a non-finite action, Ctrl-C or SIGTERM (then damping for
exit_damping_s and exit). Every joint target is clamped to the model's joint range. Observations
are built from LowState_ as training builds them from the simulator (observation(), checked against
examples/deploy_onnx.py in tests/test_robot_sdk.py), everything read from the ONNX metadata.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mjx_env.errors import UserError, first_line
from robot import sdk, wire
from robot.sim import rotate_inverse

PASSIVE, STAND, WALK = "Passive", "Stand", "Walk"
KNOWN_TERMS = ("base_ang_vel", "projected_gravity", "commands", "joint_pos", "joint_vel", "last_action", "jump_phase")
REQUIRED_META = ("joint_names", "default_joint_pos", "kp", "kd", "action_scale", "action_clip",
                 "action_latency_steps", "control_dt", "observation_layout", "history_length", "command_ranges")
# Keyboard: one character each (a terminal in cbreak mode, or a pipe).
KEYS_HELP = ("keys: 1 Stand, 2 Walk, 0 or space Passive (e-stop), w/s forward/back, a/d left/right, "
             "q/e turn left/right, x zero command; remote: A Stand, start Walk, B or select Passive, sticks command")


@dataclass(frozen=True)
class ControllerConfig:
    motor_dt: float = 0.002              # LowCmd_ period (500 Hz)
    stand_time_s: float = 2.0            # interpolation to the default pose
    stand_kp: float = 60.0               # Unitree's Go2 stand example gains
    stand_kd: float = 5.0
    damping_kd: float = 3.0              # Passive: pure damping, the legs fold slowly
    max_tilt_rad: float = 1.0            # Unitree's Go2 deploy: about 1 rad
    watchdog_s: float = 0.02             # LowState_ older than this (10 cycles): Passive
    silence_report_s: float = 0.25       # already Passive: say the robot is silent past this
    first_state_timeout_s: float = 3.0   # no LowState_ at all: the robot is not answering
    probe_s: float = 1.0                 # listen this long for another rt/lowcmd publisher (loopback discovery ~0.3 s)
    bad_crc_refuse: int = 100            # this many LowState_ in a row with a bad CRC and none good: refuse
    exit_damping_s: float = 0.3          # damping commands sent after Ctrl-C before exiting
    remote_timeout_s: float = 0.5        # sticks command while a WirelessController_ came this recently
    stick_deadband: float = 0.05
    key_step: tuple = (0.1, 0.1, 0.1)    # vx, vy (m/s), yaw rate (rad/s) per key press


def rotate_gravity(quat) -> np.ndarray:
    """Gravity's direction in the body frame (the policy's projected_gravity)."""
    return rotate_inverse(quat, np.array([0.0, 0.0, -1.0]))


def tilt(quat) -> float:
    """Angle (rad) between the body's up axis and the world's."""
    return float(np.arccos(np.clip(-rotate_gravity(quat)[2], -1.0, 1.0)))


def observation(meta, gyro, quat, q, dq, last_action, command) -> np.ndarray:
    """One policy observation from what LowState_ gives (joints already in the policy's order),
    term by term as the metadata's observation_layout lists them, each raw value times its scale."""
    raw = {"base_ang_vel": gyro, "projected_gravity": rotate_gravity(quat), "commands": command,
           "joint_pos": np.asarray(q) - np.asarray(meta["default_joint_pos"]), "joint_vel": dq,
           "last_action": last_action, "jump_phase": np.zeros(1)}
    parts = [np.asarray(raw[t["name"]], np.float64).reshape(-1) * np.asarray(t["scale"])
             for t in meta["observation_layout"]]
    return np.concatenate(parts).astype(np.float32)


class History:
    """The last history_length observations, oldest first; the first one fills every slot."""

    def __init__(self, n: int):
        self.frames = deque(maxlen=n)
        self.n = n

    def push(self, obs):
        if not self.frames:
            self.frames.extend([obs] * self.n)
        else:
            self.frames.append(obs)
        return np.concatenate(self.frames)


class Policy:
    """An exported ONNX policy and its deploy metadata, checked; one line for each bad input."""

    def __init__(self, path):
        path = Path(path)
        if not path.is_file():
            raise UserError(f"policy not found: {path} (export one: python -m bridge.policy CKPT out.onnx)")
        try:
            import onnxruntime as ort
        except ImportError:
            raise UserError(f"go2-deploy needs onnxruntime: {sdk.INSTALL_HINT}") from None
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1   # a 12x48 MLP: threads only add jitter
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise UserError(f"{path} is not an ONNX model onnxruntime can load ({first_line(exc)[:120]})") from None
        raw = self.session.get_modelmeta().custom_metadata_map
        try:
            meta = {k: json.loads(v) for k, v in raw.items()}
        except json.JSONDecodeError:
            meta = {}
        missing = [k for k in REQUIRED_META if k not in meta]
        if missing:
            raise UserError(f"{path} has no deploy metadata ({', '.join(missing)} missing): export it with "
                            f"python -m bridge.policy CKPT out.onnx")
        self.meta, self.path = meta, path
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        n_in, n_out = inputs[0].shape[-1], outputs[0].shape[-1]
        self.input, self.output = inputs[0].name, outputs[0].name
        self.joints = sdk.JointMap(meta["joint_names"])
        layout = meta["observation_layout"]
        unknown = [t["name"] for t in layout if t["name"] not in KNOWN_TERMS]
        if unknown:
            hint = " (LowState_ carries no base velocity: export a policy trained without --actor-lin-vel)" \
                if "base_lin_vel" in unknown else ""
            raise UserError(f"{path} observes {', '.join(unknown)}, which the robot cannot provide{hint}")
        n = len(meta["joint_names"])
        sizes = {"base_ang_vel": 3, "projected_gravity": 3, "commands": len(meta["command_ranges"]),
                 "joint_pos": n, "joint_vel": n, "last_action": n, "jump_phase": 1}
        for t in layout:
            if t["size"] != sizes[t["name"]] or len(t["scale"]) != t["size"]:
                raise UserError(f"{path}: observation term {t['name']} has size {t['size']} ({len(t['scale'])} scales), "
                                f"the robot gives {sizes[t['name']]}")
        frame = sum(t["size"] for t in layout)
        hist = int(meta["history_length"])
        if not isinstance(n_in, int) or frame * hist != n_in:
            raise UserError(f"{path}: the observation layout is {hist} x {frame} = {frame * hist} values, the "
                            f"network reads {n_in}")
        if n_out != n or len(meta["default_joint_pos"]) != n or len(meta["kp"]) != n or len(meta["kd"]) != n:
            raise UserError(f"{path}: the network outputs {n_out} actions, the metadata lists {n} joints, "
                            f"{len(meta['default_joint_pos'])} default angles, {len(meta['kp'])} kp, {len(meta['kd'])} kd")
        self.default = np.asarray(meta["default_joint_pos"], float)
        self.kp, self.kd = np.asarray(meta["kp"], float), np.asarray(meta["kd"], float)
        self.history_length = hist
        ranges = meta["command_ranges"]
        self.command_ranges = np.array([ranges[k] for k in meta.get("command_names", list(ranges))], float)

    def act(self, row: np.ndarray) -> np.ndarray:
        return self.session.run([self.output], {self.input: row[None].astype(np.float32)})[0][0]


def joint_ranges(xml_path, joint_names) -> np.ndarray:
    """(12, 2) position limits of the named joints in an MJCF (policy order)."""
    import mujoco

    from mjx_env.model import load_spec
    spec = load_spec(xml_path)
    m = spec.compile()
    out = []
    for name in joint_names:
        j = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, name)
        if j < 0:
            raise UserError(f"model {xml_path} has no joint {name}")
        out.append(m.jnt_range[j] if m.jnt_limited[j] else (-np.inf, np.inf))
    return np.array(out, float)


def load_replay(path, episode: int) -> np.ndarray:
    """(T, 12) actions, policy order: an NPZ's `actions` (an episode of DynaFlow's format, or one array)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"replay file not found: {path}")
    try:
        data = np.load(path, allow_pickle=True)
        actions = data["actions"]
    except Exception as exc:
        raise UserError(f"cannot read actions from {path}: {first_line(exc)}") from None
    if actions.dtype == object:
        if not 0 <= episode < len(actions):
            raise UserError(f"{path} has {len(actions)} episodes, --episode {episode} is not one of them")
        actions = actions[episode]
    actions = np.asarray(actions, np.float64)
    if actions.ndim != 2 or actions.shape[1] != sdk.NUM_MOTORS or not np.all(np.isfinite(actions)):
        raise UserError(f"{path}: actions must be finite, shape (T, {sdk.NUM_MOTORS}), got {actions.shape}")
    return actions


class Keyboard:
    """Single keys from stdin (cbreak mode on a terminal), each timestamped the moment it is read."""

    def __init__(self, events: "queue.SimpleQueue", wake: threading.Event):
        self.events, self.wake = events, wake
        self.fd = sys.stdin.fileno() if sys.stdin is not None else None
        self.saved = None
        if self.fd is not None and os.isatty(self.fd):
            import termios
            import tty
            self.saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)
        if self.fd is not None:
            threading.Thread(target=self._read, name="keyboard", daemon=True).start()

    def _read(self):
        while True:
            try:
                data = os.read(self.fd, 1)
            except OSError:
                return
            if not data:                   # EOF: no keyboard (stdin closed or /dev/null)
                return
            self.events.put((time.time(), "key", data.decode(errors="replace")))
            self.wake.set()

    def restore(self):
        if self.saved is not None:
            import termios
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)


class Controller:
    """The state machine and the 500 Hz loop on a Bus."""

    def __init__(self, policy: Policy, bus, ranges: np.ndarray, cfg: ControllerConfig = ControllerConfig(),
                 command=(0.0, 0.0, 0.0), log_path=None, replay: np.ndarray | None = None, prog="go2-deploy",
                 check_crc: bool = True):
        self.p, self.bus, self.cfg, self.prog = policy, bus, cfg, prog
        self.ranges = ranges
        self.replay, self.check_crc = replay, check_crc
        self.msgs = sdk.Messages()
        lo, hi = policy.command_ranges[:, 0], policy.command_ranges[:, 1]
        self.cmd_lo, self.cmd_hi = lo, hi
        # vx, vy, yaw rate from the user; the height command at its range's middle (the nominal 0.3 m of
        # this project's task); no jump (0: the jump commands' off value in training).
        self.command = np.zeros(len(lo))
        self.command[:3] = np.clip(command, lo[:3], hi[:3])
        if len(lo) > 3:
            self.command[3] = 0.5 * (lo[3] + hi[3])
        self.decimation = int(round(policy.meta["control_dt"] / cfg.motor_dt))
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.wake = threading.Event()
        self.log = open(log_path, "a", buffering=1) if log_path else None
        self.state = PASSIVE
        self.stop_reason = None
        self.stats = dict(ticks=0, late_ticks=0, max_late_ms=0.0, states=0, bad_crc=0, policy_steps=0,
                          remote_msgs=0, passive_events=0, watchdog_trips=0)
        self.latest = None            # latest valid LowState (SDK order)
        self.latest_at = None         # monotonic time it arrived
        self.robot_lost = False
        self.lost_said = False
        self.remote_at = None
        self.remote_keys = set()
        self.sticks = np.zeros(4)
        self.target = None            # policy-order joint targets of Walk
        self.stand_from, self.stand_t0 = None, None
        self.pending_passive = None   # (reason, trigger wall time) awaiting its first damping command

    # ---- logging ----
    def record(self, **event):
        if self.log is not None:
            self.log.write(json.dumps({"t": time.time(), **event}) + "\n")

    def say(self, text, err=False):
        print(f"{self.prog}: {text}", file=sys.stderr if err else sys.stdout, flush=True)

    # ---- startup ----
    def connect(self):
        """Readers; refuse if someone else publishes rt/lowcmd or the robot does not answer."""
        from cyclonedds.core import Listener
        LowCmd_, LowState_, Remote_ = sdk.message_types()
        self.state_reader = self.bus.reader(sdk.TOPIC_LOWSTATE, LowState_)
        self.remote_reader = self.bus.reader(sdk.TOPIC_REMOTE, Remote_)
        writers = [0]

        def matched(_reader, status):
            writers[0] = max(writers[0], int(status.current_count))

        probe = self.bus.reader(sdk.TOPIC_LOWCMD, LowCmd_, listener=Listener(on_subscription_matched=matched))
        samples, end = 0, time.monotonic() + self.cfg.probe_s
        while time.monotonic() < end:
            samples += len(wire.take_raw(probe))
            self._take_states()
            time.sleep(0.01)
        if samples or writers[0]:
            raise UserError(f"another process already publishes {sdk.TOPIC_LOWCMD} ({writers[0]} writer(s), {samples} "
                            f"LowCmd_ in {self.cfg.probe_s:g} s): stop it first (on the robot, sport mode must be "
                            f"released: docs/robot.md, first-hardware checklist)")
        probe.set_listener(None)
        del probe
        end = time.monotonic() + self.cfg.first_state_timeout_s
        while self.latest is None and time.monotonic() < end:
            self._take_states()
            if self.stats["bad_crc"] >= self.cfg.bad_crc_refuse:
                raise UserError(f"every LowState_ on {sdk.TOPIC_LOWSTATE} has a bad CRC ({self.stats['bad_crc']} so far): "
                                f"a publisher that signs none (unitree_mujoco's Python bridge) needs --no-crc-check")
            time.sleep(0.002)
        if self.latest is None:
            raise UserError(f"the robot is not answering: no LowState_ on {sdk.TOPIC_LOWSTATE} within "
                            f"{self.cfg.first_state_timeout_s:g} s ({self.stats['bad_crc']} with a bad CRC); check "
                            f"--interface/--domain, that the robot is on (or go2-sim-robot runs)")
        self.writer = self.bus.writer(sdk.TOPIC_LOWCMD, LowCmd_)

    # ---- inputs ----
    def _take_states(self):
        for data in wire.take_raw(self.state_reader):
            s = self.msgs.decode_state(data)
            if self.check_crc and not s.crc_ok:
                self.stats["bad_crc"] += 1
                continue
            self.stats["states"] += 1
            self.latest, self.latest_at = s, time.monotonic()

    def _take_remote(self):
        for data in wire.take_raw(self.remote_reader):
            lx, ly, rx, ry, keys = self.msgs.decode_remote(data)
            self.stats["remote_msgs"] += 1
            self.remote_at = time.monotonic()
            self.sticks = np.array([lx, ly, rx, ry])
            for k in keys - self.remote_keys:            # newly pressed
                self.events.put((time.time(), "button", k))
            self.remote_keys = keys

    def _stick_command(self):
        """Sticks to commands: ly forward, lx right (-y), rx turn right (-yaw); each scaled to the
        command range's end on its side."""
        def scale(x, i):
            if abs(x) < self.cfg.stick_deadband:
                return 0.0
            return x * (self.cmd_hi[i] if x > 0 else -self.cmd_lo[i])
        lx, ly, rx, _ = self.sticks
        self.command[0], self.command[1], self.command[2] = scale(ly, 0), scale(-lx, 1), scale(-rx, 2)

    def _handle(self, t_seen, kind, key):
        step = self.cfg.key_step
        if (kind == "key" and key in "0 ") or (kind == "button" and key in ("B", "select")):
            self.passive(f"e-stop {'key' if kind == 'key' else 'button ' + key}", t_seen)
        elif (kind == "key" and key == "1") or (kind == "button" and key == "A"):
            self.stand()
        elif (kind == "key" and key == "2") or (kind == "button" and key == "start"):
            self.walk()
        elif kind == "signal":
            self.stop_reason = key
            if not self.passive(key, t_seen):
                self.say(f"{key}: damping for {self.cfg.exit_damping_s:g} s, then exit", err=True)
        elif kind == "key" and key in "wsadqex":
            delta = {"w": (0, step[0]), "s": (0, -step[0]), "a": (1, step[1]), "d": (1, -step[1]),
                     "q": (2, step[2]), "e": (2, -step[2])}
            if key == "x":
                self.command[:3] = 0.0
            else:
                i, dv = delta[key]
                self.command[i] = np.clip(self.command[i] + dv, self.cmd_lo[i], self.cmd_hi[i])
            self.say(f"command vx {self.command[0]:+.2f} vy {self.command[1]:+.2f} yaw {self.command[2]:+.2f}")

    # ---- transitions ----
    def passive(self, reason, t_trigger=None) -> bool:
        """To Passive; the next command published is damping and says so in one line. False if
        already Passive."""
        if self.state == PASSIVE:
            return False
        self.stats["passive_events"] += 1
        self.pending_passive = (reason, time.time() if t_trigger is None else t_trigger, self.state)
        self.state = PASSIVE
        return True

    def stand(self):
        if self.latest is None or self.robot_lost:
            self.say(f"{STAND} refused: the robot is not answering (no fresh LowState_); staying {PASSIVE}", err=True)
            return
        self.state = STAND
        self.stand_from = self.p.joints.to_policy(self.latest.q)
        self.stand_t0 = time.monotonic()
        self.say(f"{STAND}: to the default pose in {self.cfg.stand_time_s:g} s")
        self.record(event="state", state=STAND)

    def walk(self):
        if self.state != STAND or time.monotonic() - self.stand_t0 < self.cfg.stand_time_s:
            self.say(f"{WALK} needs a finished {STAND} first (press 1, wait {self.cfg.stand_time_s:g} s)", err=True)
            return
        self.state = WALK
        n = len(self.p.default)
        self.history = History(self.p.history_length)
        self.last_action = np.zeros(n, np.float32)
        self.pending = deque([np.zeros(n)] * int(self.p.meta["action_latency_steps"]))
        self.target = self.p.default.copy()
        self.replay_step = 0
        self.walk_tick = 0
        self.say(f"{WALK}: {'replaying ' + str(len(self.replay)) + ' actions' if self.replay is not None else 'policy'} "
                 f"every {self.p.meta['control_dt'] * 1000:g} ms, command vx {self.command[0]:+.2f} "
                 f"vy {self.command[1]:+.2f} yaw {self.command[2]:+.2f}")
        self.record(event="state", state=WALK)

    # ---- the policy ----
    def policy_step(self):
        s = self.latest
        q, dq = self.p.joints.to_policy(s.q), self.p.joints.to_policy(s.dq)
        if self.replay is not None:
            if self.replay_step >= len(self.replay):
                self.say(f"replay finished after {self.replay_step} actions")
                self.record(event="replay_done", steps=self.replay_step)
                self.stand()
                return
            action = self.replay[self.replay_step]
            self.replay_step += 1
        else:
            obs = observation(self.p.meta, s.gyro, s.quat, q, dq, self.last_action, self.command)
            action = self.p.act(self.history.push(obs))
        if not np.all(np.isfinite(action)):
            self.passive("non-finite action from the policy")
            return
        clip = self.p.meta["action_clip"]
        action = np.clip(np.asarray(action, np.float64), -clip, clip)
        self.pending.append(action)
        due = self.pending.popleft()
        self.target = self.p.default + self.p.meta["action_scale"] * due
        self.last_action = action.astype(np.float32)
        self.stats["policy_steps"] += 1

    # ---- the motor command ----
    def motor_command(self) -> sdk.MotorCommand:
        n = len(self.p.default)
        q_now = self.p.joints.to_policy(self.latest.q)
        zeros = np.zeros(n)
        if self.state == STAND:
            s = min(1.0, (time.monotonic() - self.stand_t0) / self.cfg.stand_time_s)
            q, kp, kd = (1 - s) * self.stand_from + s * self.p.default, np.full(n, self.cfg.stand_kp), np.full(n, self.cfg.stand_kd)
        elif self.state == WALK:
            q, kp, kd = self.target, self.p.kp, self.p.kd
        else:
            q, kp, kd = q_now, zeros, np.full(n, self.cfg.damping_kd)
        q = np.clip(q, self.ranges[:, 0], self.ranges[:, 1])
        to = self.p.joints.to_sdk
        return sdk.MotorCommand(q=to(q), dq=zeros, kp=to(kp), kd=to(kd), tau=zeros)

    def publish(self):
        wire.write_raw(self.writer, self.msgs.encode_cmd(self.motor_command()))
        if self.pending_passive is not None:
            reason, t_trigger, was = self.pending_passive
            t_pub = time.time()
            latency = (t_pub - t_trigger) * 1000
            self.say(f"{PASSIVE} (damping) from {was}: {reason}; damping published {latency:.1f} ms after it", err=True)
            self.record(event="passive", reason=reason, was=was, t_trigger=t_trigger, t_damping=t_pub,
                        latency_ms=latency)
            self.pending_passive = None

    # ---- the loop ----
    def _handle_events(self):
        while True:
            try:
                self._handle(*self.events.get_nowait())
            except queue.Empty:
                return

    def urgent(self):
        """Out of schedule, for a key or a signal: handle it now, and if it asked for Passive publish
        the damping command at once (nothing else: the next cycle does the rest)."""
        self._handle_events()
        if self.pending_passive is not None:
            self.publish()

    def tick(self):
        """One 2 ms cycle."""
        self._take_states()
        self._take_remote()
        self._handle_events()
        now = time.monotonic()
        if self.remote_at is not None and now - self.remote_at < self.cfg.remote_timeout_s:
            self._stick_command()
        age = now - self.latest_at
        if age > self.cfg.watchdog_s:
            if not self.robot_lost:
                self.robot_lost = True
                self.stats["watchdog_trips"] += 1
                # From Stand or Walk its Passive line says it; already Passive, the line waits (below).
                self.lost_said = self.passive(f"no LowState_ for {age * 1000:.1f} ms (watchdog "
                                              f"{self.cfg.watchdog_s * 1000:g} ms)", t_trigger=time.time())
            elif self.state == PASSIVE and not self.lost_said and age > self.cfg.silence_report_s:
                # Already Passive when it went silent: one line once the silence is more than a stall.
                self.lost_said = True
                self.say(f"robot stopped answering: no LowState_ for {age * 1000:.0f} ms", err=True)
                self.record(event="robot_lost", age_ms=age * 1000)
        elif self.robot_lost:
            self.robot_lost = False
            if self.lost_said:
                self.lost_said = False
                self.say("LowState_ again: still Passive, press 1 to stand")
                self.record(event="robot_back")
        if self.state != PASSIVE and tilt(self.latest.quat) > self.cfg.max_tilt_rad:
            self.passive(f"tilt {tilt(self.latest.quat):.2f} rad past {self.cfg.max_tilt_rad:g}")
        if self.state == WALK:
            if self.walk_tick % self.decimation == 0:
                self.policy_step()
            self.walk_tick += 1
        self.publish()
        self.stats["ticks"] += 1

    def run(self, duration: float | None = None, keyboard: bool = True) -> dict:
        cfg = self.cfg
        kb = Keyboard(self.events, self.wake) if keyboard else None

        def on_signal(signum, _frame):
            name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
            self.events.put((time.time(), "signal", name))
            self.wake.set()

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        self.say(f"{PASSIVE} (damping). {KEYS_HELP}")
        self.record(event="start", policy=str(self.p.path), decimation=self.decimation)
        start = next_tick = time.monotonic()
        stop_at = None
        try:
            while True:
                now = time.monotonic()
                if stop_at is None and (self.stop_reason is not None or
                                        (duration is not None and now - start >= duration)):
                    if self.stop_reason is None:
                        self.stop_reason = "duration"
                        self.passive(f"--duration {duration:g} s reached")
                    stop_at = now + cfg.exit_damping_s
                if stop_at is not None and now >= stop_at:
                    break
                self.tick()
                next_tick += cfg.motor_dt
                late = time.monotonic() - next_tick
                if late > 0:
                    self.stats["late_ticks"] += 1
                    self.stats["max_late_ms"] = max(self.stats["max_late_ms"], late * 1000)
                    if late > 10 * cfg.motor_dt:           # far behind: drop the missed ticks, keep 2 ms steps
                        next_tick = time.monotonic()
                    continue
                if self.wake.wait(-late):                  # a key or signal: handle it now, not at the next tick
                    self.wake.clear()
                    self.urgent()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            if kb is not None:
                kb.restore()
            self.stats["seconds"] = round(time.monotonic() - start, 3)
            self.record(event="stop", reason=self.stop_reason, **self.stats)
            if self.log is not None:
                self.log.close()
        return self.stats
