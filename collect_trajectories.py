"""Roll out a trained policy and write demonstration trajectories for DynaFlow (HDF5 or NPZ).

    python collect_trajectories.py --episodes 64 --out demos.h5                 # random commands
    python collect_trajectories.py --episodes 64 --out demos.npz                # DynaFlow's NPZ layout
    python collect_trajectories.py convert demos.h5 --out demos.npz             # HDF5 -> NPZ
    python collect_trajectories.py --grid --vx 0.3 0.6 1.0 --yaw -0.5 0 0.5 --out grid.h5
    python collect_trajectories.py --drop-falls ...                             # keep only clean episodes
    torchrun --nproc_per_node=4 collect_trajectories.py --episodes 256 --out demos.h5   # 4 ranks, one file
    python collect_trajectories.py merge part0.h5 part1.h5 --out all.h5          # parts of array jobs
    python collect_trajectories.py --checkpoint policies/go2_jump.pt --jump 0.6 --jump-every 2 --out jumps.h5

Layout of the file (T steps in all, E episodes; float32 unless said):
  steps/   qpos (T, nq), qvel (T, nv)              MuJoCo state at which the action was taken
           base_pos (T, 3), base_quat (T, 4)        world frame, quaternion w x y z
           base_lin_vel (T, 3), base_ang_vel (T, 3) base frame
           joint_pos (T, 12), joint_vel (T, 12)     policy order FR, FL, RR, RL x hip, thigh, calf
           last_action (T, 12)                      previous action: it sets this step's PD target
           actions (T, 12)                          policy output (clipped), unscaled
           pd_targets (T, 12)                       joint targets applied during this step (rad)
           commands (T, 5)                          vx, vy, yaw rate, height, jump (H at the step a jump
                                                    is commanded, else 0; obs[:, 47] is the jump phase)
           obs (T, 48)                              policy observation
           rewards (T,)                             reward of this step
           foot_contacts (T, 4) bool, foot_pos (T, 4, 3)   feet FR, FL, RR, RL at this state
           done, time_out, terminated (T,) bool     the episode ends after this step (and why)
  episodes/ start (E,) int64, length (E,) int32, fell (E,) bool, command (E, 5),
           seed (E,) int64 (run seed), key (E, 2) uint32 (the env's PRNG key at the episode's start),
           env_index (E,) int32; with --randomize also dr_<draw> (E, ...): the episode's physics draws
           (mjx_env/randomize.py: friction, added_base_mass, base_com_offset, link_mass_scale, ...)
  attrs:   model_path, model_sha256, checkpoint, checkpoint_sha256, dt, sim_dt, configs (JSON),
           joint_names, state_names (JSON: qpos then qvel entries), created, format_version;
           a torchrun rank's part also part_of (JSON: rank, ranks, out), a merged file merged_from
Episode i is steps[start[i] : start[i] + length[i]]; its last step has done = True.
An --out ending in .npz writes the DynaFlow layout instead (see dynaflow_data.py), from the same arrays.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import signal
import sys
import time
from pathlib import Path

import numpy as np

import dynaflow_data
import mjx_env  # noqa: F401
from mjx_env.errors import OneLineParser, UserError
from mjx_env.feet import FootProbe

FORMAT_VERSION = 1
STEP_FIELDS = ("qpos", "qvel", "base_pos", "base_quat", "base_lin_vel", "base_ang_vel", "joint_pos", "joint_vel",
               "last_action", "actions", "pd_targets", "commands", "obs", "rewards", "foot_contacts", "foot_pos",
               "done", "time_out", "terminated")
EPISODE_FIELDS = ("start", "length", "fell", "command", "seed", "key", "env_index")


# ---- loading ---------------------------------------------------------------------------------
@dataclasses.dataclass
class Dataset:
    steps: dict
    episodes: dict
    meta: dict

    def __len__(self) -> int:
        return len(self.episodes["start"])

    def episode(self, i: int) -> dict:
        s, n = int(self.episodes["start"][i]), int(self.episodes["length"][i])
        return {k: v[s:s + n] for k, v in self.steps.items()}


def load_dataset(path) -> Dataset:
    """Read a file written by this script into numpy arrays."""
    import h5py
    path = Path(path)
    if not path.is_file():
        raise UserError(f"dataset not found: {path}")
    with h5py.File(path, "r") as f:
        steps = {k: f["steps"][k][()] for k in f["steps"]}
        episodes = {k: f["episodes"][k][()] for k in f["episodes"]}
        meta = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    meta["configs"] = json.loads(meta["configs"])
    meta["joint_names"] = list(json.loads(meta["joint_names"]))
    if "state_names" in meta:
        meta["state_names"] = list(json.loads(meta["state_names"]))
    return Dataset(steps, episodes, meta)


def write_hdf5(path, steps: dict, episodes: dict, meta: dict) -> None:
    """The HDF5 layout above; meta holds configs as a dict and name lists as lists."""
    import h5py
    with h5py.File(path, "w") as f:
        g = f.create_group("steps")
        for k, data in steps.items():
            g.create_dataset(k, data=data, compression="gzip", compression_opts=4)
        g = f.create_group("episodes")
        for k, data in episodes.items():
            g.create_dataset(k, data=data)
        f.attrs.update({k: json.dumps(v) if k in ("configs", "joint_names", "state_names") else v
                        for k, v in meta.items()})


# ---- collecting ------------------------------------------------------------------------------
def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


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
    import torch

    from bridge.device import resolve
    from bridge.policy import SHIPPED_POLICY, load_actor
    from bridge.runner import atomic_write
    from bridge.vec_env import to_torch
    from mjx_env.config import JOINT_NAMES, CommandConfig, EnvConfig, TaskConfig
    from mjx_env.env import Go2Env

    if args.episodes < 1 or args.num_envs < 1 or args.duration <= 0:
        raise UserError("--episodes and --num_envs must be >= 1 and --duration > 0")
    if args.backend not in ("mujoco", "mjx"):
        raise UserError(f"unknown --backend {args.backend!r}: choose mujoco or mjx")
    out = Path(args.out)
    if not out.parent.exists():
        raise UserError(f"output folder {out.parent} does not exist")
    from play import jump_schedule, randomization_config
    # With --jump the recorded rewards are the jump task's (jump terms on, no random jump commands).
    cfg = TaskConfig(randomization=randomization_config(args), env=EnvConfig(episode_length_s=args.duration),
                     command=CommandConfig(resampling_time_s=2 * args.duration + 1.0, random_resample_prob=0.0,
                                           jumps_enabled=args.jump is not None, jump_prob=0.0))
    jump_every = jump_schedule(args, cfg)
    checkpoint = Path(args.checkpoint) if args.checkpoint else SHIPPED_POLICY
    devices = resolve(args.device if args.backend == "mjx" else "cpu", args.matmul_precision)
    actor = load_actor(checkpoint, cfg.obs.num_obs, cfg.env.num_actions).to(devices.torch)  # where the env is
    n = min(args.num_envs, args.episodes)
    env = Go2Env(n, args.backend, cfg, xml_path=args.xml_path, device=devices.jax)
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
    default = np.asarray(task.default_angles)
    scale = cfg.env.action_scale
    t0 = time.time()
    from tqdm import tqdm
    bar = tqdm(total=-(-args.episodes // n) * cfg.env.max_episode_length, unit="step", desc="collect",
               leave=False, disable=True if args.no_progress else None)     # None: off when not a terminal
    with torch.inference_mode():
        while len(episodes) < args.episodes and active.any():
            qpos, qvel = np.asarray(state.qpos), np.asarray(state.qvel)
            last_action = np.asarray(state.last_action)
            obs = np.asarray(state.obs)
            b = jax.vmap(task.base)(state.qpos, state.qvel)
            foot_pos, _, contacts = probe(qpos)
            actions_t = actor(to_torch(state.obs))
            new = env.step(state, jax.dlpack.from_dlpack(actions_t.contiguous()))
            actions = np.asarray(new.last_action)   # the clipped action this step used
            applied = last_action if cfg.env.simulate_action_latency else actions
            row = dict(qpos=qpos, qvel=qvel, base_pos=qpos[:, go2.base_qpos_adr:go2.base_qpos_adr + 3],
                       base_quat=qpos[:, go2.base_qpos_adr + 3:go2.base_qpos_adr + 7],
                       base_lin_vel=np.asarray(b["lin_vel"]), base_ang_vel=np.asarray(b["ang_vel"]),
                       joint_pos=qpos[:, go2.qpos_idx], joint_vel=qvel[:, go2.qvel_idx], last_action=last_action,
                       actions=actions, pd_targets=default + scale * applied, commands=np.asarray(state.commands),
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
            if jump_every:
                step = np.asarray(state.episode_step)
                jump = active & ~done & (step > 0) & (step % jump_every == 0)
                if jump.any():
                    state = env.with_jump(state, jnp.asarray(jump), jnp.full(n, args.jump, jnp.float32))
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
                checkpoint=str(checkpoint), checkpoint_sha256=sha256(checkpoint),
                dt=cfg.env.dt, sim_dt=cfg.env.sim_dt, backend=args.backend,
                configs=configs, joint_names=list(JOINT_NAMES), state_names=dynaflow_data.state_names(go2.mj_model),
                created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), format_version=FORMAT_VERSION)
    if getattr(args, "part_of", None):                   # a rank's part under torchrun (collect_on_ranks)
        meta["part_of"] = json.dumps(args.part_of)
    writer = dynaflow_data.write_npz if out.suffix == ".npz" else write_hdf5
    atomic_write(out, lambda tmp: writer(tmp, steps, episode_arrays, meta))
    return {"episodes": len(episodes), "steps": int(lengths.sum()), "falls": int(sum(e[3] for e in episodes)),
            "seconds": time.time() - t0, "out": str(out)}


# ---- several ranks (torchrun) and parts (array jobs) ---------------------------------------------
# Parts of one collection agree on all of these; merge refuses the others.
SAME_IN_EVERY_PART = {"model_sha256": "model", "checkpoint_sha256": "checkpoint", "configs": "task configs",
                      "backend": "backend", "dt": "control period", "sim_dt": "physics step",
                      "joint_names": "joint order", "format_version": "format version"}


def merge(paths, out) -> dict:
    """One dataset from HDF5 parts of one collection, episodes in the order of the parts."""
    from bridge.runner import atomic_write
    out = Path(out)
    if not out.parent.exists():
        raise UserError(f"output folder {out.parent} does not exist")
    if out.resolve() in {Path(p).resolve() for p in paths}:
        raise UserError(f"--out {out} is one of the parts: write the merged file elsewhere")
    import h5py
    for p in paths:
        if Path(p).is_file() and not h5py.is_hdf5(p):
            raise UserError(f"{p} is not an HDF5 file: merge reads parts written by collect_trajectories.py --out *.h5")
    parts = [load_dataset(p) for p in paths]
    missing_parts(paths, parts)
    ref = parts[0].meta
    seeds = {}
    for path, ds in zip(paths, parts):
        for key, what in SAME_IN_EVERY_PART.items():
            if ds.meta.get(key) != ref.get(key):
                raise UserError(f"{path} comes from a different {what} than {paths[0]}: "
                                "merge only parts of one collection")
        for seed in sorted(set(ds.episodes["seed"].tolist())):
            if seed in seeds:
                raise UserError(f"{path} and {seeds[seed]} were both collected with seed {seed}, so their "
                                "episodes repeat: give every part its own --seed")
            seeds[seed] = path
    steps = {k: np.concatenate([ds.steps[k] for ds in parts]) for k in STEP_FIELDS}
    offsets = np.cumsum([0] + [len(ds.steps["done"]) for ds in parts])
    episodes = {k: np.concatenate([ds.episodes[k] for ds in parts]) for k in parts[0].episodes}  # dr_* too
    episodes["start"] = np.concatenate([ds.episodes["start"] + o for ds, o in zip(parts, offsets)]).astype(np.int64)
    meta = dict(ref, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                merged_from=json.dumps([Path(p).name for p in paths]))
    meta.pop("part_of", None)
    writer = dynaflow_data.write_npz if out.suffix == ".npz" else write_hdf5
    atomic_write(out, lambda tmp: writer(tmp, steps, episodes, meta))
    return {"episodes": int(sum(len(ds) for ds in parts)), "steps": int(offsets[-1]),
            "falls": int(episodes["fell"].sum()), "out": str(out)}


def part_name(out: Path, rank: int, world: int) -> Path:
    return out.with_name(f".{out.name}.part{rank}of{world}.h5")


def missing_parts(paths, parts) -> None:
    """The parts a torchrun collection wrote carry part_of (rank, ranks, out): refuse to merge some
    of them without the others, naming the first one missing."""
    given = {}
    for path, ds in zip(paths, parts):
        if "part_of" in ds.meta:
            p = json.loads(ds.meta["part_of"])
            given.setdefault((p["out"], p["ranks"]), (Path(path), set()))[1].add(p["rank"])
    for (out, world), (path, ranks) in given.items():
        missing = sorted(set(range(world)) - ranks)
        if missing:
            name = path.with_name(part_name(Path(out), missing[0], world).name)
            raise UserError(f"{name} is missing: it is rank {missing[0]}'s part of {out} from {world} ranks "
                            f"({len(missing)} of {world} missing); run the torchrun collection again")


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
    p = OneLineParser(prog="collect_trajectories.py", description="Demonstrations for DynaFlow.")
    p.add_argument("--checkpoint", default=None, help="rsl_rl checkpoint or exported actor (default: shipped)")
    p.add_argument("--out", default="demos.h5", help="*.npz: DynaFlow's NPZ layout; anything else: HDF5")
    p.add_argument("--episodes", type=int, default=64)
    p.add_argument("--num_envs", "-B", type=int, default=64)
    p.add_argument("--duration", type=float, default=20.0, help="episode length (s)")
    p.add_argument("--grid", action="store_true", help="the lists below form a grid, cycled over episodes")
    p.add_argument("--vx", type=float, nargs="+", default=[0.0, 1.0])
    p.add_argument("--vy", type=float, nargs="+", default=[0.0])
    p.add_argument("--yaw", type=float, nargs="+", default=[0.0])
    p.add_argument("--height", type=float, nargs="+", default=[0.3])
    p.add_argument("--drop-falls", action="store_true", help="keep only episodes that did not fall")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it is off when not on a terminal)")
    p.add_argument("--jump", type=float, default=None, metavar="H",
                   help="command a jump to base height H (m) every --jump-every seconds (flight phases)")
    p.add_argument("--jump-every", type=float, default=2.0, metavar="S", help="seconds between jump commands")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="mujoco")
    p.add_argument("--device", default=None, help="device of the mjx backend and the actor, as in train.py "
                                                  "(cuda:0 when torch and JAX both see a GPU); mujoco: cpu")
    p.add_argument("--matmul-precision", "--matmul_precision", dest="matmul_precision", default="highest",
                   choices=("highest", "default"),
                   help="JAX float32 matmuls: highest (default; full float32 as C MuJoCo, no TF32 on GPU) or default")
    p.add_argument("--xml-path", "--xml_path", dest="xml_path", default=None)
    p.add_argument("--randomize", action="store_true", help="collect under domain randomization (per-env physics)")
    p.add_argument("--push", type=float, default=0.0, metavar="M", help="kick the base by M m/s every --push-every s")
    p.add_argument("--push-every", type=float, default=4.0, metavar="S")
    return p.parse_args(argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["convert"]:
        return dynaflow_data.main(argv[1:])
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
        print(f"wrote {res['out']}: {res['episodes']} episodes, {res['steps']} steps, {res['falls']} fell{took}")
    return 0


def merge_main(argv) -> int:
    p = OneLineParser(prog="collect_trajectories.py merge",
                      description="Merge HDF5 parts of one collection (e.g. cluster array jobs) into one file.")
    p.add_argument("parts", nargs="+", help="HDF5 files written by collect_trajectories.py")
    p.add_argument("--out", required=True, help="merged file (*.npz: DynaFlow's NPZ layout; else HDF5)")
    args = p.parse_args(argv)
    try:
        res = merge(args.parts, args.out)
    except UserError as exc:
        print(f"{p.prog}: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {res['out']}: {res['episodes']} episodes, {res['steps']} steps, {res['falls']} fell "
          f"(from {len(args.parts)} parts)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
