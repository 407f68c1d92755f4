"""play.py's evaluation: N envs for M episodes with fixed seeds, tracking errors, falls, optional jumps,
video and plot; the named protocols of the README's accuracy tables (play --protocol), and what
play --json writes (KEYS)."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from mjx_env.errors import UserError
from mjx_env.files import check_folder
from tools.cli import check_backend, check_mjx_impl, value_range


VX_BIN = 0.25      # m/s: the commanded-speed bins of the signed v_x bias
SETTLE_S = 1.0     # s: the bias and the zero-yaw split count a command's steps after this long


@dataclasses.dataclass(frozen=True)
class Protocol:
    """A named evaluation: the defaults it gives play's flags (an explicit flag still wins). Commands
    are drawn once per episode, uniformly in each range, and held."""
    about: str
    vx: tuple = (0.3, 1.0)          # m/s
    vy: tuple = (0.0,)              # m/s
    yaw: tuple = (0.0,)             # rad/s
    height: tuple = (0.3,)          # m
    push: float = 0.0               # m/s, in a random horizontal direction, every push_every s
    push_every: float = 4.0         # s
    num_envs: int = 64
    episodes: int = 1
    duration: float = 20.0          # s
    seed: int = 0

    def defaults(self) -> dict:
        """{flag's dest: value}, as argparse holds them (lists for the command ranges)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "about"}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

    def overrides(self, args) -> dict:
        """The flags of `args` given a value other than this protocol's."""
        return {k: getattr(args, k) for k, v in self.defaults().items() if getattr(args, k) != v}


# The protocols of the README's accuracy tables ("A policy that knows its speed", "The drift"):
# 64 envs x 20 s, seed 0, on whichever model --model / --xml-path names.
PROTOCOLS = {
    "forward": Protocol("v_x U[0.3, 1.0] m/s, v_y 0, yaw 0"),
    "yaw": Protocol("forward's v_x with yaw U[-0.6, 0.6] rad/s", yaw=(-0.6, 0.6)),
    "omni": Protocol("v_x U[-0.5, 1.0] m/s, v_y U[-0.3, 0.3] m/s, yaw U[-0.5, 0.5] rad/s",
                     vx=(-0.5, 1.0), vy=(-0.3, 0.3), yaw=(-0.5, 0.5)),
    "push": Protocol("forward's commands, every robot kicked by 1 m/s every 4 s", push=1.0, push_every=4.0),
}


MODELS = ("training", "menagerie")      # play --model


def add_protocol(p) -> None:
    """--protocol and --model (play)."""
    p.add_argument("--protocol", choices=list(PROTOCOLS), default=None,
                   help="a named evaluation of the README's accuracy tables, 64 envs x 20 s, seed 0: "
                        + "; ".join(f"{k}: {v.about}" for k, v in PROTOCOLS.items())
                        + ". It sets the defaults of --vx --vy --yaw --height --push --push-every --num-envs "
                          "--episodes --duration --seed; a flag given explicitly still overrides it "
                          "(default: none, the flags' own defaults)")
    p.add_argument("--model", choices=MODELS, default=None,
                   help="the Go2 model to run on: training (Unitree_go2/go2_mjx_gym.xml, as without the flag) "
                        "or menagerie, MuJoCo Menagerie's unitree_go2/scene.xml, read from the folder "
                        "$GO2_MENAGERIE names (default ../shared/reference/unitree_go2 beside the checkout; "
                        "get it: git clone https://github.com/google-deepmind/mujoco_menagerie, then export "
                        "GO2_MENAGERIE=$PWD/mujoco_menagerie/unitree_go2). --xml-path takes any other file")


def parse_with_protocol(p, argv):
    """Parse argv; with --protocol, again with the protocol's values as the defaults, so that the
    flags given explicitly override it."""
    args = p.parse_args(argv)
    if args.protocol is not None:
        p.set_defaults(**PROTOCOLS[args.protocol].defaults())
        args = p.parse_args(argv)
    return args


def model_path(args):
    """--xml-path, or the file --model names (None: the training model)."""
    model = getattr(args, "model", None)
    if model is None:
        return args.xml_path
    if args.xml_path is not None:
        raise UserError(f"--model {model} and --xml-path {args.xml_path} both name a model: give one")
    if model == "training":
        return None
    from mjx_env.model import menagerie_scene
    return str(menagerie_scene())


class VxBias:
    """Signed v_x - command per VX_BIN-wide bin of commanded v_x: bin k holds k*w <= command < (k+1)*w,
    whatever the command (backward ones included), labelled "-0.50..-0.25"."""

    def __init__(self, width: float = VX_BIN):
        self.width = width
        self.sum, self.count = defaultdict(float), defaultdict(int)

    def add(self, command, vx, use) -> None:
        """One step: commanded and measured v_x per env; `use` picks the envs that count."""
        command = np.asarray(command, np.float64)[use]
        err = np.asarray(vx, np.float64)[use] - command
        k = np.floor(command / self.width).astype(int)
        for b in np.unique(k):
            self.sum[b] += float(err[k == b].sum())
            self.count[b] += int((k == b).sum())

    def label(self, b: int) -> str:
        return f"{b * self.width:+.2f}..{(b + 1) * self.width:+.2f}"

    def summary(self) -> dict:
        bins = sorted(self.count)
        bias = {self.label(b): self.sum[b] / self.count[b] for b in bins}
        steps = sum(self.count.values())
        return {"vx_bias_by_command": bias,
                "vx_bias_steps_by_command": {self.label(b): self.count[b] for b in bins},
                "vx_bias": sum(self.sum.values()) / steps if steps else None,
                "max_abs_vx_bias": max(map(abs, bias.values())) if bias else float("nan")}


class ZeroYaw:
    """The yaw rate while the yaw command is 0, all of it unasked-for turning: the mean |error| over
    every such step, and over each episode's settled such steps, split into a steady turn (|episode
    mean|) and the gait's sway about it (RMS about the episode mean), both averaged over episodes."""

    def __init__(self, num_envs: int):
        self.abs_sum, self.steps = 0.0, 0
        self.s1, self.s2, self.k = np.zeros(num_envs), np.zeros(num_envs), np.zeros(num_envs, int)
        self.turns, self.sways = [], []

    def add(self, yaw_command, yaw_rate, counting, settled, done) -> None:
        """One step; `done` ends the envs' episodes (the step itself is left out of the split, as a
        fall's last step is left out of the bias)."""
        yaw_rate = np.asarray(yaw_rate, np.float64)
        zero = (np.asarray(yaw_command) == 0) & counting
        self.abs_sum += float(np.abs(yaw_rate[zero]).sum())
        self.steps += int(zero.sum())
        use = zero & settled & ~done
        self.s1 += np.where(use, yaw_rate, 0.0)
        self.s2 += np.where(use, yaw_rate ** 2, 0.0)
        self.k += use
        self._close(np.asarray(done))

    def _close(self, ended) -> None:
        for i in np.flatnonzero(ended & (self.k > 0)):
            mean = self.s1[i] / self.k[i]
            self.turns.append(abs(mean))
            self.sways.append(float(np.sqrt(max(self.s2[i] / self.k[i] - mean ** 2, 0.0))))
        self.s1[ended], self.s2[ended], self.k[ended] = 0.0, 0.0, 0

    def summary(self) -> dict:
        self._close(np.ones(len(self.k), bool))          # episodes cut short (the viewer's Ctrl-C)
        return {"mean_abs_yaw_rate_error_at_zero_yaw_cmd": self.abs_sum / self.steps if self.steps else None,
                "yaw_steady_turn_at_zero_yaw_cmd": float(np.mean(self.turns)) if self.turns else None,
                "yaw_sway_rms_at_zero_yaw_cmd": float(np.mean(self.sways)) if self.sways else None}


# What play --json writes (errors are means over every step of every counted episode, base frame).
KEYS = {
    "checkpoint": "the policy file (or 'shipped policy')",
    "task": "the task the policy file names (key or ONNX metadata 'task'), null if it names none",
    "protocol": "--protocol's name, null without it",
    "protocol_overrides": "flags given a value other than the protocol's ({dest: value}), {} without --protocol",
    "model": "the MJCF file run", "backend": "--backend", "num_envs": "envs", "episodes": "episodes counted",
    "seed": "--seed", "commands": "the command ranges drawn from, {vx, vy, yaw, height: [lo, hi]}",
    "mean_abs_vx_error": "mean |v_x - command| (m/s)", "mean_abs_vy_error": "mean |v_y - command| (m/s)",
    "mean_abs_yaw_rate_error": "mean |yaw rate - command| (rad/s)",
    "mean_abs_height_error": "mean |base height - command| (m)",
    "falls": "episodes ended by the roll/pitch limit", "fall_rate": "falls / episodes",
    "mean_episode_length_s": "mean length of the episodes counted (s)",
    "randomize": "--randomize", "push_m_s": "--push (m/s)", "push_every_s": "--push-every (s), null without pushes",
    "vx_bias_by_command": "signed mean of v_x - command per 0.25 m/s bin of commanded v_x ('-0.50..-0.25': "
                          "-0.5 <= command < -0.25), over each command's steps after its first second, "
                          "a fall's last step left out",
    "vx_bias_steps_by_command": "the env steps each bin of vx_bias_by_command averages",
    "vx_bias": "the same signed mean over all of those steps (the bins' step-weighted mean), null if none",
    "max_abs_vx_bias": "the largest |bias| of any bin (NaN if none)",
    "mean_abs_yaw_rate_error_at_zero_yaw_cmd": "mean |yaw rate| over every step whose yaw command is 0 "
                                               "(under --protocol forward and push: all steps), null if none",
    "yaw_steady_turn_at_zero_yaw_cmd": "per episode, |mean yaw rate| over its steps at yaw command 0 after the "
                                       "first second: a steady turn (rad/s, mean over episodes), null if none",
    "yaw_sway_rms_at_zero_yaw_cmd": "per episode, the RMS of the yaw rate about that mean: the gait's sway "
                                    "(rad/s, mean over episodes), null if none",
    "estimator_abs_error_m_s": "policies with a velocity estimator: mean |estimate - true| per body axis {x, y, z}",
    "estimator_bias_m_s": "policies with a velocity estimator: mean estimate - true per body axis",
    "jump": "with --jump: the jumps' apex, flight and falls (tools/jumps.py)",
}
OPTIONAL_KEYS = ("estimator_abs_error_m_s", "estimator_bias_m_s", "jump")


def eval_config(args):
    from tools.rollout import episode_config
    return episode_config(
        args, lin_vel_x_range=value_range("vx", args.vx), lin_vel_y_range=value_range("vy", args.vy),
        ang_vel_range=value_range("yaw", args.yaw), height_range=value_range("height", args.height),
        jumps_enabled=False, height_scales_velocity=False, reset_height_to_nominal=False)


def evaluate(args) -> dict:
    import jax

    from tools.jumps import JumpLog
    from tools.plots import TrackingTrace
    from tools.rollout import PolicyLoop

    if args.num_envs < 1:
        raise UserError(f"--num-envs must be >= 1, got {args.num_envs}")
    if args.episodes < 1 or args.duration <= 0:
        raise UserError("--episodes must be >= 1 and --duration > 0")
    check_backend(args.backend)
    check_mjx_impl(getattr(args, "mjx_impl", "jax"), args.backend)
    args = argparse.Namespace(**{**vars(args), "xml_path": model_path(args)})
    protocol = getattr(args, "protocol", None)
    if args.plot:
        from tools.plots import check_target
        check_target(args.plot)
    for out in (getattr(args, "json", None), args.video):     # fail before the rollout, not after it
        if out:
            check_folder(out)
    cfg = eval_config(args)
    loop = PolicyLoop(args, cfg, args.checkpoint, args.num_envs)
    env = loop.env
    video = None
    if args.video:
        from tools.video import VideoWriter
        if not 0 <= args.video_env < args.num_envs:
            raise UserError(f"--video-env must be in [0, {args.num_envs - 1}]")
        video = VideoWriter(env, args.video, args.width, args.height_px, round(1 / cfg.env.dt))
    viewer = None
    if getattr(args, "viewer", False):
        from tools.viewer import Viewer
        viewer = Viewer(env, args)

    n, m = args.num_envs, args.episodes
    if viewer is not None:        # runs until Ctrl-C: every episode ended by then counts
        m = sys.maxsize
    bias, zero_yaw = VxBias(), ZeroYaw(n)
    settle = int(round(SETTLE_S / cfg.env.dt))
    state = env.reset(jax.random.PRNGKey(args.seed))
    episodes = np.zeros(n, int)
    falls = steps = 0
    sums = dict(vx=0.0, vy=0.0, yaw=0.0, height=0.0)
    lengths = []
    trace = TrackingTrace(n, cfg.env.dt) if args.plot else None
    bar = loop.progress(m * cfg.env.max_episode_length, "play", args.no_progress or viewer is not None)
    jumps = JumpLog(n, cfg.command.jump_reward_steps) if loop.jump_every else None
    probe = None
    if jumps is not None:
        from mjx_env.feet import FootProbe
        probe = FootProbe(env.model)
        if not probe.has_gap:
            raise UserError(f"{env.model.xml_path}: the flight check of --jump needs sphere feet and one "
                            "floor plane")
    while episodes.min() < m if viewer is None else viewer.running:
        if viewer is not None:
            state = viewer.before_step(state)
        commands = np.asarray(state.commands)
        settled = np.asarray(state.episode_step) >= settle
        state = loop.step(state)
        counting = episodes < m
        met = {k: np.asarray(v) for k, v in state.metrics.items()}
        err = dict(vx=np.abs(met["lin_vel"][:, 0] - commands[:, 0]),
                   vy=np.abs(met["lin_vel"][:, 1] - commands[:, 1]),
                   yaw=np.abs(met["ang_vel"][:, 2] - commands[:, 2]),
                   height=np.abs(met["height"] - commands[:, 3]))
        for k in sums:
            sums[k] += float(err[k][counting].sum())
        ended = np.asarray(state.done)
        bias.add(commands[:, 0], met["lin_vel"][:, 0], counting & settled & ~ended)
        zero_yaw.add(commands[:, 2], met["ang_vel"][:, 2], counting, settled, ended)
        steps += int(counting.sum())
        if video is not None and episodes[args.video_env] < m:
            video.add(np.asarray(state.qpos[args.video_env]))
        done = ended & counting
        falls += int((np.asarray(state.terminated) & done).sum())
        lengths += list(np.asarray(state.final_episode_length)[done])
        episodes += done
        if trace is not None:
            trace.add(commands, met["lin_vel"], met["ang_vel"], counting, done)
        if jumps is not None:
            # A done env's qpos is already its reset pose: its gaps stay NaN (not airborne).
            watched = jumps.watching() & ~ended
            gaps = np.full((n, 4), np.nan)
            if watched.any():
                gaps[watched] = probe(np.asarray(state.qpos)[watched])[1]
            jumps.step(met["height"], ended, np.asarray(state.terminated), gaps)
            jump = loop.jumps_due(state, counting)
            if jump.any():
                jumps.command(jump, met["height"], args.jump)
                state = loop.command_jumps(state, jump)
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
    commanded = {"vx": value_range("vx", args.vx), "vy": value_range("vy", args.vy),
                 "yaw": value_range("yaw", args.yaw), "height": value_range("height", args.height)}
    if trace is not None:
        trace.draw(args.plot, f"{Path(args.checkpoint or 'shipped policy').name} on {Path(env.model.xml_path).name} "
                   f"({args.backend}), " + (f"protocol {protocol}, " if protocol else "")
                   + f"{n} envs x {m if viewer is None else 'live'} episode(s), seed {args.seed}, commands "
                   + ", ".join(f"{k} {lo:g}" + (f"..{hi:g}" if hi > lo else "")
                               for k, (lo, hi) in commanded.items() if k != "height"))
    res = {
        "checkpoint": str(args.checkpoint or "shipped policy"), "task": loop.task(),
        "protocol": protocol, "protocol_overrides": PROTOCOLS[protocol].overrides(args) if protocol else {},
        "model": env.model.xml_path, "backend": args.backend, "num_envs": n, "episodes": total, "seed": args.seed,
        "commands": commanded,
        "mean_abs_vx_error": sums["vx"] / steps, "mean_abs_vy_error": sums["vy"] / steps,
        "mean_abs_yaw_rate_error": sums["yaw"] / steps, "mean_abs_height_error": sums["height"] / steps,
        "falls": falls, "fall_rate": falls / total if total else float("nan"),
        "mean_episode_length_s": float(np.mean(lengths)) * cfg.env.dt if lengths else float("nan"),
        "randomize": args.randomize, "push_m_s": args.push, "push_every_s": args.push_every if args.push else None,
    }
    res.update(bias.summary())
    res.update(zero_yaw.summary())
    res.update(loop.estimator_summary())
    if jumps is not None:
        res["jump"] = jumps.summary(cfg.reward.jump_height_tolerance, cfg.env.dt)
    return res
