"""Evaluate a policy: N envs for M episodes with fixed seeds, print tracking metrics, optional video.

    python play.py                                   # the shipped policy, the acceptance protocol
    python play.py --checkpoint logs/go2-cpu/model_299.pt --vx 0.5 --episodes 2
    python play.py --xml-path ../shared/reference/unitree_go2/scene.xml       # sim-to-sim
    python play.py --num_envs 1 --duration 10 --video go2.mp4                # MP4, camera follows
    python play.py --checkpoint policies/go2_jump.pt --jump 0.6 --jump-every 2   # jump on command
    python play.py --viewer                          # watch and steer it live: http://127.0.0.1:8080

Commands are sampled once per episode, uniformly in the given ranges (a single value fixes one),
and held for the whole episode. Metrics are means over all steps of all episodes.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import mjx_env  # noqa: F401
from mjx_env.errors import OneLineParser, UserError, first_line


def value_range(name, values):
    if len(values) not in (1, 2):
        raise UserError(f"--{name} takes one value or a LOW HIGH pair")
    lo, hi = (values[0], values[0]) if len(values) == 1 else values
    if lo > hi:
        raise UserError(f"--{name} range must be LOW HIGH with LOW <= HIGH, got {lo} {hi}")
    return (float(lo), float(hi))


def parse_args(argv=None):
    p = OneLineParser(prog="play.py", description="Evaluate a Go2 policy.")
    p.add_argument("--checkpoint", default=None, help="rsl_rl checkpoint or exported actor (default: shipped policy)")
    p.add_argument("--num_envs", "-B", type=int, default=64)
    p.add_argument("--episodes", type=int, default=1, help="episodes per env")
    p.add_argument("--duration", type=float, default=20.0, help="episode length in seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vx", type=float, nargs="+", default=[0.3, 1.0], help="forward command (m/s): V or LO HI")
    p.add_argument("--vy", type=float, nargs="+", default=[0.0], help="lateral command (m/s)")
    p.add_argument("--yaw", type=float, nargs="+", default=[0.0], help="yaw-rate command (rad/s)")
    p.add_argument("--height", type=float, nargs="+", default=[0.3], help="base height command (m)")
    p.add_argument("--xml-path", "--xml_path", dest="xml_path", default=None)
    p.add_argument("--backend", default="mujoco", help="mujoco (default) or mjx")
    p.add_argument("--device", default=None, help="device of the mjx backend and the actor, as in train.py "
                                                  "(cuda:0 when torch and JAX both see a GPU); mujoco: cpu")
    p.add_argument("--matmul-precision", "--matmul_precision", dest="matmul_precision", default="highest",
                   choices=("highest", "default"),
                   help="JAX float32 matmuls: highest (default; full float32 as C MuJoCo, no TF32 on GPU) or default")
    p.add_argument("--video", default=None, metavar="OUT.mp4", help="render env --video-env to an MP4")
    p.add_argument("--video-env", type=int, default=0)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height-px", type=int, default=480)
    p.add_argument("--json", default=None, help="also write the metrics as JSON here")
    p.add_argument("--plot", default=None, metavar="OUT.png",
                   help="commanded vs measured velocities of a few envs, and the error distribution")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it is off when not on a terminal)")
    p.add_argument("--push", type=float, default=0.0, metavar="M",
                   help="kick the base to M m/s more, horizontally in a random direction, every --push-every s")
    p.add_argument("--push-every", type=float, default=4.0, metavar="S", help="seconds between pushes (default 4)")
    p.add_argument("--randomize", action="store_true",
                   help="evaluate under the training's domain randomization (physics drawn per env and episode)")
    p.add_argument("--jump", type=float, default=None, metavar="H",
                   help="command a jump to base height H (m) every --jump-every seconds while walking")
    p.add_argument("--jump-every", type=float, default=2.0, metavar="S", help="seconds between jump commands")
    p.add_argument("--viewer", action="store_true",
                   help="watch and steer the run live in a browser (viser; runs until Ctrl-C, then prints the metrics)")
    p.add_argument("--port", type=int, default=8080, help="--viewer's port (default 8080)")
    p.add_argument("--host", default="127.0.0.1",
                   help="--viewer's address (default 127.0.0.1: this machine only; reach it through an SSH tunnel)")
    return p.parse_args(argv)


def randomization_config(args):
    """--randomize and --push as a RandomizationConfig (pushes of exactly M m/s every S s)."""
    from mjx_env.config import RandomizationConfig
    if args.push < 0 or args.push_every <= 0:
        raise UserError("--push must be >= 0 m/s and --push-every > 0 s")
    return RandomizationConfig(enabled=args.randomize, push=args.push > 0,
                               push_velocity_range=(args.push, args.push),
                               push_interval_range_s=(args.push_every, args.push_every))


def eval_config(args):
    from mjx_env.config import CommandConfig, EnvConfig, TaskConfig
    return TaskConfig(
        randomization=randomization_config(args),
        env=EnvConfig(episode_length_s=args.duration),
        command=CommandConfig(
            lin_vel_x_range=value_range("vx", args.vx), lin_vel_y_range=value_range("vy", args.vy),
            ang_vel_range=value_range("yaw", args.yaw), height_range=value_range("height", args.height),
            resampling_time_s=2 * args.duration + 1.0, random_resample_prob=0.0, jumps_enabled=False,
            height_scales_velocity=False, reset_height_to_nominal=False),
    )


def jump_schedule(args, cfg):
    """Control steps between jump commands, or None without --jump; one-line errors for bad values."""
    if args.jump is None:
        return None
    window = cfg.command.jump_reward_steps
    every = int(round(args.jump_every / cfg.env.dt))
    if not args.jump > 0:
        raise UserError(f"--jump must be a positive base height in m, got {args.jump}")
    if every < window:
        raise UserError(f"--jump-every must be at least the jump window, {window * cfg.env.dt:g} s, "
                        f"got {args.jump_every}")
    if every + window > cfg.env.max_episode_length:
        raise UserError(f"--jump-every {args.jump_every} s leaves no whole jump window inside a "
                        f"{args.duration} s episode: lower it or raise --duration")
    return every


class JumpLog:
    """Per jump command: the apex base height in its window, its flight, and falls during or after it.

    The window is jump_reward_steps control steps after the command; a fall within it counts as
    during the jump, a fall in the following window as after it. A jump whose window an episode's
    time-out cuts short is not counted. Flight is the longest run of control steps in the window with
    no foot in contact (all four gaps of mjx_env.feet.FootProbe > 0); it is sampled at the control
    rate, so a flight shorter than one control step can be missed. The lowest foot's peak is the
    highest the lowest of the four feet got in the window (its gap): how far the whole robot left the
    floor (NaN for a jump that ended in a fall before any gap was measured).
    """

    def __init__(self, n: int, window: int):
        import numpy as np
        self.np, self.window = np, window
        self.since = np.full(n, -1)          # steps since the env's last command (-1: none)
        self.start, self.apex, self.target = np.zeros(n), np.zeros(n), np.zeros(n)
        self.run, self.flight = np.zeros(n, int), np.zeros(n, int)    # airborne steps: current run, longest
        self.lift = np.full(n, np.nan)       # the lowest foot's highest gap in the window (NaN: none yet)
        self.jumps = []                      # (target, height at the command, apex, fell, longest flight, lift)
        self.falls_during = self.falls_after = 0

    def command(self, mask, heights, target: float) -> None:
        """Jump commands where mask, given in states of base height `heights`."""
        self.since[mask] = 0
        self.start[mask] = self.apex[mask] = heights[mask]
        self.target[mask] = target
        self.run[mask] = self.flight[mask] = 0
        self.lift[mask] = self.np.nan

    def watching(self):
        """Envs whose next step falls inside a jump window (only these need the flight check)."""
        return (self.since >= 0) & (self.since < self.window)

    def step(self, heights, done, fell, gaps=None) -> None:
        """After a step: base heights of the states reached (before auto-reset), who ended, who fell, and
        the (n, 4) foot gaps of those states (FootProbe; NaN where not computed, None: flight not checked)."""
        np = self.np
        tracked = self.since >= 0
        self.since[tracked] += 1
        inside = tracked & (self.since <= self.window)
        self.apex[inside] = np.maximum(self.apex[inside], heights[inside])
        if gaps is not None:
            lowest = gaps.min(axis=1)
            self.run = np.where(inside & (lowest > 0), self.run + 1, 0)
            self.flight = np.maximum(self.flight, self.run)
            self.lift[inside] = np.fmax(self.lift[inside], lowest[inside])
        self.falls_during += int(np.sum(fell & inside))
        self.falls_after += int(np.sum(fell & tracked & ~inside & (self.since <= 2 * self.window)))
        for i in np.flatnonzero(inside & ((self.since == self.window) | fell)):
            self.jumps.append((self.target[i], self.start[i], self.apex[i], bool(fell[i]), self.flight[i],
                               self.lift[i]))
        self.since[done] = -1

    def summary(self, tolerance: float, dt: float) -> dict:
        np = self.np
        j = np.array(self.jumps, float).reshape(-1, 6)
        target, start, apex, flight, lift = j[:, 0], j[:, 1], j[:, 2], j[:, 4], j[:, 5]
        stat = (lambda x: float(x.mean()) if len(x) else float("nan"))
        spread = (lambda x: float(x.std()) if len(x) else float("nan"))
        peak = (lambda x: float(x.max()) if len(x) else float("nan"))
        lift = lift[~np.isnan(lift)]
        return {"jumps": len(j), "jump_target": stat(target),
                "apex_height_mean": stat(apex), "apex_height_std": spread(apex),
                "apex_rise_mean": stat(apex - start), "apex_rise_std": spread(apex - start),
                "apex_within_tolerance": stat(np.abs(apex - target) < tolerance), "tolerance": tolerance,
                "with_flight": stat(flight > 0), "flight_time_mean": stat(flight * dt),
                "flight_time_max": peak(flight * dt),
                "lowest_foot_peak_mean": stat(lift), "lowest_foot_peak_max": peak(lift),
                "falls_during_jump": self.falls_during, "falls_after_jump": self.falls_after}


def choose_gl():
    """Headless OpenGL for MuJoCo's renderer: EGL where a GPU render node exists, else OSMesa."""
    if "MUJOCO_GL" not in os.environ:
        has_gpu = any(Path("/dev/dri").glob("renderD*")) if Path("/dev/dri").exists() else False
        os.environ["MUJOCO_GL"] = "egl" if has_gpu else "osmesa"
        os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])


