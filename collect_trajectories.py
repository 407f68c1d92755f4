"""Roll out a trained policy and write demonstration trajectories for DynaFlow (HDF5 or NPZ).

    python collect_trajectories.py --episodes 64 --out demos.h5                 # random commands
    python collect_trajectories.py --episodes 64 --out demos.npz                # DynaFlow's NPZ layout
    python collect_trajectories.py convert demos.h5 --out demos.npz             # HDF5 -> NPZ
    python collect_trajectories.py --grid --vx 0.3 0.6 1.0 --yaw -0.5 0 0.5 --out grid.h5
    python collect_trajectories.py --drop-falls ...                             # keep only clean episodes
    torchrun --nproc_per_node=4 collect_trajectories.py --episodes 256 --out demos.h5   # 4 ranks, one file
    python collect_trajectories.py merge part0.h5 part1.h5 --out all.h5          # parts of array jobs
    python collect_trajectories.py --checkpoint policies/go2_jump.pt --jump 0.6 --jump-every 2 --out jumps.h5

The file layouts (HDF5, and DynaFlow's NPZ for an --out ending in .npz) are described in demos/hdf5.py
and demos/npz.py.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import signal
import sys
import time
from pathlib import Path

import numpy as np

import mjx_env  # noqa: F401
from demos import FORMAT_VERSION, STEP_FIELDS, convert, load_dataset, merge, part_name, write  # noqa: F401 (load_dataset: re-exported)
from demos.npz import state_names
from mjx_env.errors import OneLineParser, UserError, command_name
from mjx_env.feet import FootProbe
from mjx_env.files import check_folder, sha256
from tools.cli import (add_commands, add_device, add_model, add_perturbations, check_backend,
                       check_mjx_impl, run)

def command_list(args, rng) -> list:
    """One command per episode: the grid, cycled, or uniform samples in the ranges."""
    if args.grid:
        grid = list(itertools.product(args.vx, args.vy, args.yaw, args.height))
        first = getattr(args, "first_episode", 0)        # a rank's share continues the cycle
        return [np.array([*grid[(first + i) % len(grid)], 0.0], np.float32) for i in range(args.episodes)]
    for name in ("vx", "vy", "yaw", "height"):
        if len(getattr(args, name)) not in (1, 2):
            raise UserError(f"--{name} takes a value or a LOW HIGH range (use --grid for a list)")
    lo = [min(getattr(args, k)) for k in ("vx", "vy", "yaw", "height")]
    hi = [max(getattr(args, k)) for k in ("vx", "vy", "yaw", "height")]
    return [np.array([*rng.uniform(lo, hi), 0.0], np.float32) for _ in range(args.episodes)]


def collect(args) -> dict:
    import jax
    import jax.numpy as jnp

    from bridge.policy import SHIPPED_POLICY
    from mjx_env.config import JOINT_NAMES
    from tools.rollout import PolicyLoop, episode_config

    if args.episodes < 1 or args.num_envs < 1 or args.duration <= 0:
        raise UserError("--episodes and --num_envs must be >= 1 and --duration > 0")
    check_backend(args.backend)
    check_mjx_impl(getattr(args, "mjx_impl", "jax"), args.backend)
    out = Path(args.out)
    check_folder(out)
    # With --jump the recorded rewards are the jump task's (jump terms on, no random jump commands).
    cfg = episode_config(args, jumps_enabled=args.jump is not None, jump_prob=0.0)
    checkpoint = Path(args.checkpoint) if args.checkpoint else SHIPPED_POLICY
    n = min(args.num_envs, args.episodes)
    loop = PolicyLoop(args, cfg, checkpoint, n)
    env = loop.env
    probe = FootProbe(env.model)
    go2, task = env.model, env.task
    rng = np.random.default_rng(args.seed)
    queue = command_list(args, rng)
    next_cmd = 0

    state = env.reset(jax.random.PRNGKey(args.seed))
    cmds = np.zeros((n, 5), np.float32)
    for i in range(n):
        cmds[i], next_cmd = queue[next_cmd], next_cmd + 1
    state = env.with_commands(state, jnp.asarray(cmds))
    active = np.ones(n, bool)                    # env is running an episode that will be kept
    start_key = np.asarray(state.key).copy()
    start_dr = {k: np.asarray(v).copy() for k, v in state.dr.items()}   # randomization draws ({} when off)
    buffers = [dict((k, []) for k in STEP_FIELDS) for _ in range(n)]
    episodes = []                                # (env index, command, key, fell, steps dict)
    t0 = time.time()
    bar = loop.progress(-(-args.episodes // n) * cfg.env.max_episode_length, "collect", args.no_progress)
    while len(episodes) < args.episodes and active.any():
        qpos, qvel = np.asarray(state.qpos), np.asarray(state.qvel)
        last_action = np.asarray(state.last_action)
        obs = np.asarray(state.obs)
        b = jax.vmap(task.base)(state.qpos, state.qvel)
        foot_pos, _, contacts = probe(qpos)
        new = loop.step(state)
        actions = np.asarray(new.last_action)   # the clipped action this step used
        row = dict(qpos=qpos, qvel=qvel, base_pos=qpos[:, go2.base_qpos_adr:go2.base_qpos_adr + 3],
                   base_quat=qpos[:, go2.base_qpos_adr + 3:go2.base_qpos_adr + 7],
                   base_lin_vel=np.asarray(b["lin_vel"]), base_ang_vel=np.asarray(b["ang_vel"]),
                   joint_pos=qpos[:, go2.qpos_idx], joint_vel=qvel[:, go2.qvel_idx], last_action=last_action,
                   actions=actions, pd_targets=loop.pd_targets(state, new), commands=np.asarray(state.commands),
                   obs=obs, rewards=np.asarray(new.reward), foot_contacts=contacts, foot_pos=foot_pos,
                   done=np.asarray(new.done), time_out=np.asarray(new.time_out),
                   terminated=np.asarray(new.terminated))
        for i in np.flatnonzero(active):
            for k in STEP_FIELDS:
                buffers[i][k].append(row[k][i])
        done = np.asarray(new.done)
        cmds = np.asarray(new.commands).copy()
        for i in np.flatnonzero(done & active):
            fell = bool(row["terminated"][i])
            if not (fell and args.drop_falls):
                episodes.append((i, buffers[i]["commands"][0], start_key[i].copy(), fell,
                                 {k: np.stack(v) for k, v in buffers[i].items()},
                                 {k: v[i].copy() for k, v in start_dr.items()}))
            buffers[i] = dict((k, []) for k in STEP_FIELDS)
            if next_cmd < len(queue) or (args.drop_falls and len(episodes) < args.episodes):
                cmds[i] = queue[next_cmd % len(queue)]
                next_cmd += 1
            else:
                active[i] = False
        state = env.with_commands(new, jnp.asarray(cmds)) if done.any() else new
        jump = loop.jumps_due(state, active)
        if jump.any():
            state = loop.command_jumps(state, jump)
        if done.any():
            start_key[done] = np.asarray(state.key)[done]
            for k, v in state.dr.items():
                start_dr[k][done] = np.asarray(v)[done]
        if args.drop_falls and next_cmd > 20 * args.episodes:
            raise UserError("the policy falls in almost every episode: nothing to keep with --drop-falls")
        bar.update()
        bar.set_postfix(episodes=len(episodes), refresh=False)
    bar.close()
    env.close()
    episodes = episodes[:args.episodes]

    lengths = np.array([len(e[4]["done"]) for e in episodes], np.int32)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    configs = {k: dataclasses.asdict(getattr(cfg, k)) for k in ("env", "obs", "reward", "command", "randomization")}

    steps = {}
    for k in STEP_FIELDS:
        data = np.concatenate([e[4][k] for e in episodes])
        steps[k] = data.astype(bool if data.dtype == bool else np.float32)
    episode_arrays = dict(
        start=starts, length=lengths, fell=np.array([e[3] for e in episodes], bool),
        command=np.stack([e[1] for e in episodes]).astype(np.float32),
        seed=np.full(len(episodes), args.seed, np.int64),
        key=np.stack([e[2] for e in episodes]).astype(np.uint32),
        env_index=np.array([e[0] for e in episodes], np.int32))
    for k in (episodes[0][5] if episodes else {}):        # the physics each episode ran with (--randomize)
        episode_arrays[f"dr_{k}"] = np.stack([e[5][k] for e in episodes]).astype(np.float32)
    meta = dict(model_path=str(go2.xml_path), model_sha256=sha256(go2.xml_path),
                checkpoint=str(checkpoint), checkpoint_sha256=sha256(checkpoint), task=loop.task() or "",
                dt=cfg.env.dt, sim_dt=cfg.env.sim_dt, backend=args.backend,
                configs=configs, joint_names=list(JOINT_NAMES), state_names=state_names(go2.mj_model),
                created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), format_version=FORMAT_VERSION)
    if getattr(args, "part_of", None):                   # a rank's part under torchrun (collect_on_ranks)
        meta["part_of"] = json.dumps(args.part_of)
    write(out, steps, episode_arrays, meta)
    return {"episodes": len(episodes), "steps": int(lengths.sum()), "falls": int(sum(e[3] for e in episodes)),
            "seconds": time.time() - t0, "out": str(out), "task": loop.task()}


# ---- several ranks (torchrun) and parts (array jobs) ---------------------------------------------
def collect_on_ranks(args, group) -> dict:
    """Under torchrun: rank r collects its share of the episodes with seed + r into a part file
    beside --out (a folder every rank can write); rank 0 merges the parts into --out. If a rank
    dies or fails, the parts already written stay (Group.fail; rank 0 names them)."""
    out, world = Path(args.out), group.world_size
    base, extra = divmod(args.episodes, world)
    count, first = base + (group.rank < extra), group.rank * base + min(group.rank, extra)
    parts = [part_name(out, r, world) for r in range(world)]
    from bridge.distributed import Stopped
    group.rescue = lambda: kept_parts(parts)
    written = [False]

    def on_sigterm(signum, frame):              # after the part is written: stay to report on it
        if not written[0]:
            raise Stopped("stopped by SIGTERM before its part was written")
    signal.signal(signal.SIGTERM, on_sigterm)
    error = None
    try:
        if count < 1:
            raise UserError(f"--episodes {args.episodes} leaves rank {group.rank} of {world} without an episode: "
                            "ask for at least one episode per rank")
        collect(argparse.Namespace(**{**vars(args), "episodes": count, "seed": args.seed + group.rank,
                                      "first_episode": first, "out": str(parts[group.rank]),
                                      "part_of": {"rank": group.rank, "ranks": world, "out": out.name}}))
        written[0] = True
    except UserError as exc:
        error = exc
    try:
        group.agree(error)                      # every part written, or all stop
    except UserError:                           # the ranks agreed to stop: no part is kept
        if group.is_main:
            for p in parts:
                p.unlink(missing_ok=True)
        raise
    if not group.is_main:
        return {"part": str(parts[group.rank]), "episodes": count}
    res = merge(parts, out)
    for p in parts:
        p.unlink(missing_ok=True)
    return res


def kept_parts(parts) -> str:
    """Rank 0, when a rank died or failed: which parts are on disk (each loads on its own)."""
    kept = [p.name for p in parts if p.is_file()]
    missing = [p.name for p in parts if not p.is_file()]
    return (f"kept {', '.join(kept) or 'no part'} in {parts[0].parent}; missing {', '.join(missing) or 'none'}; "
            "run the collection again (merge refuses an incomplete set)")


def parse_args(argv=None):
    p = OneLineParser(prog=command_name("collect_trajectories.py"), description="Demonstrations for DynaFlow.",
                      usage="%(prog)s [options] | %(prog)s convert H5 --out NPZ | %(prog)s merge PART... --out FILE",
                      epilog="subcommands: 'convert H5 --out NPZ' writes an HDF5 dataset in DynaFlow's NPZ layout; "
                             "'merge PART... --out FILE' joins the HDF5 parts of one collection (each has --help)")
    p.add_argument("--checkpoint", default=None, help="rsl_rl checkpoint or exported actor (default: shipped)")
    p.add_argument("--out", default="demos.h5", help="*.npz: DynaFlow's NPZ layout; anything else: HDF5")
    p.add_argument("--episodes", type=int, default=64, help="episodes to record (default 64)")
    p.add_argument("--num-envs", "--num_envs", "-B", dest="num_envs", type=int, default=64, help="envs stepped at once (default 64)")
    p.add_argument("--duration", type=float, default=20.0, help="episode length (s)")
    p.add_argument("--grid", action="store_true", help="the lists below form a grid, cycled over episodes")
    add_commands(p, vx=(0.0, 1.0))
    p.add_argument("--drop-falls", action="store_true", help="keep only episodes that did not fall")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it is off when not on a terminal)")
    p.add_argument("--seed", type=int, default=0, help="seed of the resets and commands (default 0)")
    add_model(p)
    add_device(p)
    add_perturbations(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["convert"]:
        return convert_main(argv[1:])
    if argv[:1] == ["merge"]:
        return merge_main(argv[1:])
    from bridge.distributed import Group
    group = Group.from_env()                    # torchrun's ranks; rank 0 of 1 alone
    with group.quiet_unless_main():
        args = parse_args(argv)
    try:
        group.start()
        res = collect_on_ranks(args, group) if group.is_distributed else collect(args)
    except UserError as exc:
        group.report("collect_trajectories.py", exc)
        return 2
    except Exception as exc:                    # torchrun: a rank failed or died (Group.fail)
        if not group.started:
            raise
        return group.fail("collect_trajectories.py", exc)
    finally:
        group.close()
    if "part" in res:
        print(f"[{group}] collected {res['episodes']} episodes; rank 0 merges them into {args.out}")
    else:
        took = f" ({res['seconds']:.1f} s)" if "seconds" in res else ""
        task = f", policy of task {res['task']}" if res.get("task") else ""
        print(f"wrote {res['out']}: {res['episodes']} episodes, {res['steps']} steps, {res['falls']} fell{took}{task}")
    return 0


def merge_main(argv) -> int:
    p = OneLineParser(prog="collect_trajectories.py merge",
                      description="Merge HDF5 parts of one collection (e.g. cluster array jobs) into one file.")
    p.add_argument("parts", nargs="+", help="HDF5 files written by collect_trajectories.py")
    p.add_argument("--out", required=True, help="merged file (*.npz: DynaFlow's NPZ layout; else HDF5)")
    args = p.parse_args(argv)
    return run(p.prog, lambda: merged(merge(args.parts, args.out), args))


def merged(res: dict, args) -> int:
    print(f"wrote {res['out']}: {res['episodes']} episodes, {res['steps']} steps, {res['falls']} fell "
          f"(from {len(args.parts)} parts)")
    return 0


def convert_main(argv) -> int:
    p = OneLineParser(prog="collect_trajectories.py convert",
                      description="Convert an HDF5 dataset of collect_trajectories.py to the DynaFlow NPZ format.")
    p.add_argument("h5", help="dataset written by collect_trajectories.py --out *.h5")
    p.add_argument("--out", required=True, help="NPZ file to write")
    args = p.parse_args(argv)
    return run(p.prog, lambda: converted(convert(args.h5, args.out)))


def converted(res: dict) -> int:
    print(f"wrote {res['out']}: {res['episodes']} episodes, {res['steps']} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
