"""Watch and steer a policy live in the browser: `python play.py --viewer` (pip install -e ".[viewer]").

The page is served by viser. The scene is built once from the MJCF's visible geoms (groups 0-2, what
MuJoCo's own viewer shows): boxes, spheres and cylinders as viser primitives, capsules as a cylinder
and two spheres, Menagerie's meshes as meshes. Each body is a frame, posed every step from C MuJoCo's
kinematics (mj_kinematics) of the watched env's qpos, whichever backend steps the physics.

viser calls the page's handlers on its own threads. They only record what the user asked for; the
play loop applies it to the state between two steps (before_step), so one thread touches the env.
"""
from __future__ import annotations

import contextlib
import errno
import io
import logging
import math
import signal
import socket
import sys
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np

from mjx_env.errors import UserError

COMMANDS = ("vx", "vy", "yaw", "height")      # state.commands[:, 0:4]
HISTORY_S = 10.0                              # span of the rolling plot
READOUT_HZ = 5.0                              # text and plot refresh; the scene is posed every step
GRID_CELL = 0.5                               # floor grid (m); it shifts by whole cells to follow
SLOW_RTF = 0.9                                # below this real-time factor the page says so


def check_bind(host: str, port: int) -> None:
    """One-line errors before viser starts: it would silently take the next free port, and hang
    when the host cannot be bound at all."""
    if not 0 <= port <= 65535:
        raise UserError(f"--port must be in [0, 65535], got {port}")
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise UserError(f"--host {host}: cannot resolve it ({exc.strerror}); use 127.0.0.1 (this machine "
                        "only) or 0.0.0.0 (every interface)") from None
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)    # as the server will
        try:
            s.bind(addr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UserError(f"--port {port} is in use on {host}: choose another --port") from None
            raise UserError(f"--host {host} --port {port}: cannot bind ({exc.strerror}); use an address of "
                            "this machine (127.0.0.1, or 0.0.0.0 for every interface) and a free port") from None


def base_yaw(quat) -> float:
    w, x, y, z = quat
    return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


def geom_color(m, g) -> tuple:
    rgba = m.mat_rgba[m.geom_matid[g]] if m.geom_matid[g] >= 0 else m.geom_rgba[g]
    return tuple(int(round(255 * c)) for c in rgba[:3]), float(rgba[3])


def quat_mul(a, b):
    """Hamilton products of (..., 4) quaternions (w, x, y, z)."""
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], -1)