# What each headless backend needs, as PyOpenGL loads it (lib<name>.so or lib<name>.so.N), and the
# Debian/Ubuntu package that provides it.
GL_LIBRARIES = {"osmesa": [("OSMesa", "libosmesa6")], "egl": [("EGL", "libegl1"), (("OpenGL", "GL"), "libgl1")]}


def loadable(name: str) -> bool:
    import ctypes
    for filename in [f"lib{name}.so"] + [f"lib{name}.so.{i}" for i in range(9, -1, -1)]:
        try:
            ctypes.cdll.LoadLibrary(filename)
            return True
        except OSError:
            continue
    return False


def check_gl():
    """Fail in one line when MUJOCO_GL's library is missing: importing mujoco would otherwise die
    inside PyOpenGL with a long traceback (AttributeError: 'NoneType' ... 'glGetError')."""
    backend = os.environ.get("MUJOCO_GL", "").lower()
    for names, package in GL_LIBRARIES.get(backend, []):
        names = (names,) if isinstance(names, str) else names
        if not any(loadable(n) for n in names):
            other = "MUJOCO_GL=egl on a machine with a GPU" if backend == "osmesa" else "MUJOCO_GL=osmesa"
            raise UserError(f"--video: MuJoCo's {backend} renderer needs lib{names[0]}, which is not installed: "
                            f"apt-get install {package} (Debian/Ubuntu), or use {other}")


