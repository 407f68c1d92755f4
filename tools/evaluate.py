"""play.py's evaluation: N envs for M episodes with fixed seeds, tracking errors, falls, optional jumps,
video and plot."""
from __future__ import annotations

import sys
from pathlib import Path

from mjx_env.errors import UserError
from mjx_env.files import check_folder
from tools.cli import check_backend, check_mjx_impl, value_range


VX_BIN = 0.25      # m/s: the commanded-speed bins of the signed v_x bias


def eval_config(args):
    from tools.rollout import episode_config
    return episode_config(
        args, lin_vel_x_range=value_range("vx", args.vx), lin_vel_y_range=value_range("vy", args.vy),
        ang_vel_range=value_range("yaw", args.yaw), height_range=value_range("height", args.height),
        jumps_enabled=False, height_scales_velocity=False, reset_height_to_nominal=False)


def evaluate(args) -> dict:
    import jax
    import numpy as np

    from tools.jumps import JumpLog
    from tools.plots import TrackingTrace
    from tools.rollout import PolicyLoop

    if args.num_envs < 1:
        raise UserError(f"--num_envs must be >= 1, got {args.num_envs}")
    if args.episodes < 1 or args.duration <= 0:
        raise UserError("--episodes must be >= 1 and --duration > 0")
    check_backend(args.backend)
    check_mjx_impl(getattr(args, "mjx_impl", "jax"), args.backend)
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
    # Signed v_x error by commanded v_x, once a command has settled (after its first second).
    bins = np.round(np.arange(-1.0, 2.0 + 1e-9, VX_BIN), 6)
    bias_sum, bias_count = np.zeros(len(bins) - 1), np.zeros(len(bins) - 1)
    settle = int(round(1.0 / cfg.env.dt))
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
        use = counting & settled & ~np.asarray(state.done)
        which = np.clip(np.digitize(commands[:, 0], bins) - 1, 0, len(bins) - 2)
        np.add.at(bias_sum, which[use], (met["lin_vel"][:, 0] - commands[:, 0])[use])
        np.add.at(bias_count, which[use], 1)
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
    seen = bias_count > 0
    res["vx_bias_by_command"] = {f"{bins[i]:+.2f}..{bins[i + 1]:+.2f}": float(bias_sum[i] / bias_count[i])
                                 for i in np.flatnonzero(seen)}
    res["max_abs_vx_bias"] = float(np.max(np.abs(bias_sum[seen] / bias_count[seen]))) if seen.any() else float("nan")
    res.update(loop.estimator_summary())
    if jumps is not None:
        res["jump"] = jumps.summary(cfg.reward.jump_height_tolerance, cfg.env.dt)
    return res