class Scene:
    """The MJCF's visible geoms in frames nested as its bodies; pose() moves them.

    Each body's frame holds its pose relative to its parent, so a step sends only what changed: a
    hinge turns its body's frame, only the floating base moves. viser sends each change as one
    message, and on a 2-core machine they cost more than the physics.
    """

    def __init__(self, server, model):
        import mujoco
        self.mujoco, self.m = mujoco, model.mj_model
        self.d = mujoco.MjData(self.m)
        self.base_body = model.base_body
        m, g = self.m, mujoco.mjtGeom
        server.scene.set_up_direction("+z")
        self.grid = server.scene.add_grid("/floor", width=40.0, height=40.0, cell_size=GRID_CELL,
                                          section_size=2 * GRID_CELL, plane_color=(235, 238, 242),
                                          plane_opacity=1.0, shadow_opacity=0.2)
        self.root = server.scene.add_frame("/world", show_axes=False)
        visible = [i for i in range(m.ngeom) if m.geom_group[i] <= 2 and geom_color(m, i)[1] > 0
                   and m.geom_type[i] not in (g.mjGEOM_PLANE, g.mjGEOM_HFIELD)]  # not the floor, nor collision-only
        shown = set()                         # bodies with a visible geom in their subtree
        for i in visible:
            b = int(m.geom_bodyid[i])
            while b > 0 and b not in shown:
                shown.add(b)
                b = int(m.body_parentid[b])
        self.ids = np.array(sorted(shown), int)               # parents before children (MuJoCo's order)
        self.parents = m.body_parentid[self.ids]
        self.path = {0: "/world"}
        self.frames = []
        for b in self.ids:
            self.path[b] = f"{self.path[int(m.body_parentid[b])]}/body{b}"
            self.frames.append(server.scene.add_frame(self.path[b], show_axes=False))
        self.sent_pos = np.full((len(self.ids), 3), np.nan)
        self.sent_quat = np.full((len(self.ids), 4), np.nan)
        for i in visible:
            self.add_geom(server, i)

    def add_geom(self, server, i):
        m, g = self.m, self.mujoco.mjtGeom
        t, s = m.geom_type[i], m.geom_size[i]
        color, alpha = geom_color(m, i)
        name = f"{self.path[int(m.geom_bodyid[i])]}/geom{i}"
        pose = dict(position=tuple(m.geom_pos[i]), wxyz=tuple(m.geom_quat[i]))
        look = dict(opacity=None if alpha >= 1 else alpha)
        if t == g.mjGEOM_BOX:
            server.scene.add_box(name, color, tuple(2 * s), **pose, **look)
        elif t == g.mjGEOM_SPHERE:
            server.scene.add_icosphere(name, float(s[0]), color, **pose, **look)
        elif t == g.mjGEOM_ELLIPSOID:
            server.scene.add_icosphere(name, 1.0, color, scale=tuple(s), **pose, **look)
        elif t == g.mjGEOM_CYLINDER:
            server.scene.add_cylinder(name, float(s[0]), float(2 * s[1]), color, **pose, **look)
        elif t == g.mjGEOM_CAPSULE:               # a cylinder between two spheres
            server.scene.add_frame(name, show_axes=False, **pose)
            server.scene.add_cylinder(f"{name}/shaft", float(s[0]), float(2 * s[1]), color, **look)
            for k, z in (("a", s[1]), ("b", -s[1])):
                server.scene.add_icosphere(f"{name}/{k}", float(s[0]), color, position=(0, 0, z), **look)
        elif t == g.mjGEOM_MESH:
            j = m.geom_dataid[i]
            v0, nv, f0, nf = m.mesh_vertadr[j], m.mesh_vertnum[j], m.mesh_faceadr[j], m.mesh_facenum[j]
            server.scene.add_mesh_simple(name, m.mesh_vert[v0:v0 + nv], m.mesh_face[f0:f0 + nf], color=color,
                                         **pose, **look)

    def pose(self, qpos, follow: bool) -> None:
        """Bodies at qpos; when following, the world shifts so that the base stays above the origin
        (the user's camera keeps its place) and the floor grid by whole cells under it."""
        d = self.d
        d.qpos[:] = qpos
        self.mujoco.mj_kinematics(self.m, d)
        xy = d.xpos[self.base_body, :2] if follow else np.zeros(2)
        self.root.position = (-xy[0], -xy[1], 0.0)
        self.grid.position = (-(xy[0] % GRID_CELL), -(xy[1] % GRID_CELL), 0.0)
        # Pose in the parent's frame: R_p^T (x_b - x_p) and conj(q_p) q_b.
        p, b = self.parents, self.ids
        rot_p = d.xmat[p].reshape(-1, 3, 3)
        pos = np.einsum("nji,nj->ni", rot_p, d.xpos[b] - d.xpos[p])
        quat = quat_mul(d.xquat[p] * np.array([1, -1, -1, -1]), d.xquat[b])
        moved = ~(np.abs(pos - self.sent_pos).max(1) <= 1e-6)          # NaN (never sent) counts as moved
        turned = ~(np.abs(quat - self.sent_quat).max(1) <= 1e-6)
        for k in np.flatnonzero(moved):
            self.frames[k].position = pos[k]
        for k in np.flatnonzero(turned):
            self.frames[k].wxyz = quat[k]
        self.sent_pos[moved], self.sent_quat[turned] = pos[moved], quat[turned]