class VideoWriter:
    def __init__(self, env, path, width, height, fps):
        import mujoco
        try:
            import imageio.v2 as imageio
        except ImportError:
            raise UserError("--video needs imageio with ffmpeg: pip install 'imageio[ffmpeg]'") from None
        m = env.model.mj_model
        if m.vis.global_.offwidth < width or m.vis.global_.offheight < height:
            m.vis.global_.offwidth, m.vis.global_.offheight = max(width, m.vis.global_.offwidth), \
                max(height, m.vis.global_.offheight)
        try:
            self.renderer = mujoco.Renderer(m, height, width)
        except Exception as exc:
            raise UserError(f"cannot open a headless OpenGL context ({os.environ.get('MUJOCO_GL')}): "
                            f"{first_line(exc)}; "
                            "on a machine without a GPU: apt-get install libosmesa6 and MUJOCO_GL=osmesa") from None
        self.m, self.d = m, mujoco.MjData(m)
        self.cam = mujoco.MjvCamera()
        self.cam.type = mujoco.mjtCamera.mjCAMERA_TRACKING
        self.cam.trackbodyid = env.model.base_body
        self.cam.distance, self.cam.elevation, self.cam.azimuth = 1.6, -20.0, 120.0
        self.writer = imageio.get_writer(path, fps=fps, codec="libx264", quality=7, macro_block_size=1)
        self.mujoco = mujoco

    def add(self, qpos):
        self.d.qpos[:] = qpos
        self.mujoco.mj_forward(self.m, self.d)
        self.renderer.update_scene(self.d, camera=self.cam)
        self.writer.append_data(self.renderer.render())

    def close(self):
        self.writer.close()
        self.renderer.close()