class Viewer:
    """The page of one play.py run: scene, readouts, and the controls' handlers.

    play.py calls before_step(state) -> state before each env.step, after_step(...) after it, and
    runs until `running` turns False (Ctrl-C); close() stops the server.
    """

    def __init__(self, env, args):
        try:
            import viser
        except ImportError:
            raise UserError('--viewer needs viser: pip install -e ".[viewer]"') from None
        check_bind(args.host, args.port)
        # A browser's spare connection closed before its first request (Chromium opens some) is logged
        # by the websockets server as a traceback on stderr: noise for play.py's user.
        logging.getLogger("websockets.server").setLevel(logging.CRITICAL)
        with contextlib.redirect_stdout(io.StringIO()):     # viser's own banner: play.py's stdout is its metrics
            self.server = viser.ViserServer(host=args.host, port=args.port, verbose=False)
        if args.port and self.server.get_port() != args.port:     # lost a race for the port
            self._stop_server()
            raise UserError(f"--port {args.port} is in use on {args.host}: choose another --port")
        import jax
        from bridge.policy import SHIPPED_JUMP_POLICY, SHIPPED_POLICY
        from mjx_env.config import CommandConfig

        self.jax, self.env, self.n = jax, env, env.num_envs
        self.dt = env.cfg.env.dt
        self.bv = env.model.base_qvel_adr
        self.bq = env.model.base_qpos_adr
        self.seed = args.seed
        checkpoint = Path(args.checkpoint) if args.checkpoint else SHIPPED_POLICY
        self.policy = checkpoint.name
        # The policy takes jump commands: asked for on the command line, or the shipped jump policy.
        jumps = args.jump is not None or checkpoint.resolve() == SHIPPED_JUMP_POLICY.resolve()
        self.running, self.paused = True, False
        self.lock = threading.Lock()
        self.pending = []                                 # (op, rows, value) from the handlers
        self.held = np.full((self.n, 4), np.nan)          # commands the user set (NaN: the env's own)
        self.step_once = False
        self.selected, self.all_robots = 0, self.n == 1
        self.watched = 0                                  # the robot shown: `selected` as of the last step
        self.steps, self.falls = 0, np.zeros(self.n, int)
        self.history = deque(maxlen=int(HISTORY_S / self.dt))
        self.wall = deque(maxlen=int(2.0 / self.dt))       # (wall time, step) for the real-time factor
        self.due = None                                   # wall time of the next step
        self.last_readout = 0.0
        self.last = None                                  # (commands, lin_vel, ang_vel, height) of the watched env
        self.header = (f"**{self.policy}** on `{Path(env.model.xml_path).name}`, backend **{env.backend}**, "
                       f"{self.n} robot{'s' if self.n > 1 else ''}")

        self.scene = Scene(self.server, env.model)
        cam = self.server.initial_camera
        cam.position, cam.look_at = (1.1, -1.3, 0.75), (0.0, 0.0, 0.25)
        gui = self.server.gui
        self.status = gui.add_markdown(self.header)
        if self.n > 1:
            self.robot = gui.add_dropdown("robot", [str(i) for i in range(self.n)], initial_value="0")
            self.robot.on_update(lambda e: self.select(int(e.target.value)))
            self.steer_all = gui.add_checkbox("steer all robots", False)
            self.steer_all.on_update(lambda e: setattr(self, "all_robots", bool(e.target.value)))
        c = CommandConfig()            # the training's ranges: what the policy has seen
        ranges = dict(vx=c.lin_vel_x_range, vy=c.lin_vel_y_range, yaw=c.ang_vel_range, height=c.height_range)
        labels = dict(vx="v_x (m/s)", vy="v_y (m/s)", yaw="yaw rate (rad/s)", height="height (m)")
        self.shown = {}                  # slider -> value the page last set itself (not the user's)
        with gui.add_folder("Commands"):
            self.sliders = {}
            for k in COMMANDS:
                lo, hi = ranges[k]
                self.sliders[k] = gui.add_slider(labels[k], lo, hi, step=0.01, initial_value=float(np.clip(0, lo, hi)))
                self.sliders[k].on_update(lambda e, k=k: self.set_command(k, e.target.value))
        with gui.add_folder("Push and jump"):
            self.push_dir = gui.add_slider("push direction (deg, 0: forward, 90: left)", 0, 315, step=45,
                                           initial_value=0)
            self.kick = gui.add_number("push (m/s)", 1.0, min=0.0, max=3.0, step=0.1)
            self.push_button = gui.add_button("Push")
            self.push_button.on_click(lambda e: self.push(self.push_dir.value, self.kick.value))
            self.jump_button = None
            if jumps:
                self.jump_height = gui.add_slider("jump height (m)", 0.35, 1.5, step=0.05,
                                                  initial_value=args.jump if args.jump is not None else 0.6)
                self.jump_button = gui.add_button("Jump")
                self.jump_button.on_click(lambda e: self.jump(self.jump_height.value))
        with gui.add_folder("Run"):
            self.pause_button = gui.add_button("Pause")
            self.pause_button.on_click(lambda e: self.toggle_pause())
            self.step_button = gui.add_button("Step", disabled=True)
            self.step_button.on_click(lambda e: self.request_step())
            self.reset_button = gui.add_button("Reset")
            self.reset_button.on_click(lambda e: self.reset())
            self.follow = gui.add_checkbox("follow the robot", True)
        self.readout = gui.add_markdown("")
        empty = tuple(np.zeros(1) for _ in range(5))
        self.plot = gui.add_uplot(empty, (
            {"label": "t (s)"},
            {"label": "cmd v_x", "stroke": "#1f77b4", "dash": [6, 4], "width": 1.5},
            {"label": "v_x", "stroke": "#1f77b4", "width": 1.5},
            {"label": "cmd yaw", "stroke": "#d62728", "dash": [6, 4], "width": 1.5},
            {"label": "yaw rate", "stroke": "#d62728", "width": 1.5}),
            title="commanded (dashed) vs measured", scales={"x": {"time": False}}, aspect=1.6)
        self.previous_sigint = signal.signal(signal.SIGINT, self._sigint)
        host = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(args.host, f"[{args.host}]" if ":" in args.host
                                                           else args.host)        # an address to open
        print(f"viewer: http://{host}:{self.server.get_port()} (Ctrl-C stops and prints the metrics)",
              file=sys.stderr, flush=True)

    # ---- handlers: called on viser's threads (or by tests); they only record the request ----------
    def targets(self) -> np.ndarray:
        return np.arange(self.n) if self.all_robots else np.array([self.selected])

    def set_command(self, name: str, value: float) -> None:
        if self.shown.pop(name, None) == value:  # the page showing the env's command, not the user
            return
        with self.lock:
            self.held[self.targets(), COMMANDS.index(name)] = float(value)

    def push(self, direction_deg: float, speed: float) -> None:
        with self.lock:
            self.pending.append(("push", self.targets(), (math.radians(direction_deg), float(speed))))

    def jump(self, height: float) -> None:
        with self.lock:
            self.pending.append(("jump", self.targets(), float(height)))

    def reset(self) -> None:
        with self.lock:
            self.pending.append(("reset", self.targets(), None))

    def toggle_pause(self) -> None:
        self.paused = not self.paused
        self.pause_button.label = "Resume" if self.paused else "Pause"
        self.step_button.disabled = not self.paused
        self.due = None

    def request_step(self) -> None:
        self.step_once = True

    def select(self, i: int) -> None:
        self.selected = i                        # after_step (the play loop's thread) switches to it
        self.last_readout = 0.0                  # and refreshes the readouts and sliders at once

    def _sigint(self, signum, frame):
        if not self.running:                 # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.running = False

    # ---- the play loop's side -------------------------------------------------------------------
    def before_step(self, state):
        """Apply the user's requests, wait while paused, keep to real time; the state to step."""
        if self.last is None:                    # the first step: show the start
            self.show_commands(np.asarray(state.commands[self.selected]))
            self.scene.pose(np.asarray(state.qpos[self.selected]), self.follow.value)
        state = self._apply(state)
        while self.paused and self.running and not self.step_once:
            time.sleep(0.02)
            if self.pending:
                state = self._apply(state)
                self.scene.pose(np.asarray(state.qpos[self.selected]), self.follow.value)
        self.step_once = False
        self.pace()
        return state

    def _apply(self, state):
        jax, jnp = self.jax, self.jax.numpy
        put = lambda x: jax.device_put(x, self.env.device)
        with self.lock:
            ops, self.pending = self.pending, []
            held = self.held.copy()
        for op, rows, value in ops:
            mask = np.zeros(self.n, bool)
            mask[rows] = True
            if op == "reset":
                fresh = self.env.reset(jax.random.fold_in(jax.random.PRNGKey(self.seed), 1 + self.steps))
                m = put(mask)
                state = jax.tree.map(lambda new, old: jnp.where(m.reshape((-1,) + (1,) * (old.ndim - 1)), new, old),
                                     fresh, state)
            elif op == "push":            # horizontal, in the base's heading frame: 0 forward, 90 left
                angle, speed = value
                qpos, qvel = np.asarray(state.qpos), np.array(state.qvel)
                for i in rows:
                    a = base_yaw(qpos[i, self.bq + 3:self.bq + 7]) + angle
                    qvel[i, self.bv:self.bv + 2] += speed * np.array([math.cos(a), math.sin(a)])
                state = state.replace(qvel=put(qvel))
            elif op == "jump":
                state = self.env.with_jump(state, put(mask), put(np.full(self.n, value, np.float32)))
        # Commands the user set stay set, through the env's own resamples and resets.
        cmds = np.asarray(state.commands)
        want = np.where(np.isnan(held), cmds[:, :4], held).astype(cmds.dtype)
        if not np.array_equal(want, cmds[:, :4]):
            state = self.env.with_commands(state, put(np.concatenate([want, cmds[:, 4:]], axis=1)))
        return state

    def pace(self) -> None:
        """Sleep so that a step takes dt of wall time; when behind, carry on without catching up."""
        now = time.perf_counter()
        if self.due is None:                     # the start, or after a pause: measure afresh
            self.wall.clear()
        self.due = now if self.due is None else self.due + self.dt
        if self.due > now:
            time.sleep(self.due - now)
        elif now - self.due > 5 * self.dt:
            self.due = now

    def after_step(self, state, metrics: dict, commands) -> None:
        """After env.step: `metrics` of the states reached, `commands` the step was taken under."""
        self.steps += 1
        self.falls += np.asarray(state.terminated) & np.asarray(state.done)
        if self.watched != self.selected:
            self.watched = self.selected
            self.history.clear()
        i = self.watched
        lin, ang, h = metrics["lin_vel"][i], metrics["ang_vel"][i], float(metrics["height"][i])
        self.last = (np.asarray(commands[i]), lin, ang, h)
        self.history.append((self.steps * self.dt, commands[i, 0], lin[0], commands[i, 2], ang[2]))
        self.wall.append((time.perf_counter(), self.steps))
        with self.server.atomic():
            self.scene.pose(np.asarray(state.qpos[i]), self.follow.value)
        now = time.perf_counter()
        if now - self.last_readout >= 1.0 / READOUT_HZ:
            self.last_readout = now
            self._readouts(state)

    def rtf(self) -> float:
        """Simulated time over wall time in the last two seconds of stepping."""
        if len(self.wall) < 2:
            return float("nan")
        (t0, s0), (t1, s1) = self.wall[0], self.wall[-1]
        return (s1 - s0) * self.dt / max(t1 - t0, 1e-9)

    def _readouts(self, state) -> None:
        rtf = self.rtf()
        speed = f"real-time factor {rtf:.2f}"
        if rtf < SLOW_RTF and not self.paused:
            speed += f" — **slower than real time**: a step takes longer than {self.dt * 1e3:g} ms on this machine"
        self.status.content = f"{self.header}  \nsim time {self.steps * self.dt:.1f} s, {speed}"
        cmd, lin, ang, h = self.last
        i = self.watched
        self.readout.content = "\n".join([
            f"robot {i}: falls {self.falls[i]}, step {int(np.asarray(state.episode_step[i]))} of its episode; "
            f"falls of all robots {int(self.falls.sum())}", "",
            "| | commanded | measured |", "|---|---|---|",
            f"| v_x (m/s) | {cmd[0]:+.2f} | {lin[0]:+.2f} |",
            f"| v_y (m/s) | {cmd[1]:+.2f} | {lin[1]:+.2f} |",
            f"| yaw rate (rad/s) | {cmd[2]:+.2f} | {ang[2]:+.2f} |",
            f"| height (m) | {cmd[3]:.2f} | {h:.2f} |"])
        if self.history:
            self.plot.data = tuple(np.asarray(c, float) for c in zip(*self.history))
        self.show_commands(cmd)

    def show_commands(self, cmd) -> None:
        """The sliders show the watched robot's commands: the user's where set, else its own."""
        with self.lock:
            held = self.held[self.watched].copy()
        for k, v, h in zip(COMMANDS, cmd[:4], held):
            v = round(float(h if not np.isnan(h) else v), 2)
            if abs(self.sliders[k].value - v) > 0.005:
                self.shown[k] = v
                self.sliders[k].value = v

    def close(self) -> None:
        signal.signal(signal.SIGINT, self.previous_sigint)
        self._stop_server()

    def _stop_server(self) -> None:
        with contextlib.redirect_stdout(io.StringIO()):     # viser prints "Server stopped" from its thread
            self.server.stop()