def evaluate(args) -> dict:
    import jax
    import numpy as np
    import torch
    from tqdm import tqdm

    from bridge.device import resolve
    from bridge.policy import load_actor
    from plots import TrackingTrace
    from bridge.vec_env import to_torch
    from mjx_env.env import Go2Env

    if args.num_envs < 1:
        raise UserError(f"--num_envs must be >= 1, got {args.num_envs}")
    if args.episodes < 1 or args.duration <= 0:
        raise UserError("--episodes must be >= 1 and --duration > 0")
    if args.backend not in ("mujoco", "mjx"):
        raise UserError(f"unknown --backend {args.backend!r}: choose mujoco or mjx")
    if args.plot:
        from plots import check_target
        check_target(args.plot)
    cfg = eval_config(args)
    jump_every = jump_schedule(args, cfg)
    devices = resolve(args.device if args.backend == "mjx" else "cpu", args.matmul_precision)
    actor = load_actor(args.checkpoint, cfg.obs.num_obs, cfg.env.num_actions).to(devices.torch)  # where the env is
    env = Go2Env(args.num_envs, args.backend, cfg, xml_path=args.xml_path, device=devices.jax)
    video = None
    if args.video:
        if not 0 <= args.video_env < args.num_envs:
            raise UserError(f"--video-env must be in [0, {args.num_envs - 1}]")
        video = VideoWriter(env, args.video, args.width, args.height_px, round(1 / cfg.env.dt))
    viewer = None
    if args.viewer:
        from viewer import Viewer
        viewer = Viewer(env, args)

    n, m = args.num_envs, args.episodes
    if viewer is not None:        # runs until Ctrl-C: every episode ended by then counts
        m = sys.maxsize
    state = env.reset(jax.random.PRNGKey(args.seed))
    episodes = np.zeros(n, int)
    falls = steps = 0
    sums = dict(vx=0.0, vy=0.0, yaw=0.0, height=0.0)
    lengths = []
    trace = TrackingTrace(n, cfg.env.dt) if args.plot else None
    bar = tqdm(total=m * cfg.env.max_episode_length, unit="step", desc="play", leave=False,
               disable=True if args.no_progress or viewer else None)   # None: off when not a terminal
    jumps = JumpLog(n, cfg.command.jump_reward_steps) if jump_every else None
    probe = None
    if jump_every:
        from mjx_env.feet import FootProbe
        probe = FootProbe(env.model)
        if not probe.has_gap:
            raise UserError(f"{env.model.xml_path}: the flight check of --jump needs sphere feet and one "
                            "floor plane")
    with torch.inference_mode():
        while episodes.min() < m if viewer is None else viewer.running:
            if viewer is not None:
                state = viewer.before_step(state)
            commands = np.asarray(state.commands)
            actions = actor(to_torch(state.obs))
            state = env.step(state, jax.dlpack.from_dlpack(actions.contiguous()))
            counting = episodes < m
            met = {k: np.asarray(v) for k, v in state.metrics.items()}
            err = dict(vx=np.abs(met["lin_vel"][:, 0] - commands[:, 0]),
                       vy=np.abs(met["lin_vel"][:, 1] - commands[:, 1]),
                       yaw=np.abs(met["ang_vel"][:, 2] - commands[:, 2]),
                       height=np.abs(met["height"] - commands[:, 3]))
            for k in sums:
                sums[k] += float(err[k][counting].sum())
            steps += int(counting.sum())
            if video is not None and episodes[args.video_env] < m:
                video.add(np.asarray(state.qpos[args.video_env]))
            done = np.asarray(state.done) & counting
            falls += int((np.asarray(state.terminated) & done).sum())
            lengths += list(np.asarray(state.final_episode_length)[done])
            episodes += done
            if trace is not None:
                trace.add(commands, met["lin_vel"], met["ang_vel"], counting, done)
            if jumps is not None:
                # A done env's qpos is already its reset pose: its gaps stay NaN (not airborne).
                watched = jumps.watching() & ~np.asarray(state.done)
                gaps = np.full((n, 4), np.nan)
                if watched.any():
                    gaps[watched] = probe(np.asarray(state.qpos)[watched])[1]
                jumps.step(met["height"], np.asarray(state.done), np.asarray(state.terminated), gaps)
                step = np.asarray(state.episode_step)
                jump = counting & ~np.asarray(state.done) & (step > 0) & (step % jump_every == 0)
                if jump.any():
                    jumps.command(jump, met["height"], args.jump)
                    state = env.with_jump(state, jax.numpy.asarray(jump),
                                          jax.numpy.full(n, args.jump, jax.numpy.float32))
            if viewer is not None:
                viewer.after_step(state, met, commands)
            bar.update()
    bar.close()
    if viewer is not None:
        viewer.close()
        if steps == 0:
            raise UserError("stopped before the first step: no metrics")
    env.close()
    if video is not None:
        video.close()
    total = int(np.minimum(episodes, m).sum())       # n * m, or the episodes ended before Ctrl-C
    if trace is not None:
        trace.draw(args.plot, f"{Path(args.checkpoint or 'shipped policy').name} on {Path(env.model.xml_path).name} "
                   f"({args.backend}), {n} envs x {m if viewer is None else 'live'} episode(s), seed {args.seed}, "
                   "commands "
                   + ", ".join(f"{k} {lo:g}" + (f"..{hi:g}" if hi > lo else "") for k, (lo, hi) in
                               (("vx", value_range("vx", args.vx)), ("vy", value_range("vy", args.vy)),
                                ("yaw", value_range("yaw", args.yaw)))))
    res = {
        "checkpoint": str(args.checkpoint or "shipped policy"), "model": env.model.xml_path,
        "backend": args.backend, "num_envs": n, "episodes": total, "seed": args.seed,
        "commands": {"vx": value_range("vx", args.vx), "vy": value_range("vy", args.vy),
                     "yaw": value_range("yaw", args.yaw), "height": value_range("height", args.height)},
        "mean_abs_vx_error": sums["vx"] / steps, "mean_abs_vy_error": sums["vy"] / steps,
        "mean_abs_yaw_rate_error": sums["yaw"] / steps, "mean_abs_height_error": sums["height"] / steps,
        "fall_rate": falls / total if total else float("nan"),
        "mean_episode_length_s": float(np.mean(lengths)) * cfg.env.dt if lengths else float("nan"),
        "randomize": args.randomize, "push_m_s": args.push, "push_every_s": args.push_every if args.push else None,
    }
    if jumps is not None:
        res["jump"] = jumps.summary(cfg.reward.jump_height_tolerance, cfg.env.dt)
    return res


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.video:
            choose_gl()
            check_gl()
        res = evaluate(args)
    except UserError as exc:
        print(f"play.py: error: {exc}", file=sys.stderr)
        return 2
    print(f"model {res['model']} ({res['backend']}), {res['num_envs']} envs, {res['episodes']} episodes, "
          f"seed {res['seed']}, commands {res['commands']}")
    for k in ("mean_abs_vx_error", "mean_abs_vy_error", "mean_abs_yaw_rate_error", "mean_abs_height_error",
              "fall_rate", "mean_episode_length_s"):
        print(f"  {k:<26} {res[k]:.4f}")
    if "jump" in res:
        j = res["jump"]
        print(f"jumps to {args.jump} m every {args.jump_every} s: {j['jumps']} jumps")
        print(f"  apex base height           {j['apex_height_mean']:.3f} +- {j['apex_height_std']:.3f} m")
        print(f"  apex rise above the start  {j['apex_rise_mean']:.3f} +- {j['apex_rise_std']:.3f} m")
        print(f"  apex within {j['tolerance']} m of target {j['apex_within_tolerance']:.3f}")
        print(f"  with a flight phase        {j['with_flight']:.3f} (no foot in contact; longest "
              f"{j['flight_time_mean']:.3f} s mean, {j['flight_time_max']:.3f} s max)")
        print(f"  lowest foot's peak gap     {j['lowest_foot_peak_mean']:.3f} m mean, "
              f"{j['lowest_foot_peak_max']:.3f} m max")
        print(f"  falls during / after a jump {j['falls_during_jump']} / {j['falls_after_jump']}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    if args.video:
        print(f"wrote {args.video}")
    if args.plot:
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
