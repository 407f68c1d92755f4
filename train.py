"""Train a Go2 walking policy with PPO (rsl_rl 5.x) on MJX or C MuJoCo.

    python train.py                                  # 4096 envs, 10000 iterations, GPU if there is one
    python train.py --device cpu -B 512 --max_iterations 300
    python train.py --resume logs/go2-ppo-dynaflow/model_300.pt --max_iterations 200
    torchrun --nproc_per_node=8 train.py -B 4096    # 8 GPUs: 4096 envs each (README: Scaling out)
    python train.py --jumps --init-actor policies/go2_walk_robust_v1.pt -e go2-jump   # the jump task, from a walker

Writes logs/{exp_name}/: model_{it}.pt every 100 iterations and at the end, cfgs.pkl, and
TensorBoard events (--logger wandb: a W&B run as well, in logs/{exp_name}/wandb/). Ctrl-C (or
SIGTERM) finishes the current iteration, saves it and exits.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import os
import re
import signal
import sys
from pathlib import Path

import mjx_env  # noqa: F401  (sets the JAX GPU memory policy before JAX starts)
from bridge.distributed import Group
from mjx_env.errors import OneLineParser, UserError, command_name, first_line
from tools.cli import add_actor_inputs, add_device, add_model, check_backend, check_mjx_impl

REPO = Path(__file__).resolve().parent


def build_parser() -> argparse.ArgumentParser:
    B = argparse.BooleanOptionalAction          # a task's on-switch can be turned off: --no-randomize
    p = OneLineParser(prog=command_name("train.py"), description="PPO training of the Unitree Go2 (rsl_rl) on MJX / MuJoCo. "
                      "--task NAME picks a named recipe (--list-tasks); any flag given overrides it.")
    g = p.add_argument_group("task")
    g.add_argument("--task", default=None, metavar="NAME",
                   help="a named recipe: its env, task and PPO settings (--list-tasks names them); without it, "
                        "the original go2_train.py's settings")
    g.add_argument("--list-tasks", "--list_tasks", dest="list_tasks", action="store_true",
                   help="list the named tasks and what each produces, then exit")
    g.add_argument("--print-config", "--print_config", dest="print_config", action="store_true",
                   help="print the fully resolved config of every stage this run would train, as JSON, and exit")
    g.add_argument("--from-scratch", "--from_scratch", dest="from_scratch", action="store_true",
                   help="with --task: train its parents first instead of starting from their shipped policy, stage "
                        "by stage in logs/{exp_name}/N-TASK/; run the same command again to resume")

    g = p.add_argument_group("run")
    g.add_argument("-e", "--exp-name", "--exp_name", dest="exp_name", default=None,
                   help="run name: logs/{exp_name}/ (default go2-ppo-dynaflow, or the task's name)")
    g.add_argument("--max-iterations", "--max_iterations", dest="max_iterations", type=int, default=10000,
                   help="PPO iterations to run (more, on --resume; per stage, with --task)")
    g.add_argument("--seed", type=int, default=1,
                   help="seed of the env streams and of torch; rank r of torchrun uses seed + r (default 1)")
    g.add_argument("--resume", default=None, metavar="PATH", help="checkpoint to continue from")
    g.add_argument("--init-actor", "--init_actor", dest="init_actor", default=None, metavar="PATH",
                   help="start the actor (not the critic or optimizer) from a checkpoint or exported actor; "
                        "a one-frame actor also starts a --history/--estimator actor")
    add_device(p.add_argument_group("device"), device_help="cuda:0 when torch and JAX both see a GPU, else cpu")

    g = p.add_argument_group("env")
    g.add_argument("-B", "--num-envs", "--num_envs", dest="num_envs", type=int, default=4096,
                   help="parallel environments (default 4096)")
    add_model(g, backend="auto", backend_help="auto (mjx on GPU, mujoco on CPU; mjx with --mjx-impl warp), mjx "
              "or mujoco")
    g.add_argument("--randomize", action=B, default=False,
                   help="domain randomization: per-env physics drawn at every reset (friction, masses, centre of "
                        "mass, PD gains, joint friction, damping, armature) and pushes (mjx_env/config.py)")
    g.add_argument("--dr-range", "--dr_range", dest="dr_ranges", action="append", default=[],
                   metavar="FIELD=LO,HI", help="with --randomize: one randomization range (repeatable), e.g. "
                   "kp_scale_range=0.8,1.2; the fields and their defaults: mjx_env/config.py RandomizationConfig")
    g.add_argument("--rolling-friction", "--rolling_friction", dest="rolling_friction", type=float, default=None,
                   metavar="R", help="with --randomize: draw the feet's rolling friction in U[0, R] and torsional "
                   "friction in U[0, 2R] per episode, in condim-6 foot contacts (Menagerie's feet: R = 0.01)")
    g.add_argument("--obs-noise", "--obs_noise", dest="obs_noise", action=B, default=False,
                   help="uniform observation noise on the policy's inputs, as legged_gym")
    g.add_argument("--clip-actions", "--clip_actions", dest="clip_actions", type=float, default=None, metavar="A",
                   help="clip every policy action to ±A before the action scale (default: EnvConfig's 100)")

    g = p.add_argument_group("task options")
    g.add_argument("--jumps", action=B, default=False,
                   help="the reference's jump task: random jump commands and the four jump rewards")
    g.add_argument("--random-resample-prob", "--random_resample_prob", dest="random_resample_prob", type=float,
                   default=None, help="share of envs given fresh commands each step (default 0.05); "
                                      "0 holds commands for the full 4 s resampling period")
    g.add_argument("--tracking-sigma", "--tracking_sigma", dest="tracking_sigma", type=float, default=None,
                   help="width of the velocity-tracking rewards exp(-err^2 / sigma) (default 0.25); smaller pays "
                        "for precise tracking")
    g.add_argument("--tracking-sigma-yaw", "--tracking_sigma_yaw", dest="tracking_sigma_yaw", type=float,
                   default=None, help="the yaw-rate term's own width (default: --tracking-sigma's)")
    g.add_argument("--command-range", "--command_range", dest="command_ranges", action="append", default=[],
                   metavar="FIELD=LO,HI", help="one command's sampling range (repeatable), e.g. "
                   "lin_vel_x_range=-2,2 draws backward speeds as often as forward ones. The velocity ranges are "
                   "halved at the nominal height (the height command scales them), so -2,2 commands +-1 m/s "
                   "there; the fields and their defaults: mjx_env/config.py CommandConfig")
    g.add_argument("--reward-scale", "--reward_scale", dest="reward_scales", action="append", default=[],
                   metavar="TERM=S", help="set one reward term's scale (repeatable), e.g. tracking_lin_vel=2; "
                   "the terms and their default scales: mjx_env/config.py RewardConfig")
    add_actor_inputs(g)

    g = p.add_argument_group("PPO")
    g.add_argument("--init-noise-std", "--init_noise_std", dest="init_noise_std", type=float, default=None,
                   help="initial action noise std of the Gaussian policy (default 1.0); a new run only")
    g.add_argument("--final-noise-std", "--final_noise_std", dest="final_noise_std", type=float, default=None,
                   help="over the second half of the run, lower the action noise std linearly to this "
                        "value (the policy is deployed noise-free)")
    g.add_argument("--entropy-coef", "--entropy_coef", dest="entropy_coef", type=float, default=None,
                   help="PPO entropy bonus (default 0.01)")
    g.add_argument("--learning-rate", "--learning_rate", dest="learning_rate", type=float, default=None,
                   help="PPO's initial learning rate (default 0.001; the adaptive schedule moves it by the KL)")
    g.add_argument("--num-learning-epochs", "--num_learning_epochs", dest="num_learning_epochs", type=int,
                   default=None, help="passes over each iteration's data (default 5)")
    g.add_argument("--num-mini-batches", "--num_mini_batches", dest="num_mini_batches", type=int, default=None,
                   help="mini-batches per pass (default 4)")
    g.add_argument("--symmetry", choices=("none", "augment", "loss", "both"), default="none",
                   help="left-right mirror symmetry (bridge/symmetry.py): augment adds the mirror image of every "
                        "sample to PPO's mini-batches, loss adds a mirror loss on the actor's mean action, both "
                        "does both (default none); the update then costs 2-3x")
    g.add_argument("--mirror-loss-coeff", "--mirror_loss_coeff", dest="mirror_loss_coeff", type=float, default=1.0,
                   help="weight of the mirror loss with --symmetry loss or both (default 1.0)")

    g = p.add_argument_group("logging")
    g.add_argument("--log-root", "--log_root", dest="log_root", default="logs",
                   help="folder of the run folders (default ./logs of the working directory)")
    g.add_argument("--save-interval", "--save_interval", dest="save_interval", type=int, default=100,
                   help="checkpoint every N iterations (default 100)")
    g.add_argument("--logger", default="tensorboard", help="tensorboard (default) or wandb (TensorBoard "
                   "events too; WANDB_MODE=offline works without an account)")
    g.add_argument("--wandb-project", "--wandb_project", dest="wandb_project", default="go2-mjx-ppo",
                   help="W&B project of --logger wandb (default go2-mjx-ppo)")
    return p


DEFAULT_EXP_NAME = "go2-ppo-dynaflow"


def parse_args(argv=None, defaults: dict | None = None):
    """train.py's flags; `defaults` (a task's settings) replace the parser's defaults, so a flag given
    still wins. A list flag (--reward-scale, --dr-range) given adds to the task's list; the last
    setting of a term or range wins."""
    p = build_parser()
    if defaults:
        p.set_defaults(**{k: list(v) if isinstance(v, list) else v for k, v in defaults.items()})
    args = p.parse_args(argv)
    if args.exp_name is None:
        args.exp_name = args.task or DEFAULT_EXP_NAME
    return args


def reward_scales(scales: tuple, given: list[str]) -> tuple:
    """scales (RewardConfig's (term, scale) rows) with each TERM=S given replacing its row's scale; a term
    the config does not list joins at the end (the order rewards are summed in)."""
    from mjx_env.rewards import REWARDS

    rows = dict(scales)
    for item in given:
        name, eq, value = item.partition("=")
        try:
            v = float(value) if eq else math.nan
        except ValueError:
            v = math.nan
        if not math.isfinite(v):
            raise UserError(f"--reward-scale wants TERM=S with a finite number S, got {item!r}")
        if name not in REWARDS or REWARDS[name].jump:
            raise UserError(f"--reward-scale: unknown walking reward term {name!r}; known: "
                            + ", ".join(k for k, t in REWARDS.items() if not t.jump))
        rows[name] = v
    return tuple(rows.items())


def parse_ranges(flag: str, what: str, fields, given: list[str]) -> dict:
    """{field: (lo, hi)} from `flag` FIELD=LO,HI items, each one of `fields`; the last of a field wins."""
    out = {}
    for item in given:
        name, eq, value = item.partition("=")
        if name not in fields:
            raise UserError(f"{flag}: unknown {what} range {name!r}; known: {', '.join(fields)}")
        try:
            lo, hi = (float(v) for v in value.split(","))
        except ValueError:
            raise UserError(f"{flag} wants FIELD=LO,HI (two numbers), got {item!r}") from None
        out[name] = (lo, hi)
    return out


def dr_ranges(r, given: list[str]) -> dict:
    """--dr-range's items: range fields of RandomizationConfig r."""
    return parse_ranges("--dr-range", "randomization", r.ranges()[0], given)


def command_notes(args, cfg) -> list:
    """With --command-range: the velocity spans at the nominal height, where the height command halves
    them (a range narrowed to the protocols' speeds leaves them out there)."""
    c = cfg.command
    if not args.command_ranges or not c.height_scales_velocity or c.fixed is not None:
        return []
    k = c.velocity_scale(c.nominal_height)
    spans = ", ".join(f"{name.removesuffix('_range')} {lo * k:g}..{hi * k:g}" for name, (lo, hi) in c.ranges()[:3])
    return [f"[train] note: the height command scales the velocity commands by {k:g} at the nominal height "
            f"{c.nominal_height:g} m; there they span {spans}"]


def task_config(args):
    """The TaskConfig a run trains on: the default, with the options given."""
    from mjx_env.config import TaskConfig

    cfg = TaskConfig()
    if args.history < 1:
        raise UserError(f"--history must be >= 1 observation, got {args.history}")
    if args.estimator and args.actor_lin_vel:
        raise UserError("--estimator and --actor-lin-vel exclude each other: the estimator stands in for the "
                        "measured velocity")
    if args.history != 1 or args.actor_lin_vel:
        cfg = cfg.replace(obs=cfg.obs.with_actor_inputs(args.history, args.actor_lin_vel))
    if args.tracking_sigma is not None:
        if not args.tracking_sigma > 0:
            raise UserError(f"--tracking-sigma must be > 0, got {args.tracking_sigma}")
        cfg = cfg.replace(reward=dataclasses.replace(cfg.reward, tracking_sigma=args.tracking_sigma))
    if args.tracking_sigma_yaw is not None:
        if not args.tracking_sigma_yaw > 0:
            raise UserError(f"--tracking-sigma-yaw must be > 0, got {args.tracking_sigma_yaw}")
        cfg = cfg.replace(reward=dataclasses.replace(cfg.reward, tracking_sigma_yaw=args.tracking_sigma_yaw))
    if args.reward_scales:
        cfg = cfg.replace(reward=dataclasses.replace(
            cfg.reward, scales=reward_scales(cfg.reward.scales, args.reward_scales)))
    command = parse_ranges("--command-range", "command", [name for name, _ in cfg.command.ranges()], args.command_ranges)
    if args.random_resample_prob is not None:
        command["random_resample_prob"] = args.random_resample_prob
    if args.jumps:
        command["jumps_enabled"] = True
    if command:
        cfg = cfg.replace(command=dataclasses.replace(cfg.command, **command))
    if args.clip_actions is not None:
        cfg = cfg.replace(env=dataclasses.replace(cfg.env, clip_actions=args.clip_actions))
    if args.randomize or args.obs_noise:
        cfg = cfg.replace(randomization=dataclasses.replace(
            cfg.randomization, enabled=args.randomize, push=args.randomize, obs_noise=args.obs_noise))
    if args.dr_ranges:
        if not args.randomize:
            raise UserError("--dr-range sets a randomization range: add --randomize")
        cfg = cfg.replace(randomization=dataclasses.replace(cfg.randomization,
                                                            **dr_ranges(cfg.randomization, args.dr_ranges)))
    if args.rolling_friction is not None:
        if not args.randomize:
            raise UserError("--rolling-friction is a randomization draw: add --randomize")
        if not (math.isfinite(args.rolling_friction) and args.rolling_friction > 0):
            raise UserError(f"--rolling-friction must be > 0, got {args.rolling_friction}")
        cfg = cfg.replace(randomization=dataclasses.replace(
            cfg.randomization, foot_rolling_friction_range=(0.0, args.rolling_friction),
            foot_torsional_friction_range=(0.0, 2 * args.rolling_friction)))
    cfg.validate()
    return cfg


def check_log_dir(log_dir: Path) -> None:
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        probe = log_dir / ".write_test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"log directory {log_dir} is not writable ({exc.strerror}): "
                        "choose another --exp_name or fix its permissions") from None


def resident_mib() -> float:
    """Current resident memory of this process (Linux), for the soak run's report."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return float("nan")


class StopRequested(Exception):
    pass


def install_stop_handlers(state: dict, repeat_stops_at_once: bool = True, peer_failed=None) -> None:
    """First Ctrl-C / SIGTERM: finish this iteration, save, exit. Second: stop at once.
    Under torchrun a Ctrl-C reaches each rank twice (from the terminal and forwarded by torchrun),
    so repeats are ignored there; torchrun kills the ranks after its --shutdown_timeout. There a
    SIGTERM is also how torchrun stops the ranks left when one died: it is not announced, and if
    peer_failed() says a rank died, this rank stops now (Group.fail saves; an iteration may outlast
    --shutdown_timeout)."""
    def handler(signum, frame):
        if signum == signal.SIGTERM and peer_failed is not None and peer_failed():
            from bridge.distributed import Stopped
            raise Stopped("stopped by SIGTERM")
        if state["stop"]:
            if not repeat_stops_at_once:
                return
            raise KeyboardInterrupt
        state["stop"] = signal.Signals(signum).name
        if repeat_stops_at_once:
            print(f"\n[train] {state['stop']} received: saving after the current iteration "
                  "(send it again to stop at once, without saving)", flush=True)
        elif signum == signal.SIGINT:
            print(f"\n[train] {state['stop']} received: saving after the current iteration", flush=True)
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def init_actor(runner, path, inputs=None) -> None:
    """Load only the actor weights (an exported actor file has nothing else). A one-frame actor
    without an estimator also starts a wider one (bridge.policy.widen_actor)."""
    from bridge.policy import ActorInputs, widen_actor
    from bridge.runner import load_checkpoint_file
    inputs = inputs or getattr(runner, "actor_inputs", None) or ActorInputs()
    ckpt = load_checkpoint_file(path, "actor")
    if ActorInputs.of(ckpt) != inputs:
        ckpt = dict(ckpt, actor_state_dict=widen_actor(ckpt, runner.alg.actor.state_dict(), inputs))
    try:
        runner.alg.load(ckpt, {"actor": True}, strict=True)
    except RuntimeError as exc:    # another network layout
        raise UserError(f"--init-actor {path} does not fit this run's actor: {first_line(exc)}") from None


def check_flags(args) -> None:
    """The flags' own checks, before anything is loaded (one line each)."""
    if args.num_envs < 1:
        raise UserError(f"--num_envs must be >= 1, got {args.num_envs}")
    if args.max_iterations < 1:
        raise UserError(f"--max_iterations must be >= 1, got {args.max_iterations}")
    if args.save_interval < 1:
        raise UserError(f"--save_interval must be >= 1, got {args.save_interval}")
    check_backend(args.backend, ("auto", "mjx", "mujoco"))
    check_mjx_impl(args.mjx_impl, "mjx" if args.backend == "auto" else args.backend)
    if not re.fullmatch(r"[\w.\-]+", args.exp_name):
        raise UserError(f"--exp_name {args.exp_name!r} must be a plain name (letters, digits, . _ -)")
    if args.logger not in ("tensorboard", "wandb"):
        raise UserError(f"unknown --logger {args.logger!r}: choose tensorboard or wandb")
    if args.logger == "wandb":
        try:
            import wandb
        except ImportError:
            raise UserError("--logger wandb needs the wandb package: pip install -e '.[wandb]' "
                            "(or use --logger tensorboard)") from None
        # The key now, not after the env is built and compiled: rsl_rl's writer logs in at the first
        # iteration. verify=False: no network; offline and disabled runs need no key.
        if os.environ.get("WANDB_MODE") not in ("offline", "disabled", "dryrun"):
            try:
                wandb.login(verify=False)
            except wandb.errors.UsageError as exc:
                raise UserError(f"--logger wandb: {first_line(exc)} (or set WANDB_MODE=offline to log on "
                                "this machine only, or use --logger tensorboard)") from None
    if args.resume and args.init_actor:
        raise UserError("--resume and --init-actor exclude each other: --resume already holds the actor")
    if args.init_noise_std is not None:
        if not args.init_noise_std > 0:
            raise UserError(f"--init-noise-std must be > 0, got {args.init_noise_std}")
        if args.resume:
            raise UserError("--init-noise-std sets a new run's noise; a resumed run keeps its checkpoint's")
    if args.entropy_coef is not None and not args.entropy_coef >= 0:
        raise UserError(f"--entropy-coef must be >= 0, got {args.entropy_coef}")
    if args.final_noise_std is not None and not args.final_noise_std > 0:
        raise UserError(f"--final-noise-std must be > 0, got {args.final_noise_std}")
    if args.learning_rate is not None and not (math.isfinite(args.learning_rate) and args.learning_rate >= 0):
        raise UserError(f"--learning-rate must be >= 0, got {args.learning_rate}")
    for flag in ("num_learning_epochs", "num_mini_batches"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")


def ppo_config(args, log_dir: Path) -> dict:
    """rsl_rl's train config (bridge.runner.ppo_train_cfg) with this run's PPO flags."""
    from bridge.runner import ppo_train_cfg
    train_cfg = ppo_train_cfg(save_interval=args.save_interval, estimator=args.estimator)
    if args.init_noise_std is not None:
        train_cfg["actor"]["distribution_cfg"]["init_std"] = args.init_noise_std
    for name in ("entropy_coef", "learning_rate", "num_learning_epochs", "num_mini_batches"):
        if getattr(args, name) is not None:
            train_cfg["algorithm"][name] = getattr(args, name)
    if args.symmetry != "none":
        from bridge.symmetry import symmetry_cfg
        train_cfg["algorithm"]["symmetry_cfg"] = symmetry_cfg(args.symmetry, args.mirror_loss_coeff)
    if args.logger == "wandb":
        # rsl_rl's own W&B writer (TensorBoard events as well); its run files go beside the checkpoints.
        train_cfg["logger"] = {"class_name": "WandbLogWriter", "project_name": args.wandb_project}
        os.environ.setdefault("WANDB_DIR", str(log_dir))
    return train_cfg


def claim_log_dir(log_dir: Path, start_it: int, resuming: bool) -> None:
    """Rank 0 only: refuse to overwrite a checkpoint, and check that the folder is writable."""
    from tools.registry import checkpoints
    taken = [i for i in checkpoints(log_dir) if i >= start_it]
    if taken:
        hint = "use --resume with its last checkpoint" if not resuming else "resume from its last checkpoint"
        raise UserError(f"{log_dir} already holds model_{taken[-1]}.pt, which this run would overwrite: "
                        f"choose another --exp_name or {hint}")
    check_log_dir(log_dir)


def save_cfgs(cfg, train_cfg: dict, args, inputs, backend: str, devices, model, log_dir: Path,
              start_it: int, world_size: int) -> None:
    """cfgs.pkl: the task's configs and the run's settings. A resumed run keeps the first run's file
    and records its own beside it."""
    from mjx_env.files import atomic_pickle
    saved_cfg = copy.deepcopy(train_cfg)
    saved_cfg.update(experiment_name=args.exp_name, max_iterations=args.max_iterations, seed=args.seed,
                     backend=backend, device=devices.name, xml_path=model.xml_path, resume=args.resume,
                     init_actor=args.init_actor, final_noise_std=args.final_noise_std,
                     actor_inputs=dataclasses.asdict(inputs),
                     randomization=dataclasses.asdict(cfg.randomization),
                     world_size=world_size, matmul_precision=args.matmul_precision,
                     task=args.task, recipe=recipe(args))
    if backend == "mjx":
        saved_cfg.update(mjx_impl=args.mjx_impl)
        if args.mjx_impl == "warp":
            from mjx_env.config import WarpConfig
            saved_cfg.update(warp=dataclasses.asdict(WarpConfig()))
    cfgs_path = log_dir / "cfgs.pkl"
    if args.resume and cfgs_path.exists():
        cfgs_path = log_dir / f"cfgs_resume_{start_it}.pkl"
    atomic_pickle([dataclasses.asdict(cfg.env), dataclasses.asdict(cfg.obs), dataclasses.asdict(cfg.reward),
                   dataclasses.asdict(cfg.command), saved_cfg], cfgs_path)


def run(args, group: Group) -> int:
    check_flags(args)
    from bridge import device as devmod
    devices = devmod.resolve(args.device, args.matmul_precision)
    # auto: MJX on a GPU, C MuJoCo on the CPU; --mjx-impl warp asks for MJX wherever it runs.
    # (Once a GPU has confirmed Warp's speed here, auto on a GPU should pick mjx with impl warp.)
    backend = args.backend if args.backend != "auto" else (
        "mjx" if devices.is_gpu or args.mjx_impl != "jax" else "mujoco")

    import numpy as np
    import torch
    from mjx_env.model import load_go2
    from bridge.policy import ActorInputs
    from bridge.runner import Go2Runner, read_checkpoint

    cfg = task_config(args)
    model = load_go2(args.xml_path, cfg.env)          # fails early on a bad model
    if args.symmetry != "none":
        from mjx_env.symmetry import asymmetric_settings
        for setting in asymmetric_settings(cfg):
            print(f"[train] note: --symmetry {args.symmetry} with {setting}, not centred on 0: mirrored samples "
                  "include values this task never draws", flush=True)
    for note in command_notes(args, cfg):
        print(note, flush=True)
    log_dir = run_dir(args)
    train_cfg = ppo_config(args, log_dir)
    inputs = ActorInputs.from_flags(args)
    start_it = 0
    ckpt = None
    if args.resume:
        ckpt = read_checkpoint(args.resume, inputs, cfg.obs.num_privileged_obs, cfg.env.num_actions)
        start_it = int(ckpt.get("iter", 0)) + 1
    if args.init_actor:
        from bridge.runner import load_checkpoint_file
        from bridge.policy import check_init_actor
        check_init_actor(load_checkpoint_file(args.init_actor, "actor"), inputs, args.init_actor,
                         cfg.env.num_actions)     # one-line errors before anything starts
    if group.is_main:                                 # only rank 0 writes the run's files
        claim_log_dir(log_dir, start_it, bool(args.resume))
    group.agree()         # every rank passed its checks (or all stop; see main)
    runner = None         # if a rank fails or dies from here on, rank 0 keeps its last complete iteration
    from bridge.runner import keep_last_iteration
    group.rescue = lambda: keep_last_iteration(runner, log_dir, args.exp_name, args.resume)

    seed = args.seed + group.rank                     # each rank its own env stream
    torch.manual_seed(seed)
    np.random.seed(seed)
    from mjx_env.env import Go2Env
    from bridge.vec_env import Go2VecEnv

    env = Go2Env(args.num_envs, backend, cfg, model=model, device=devices.jax if backend == "mjx" else None,
                 mjx_impl=args.mjx_impl)
    vec_env = Go2VecEnv(env, seed=seed, log_every=train_cfg["num_steps_per_env"], lin_vel_group=args.estimator)
    where = f"[train {group}]" if group.is_distributed else "[train]"
    impl = f" mjx_impl={args.mjx_impl}" if args.mjx_impl != "jax" else ""
    print(f"{where} backend={backend} device={devices.name}{impl} num_envs={args.num_envs} seed={seed} "
          f"model={model.xml_path} log_dir={log_dir}", flush=True)
    if group.is_main:
        save_cfgs(cfg, train_cfg, args, inputs, backend, devices, model, log_dir, start_it, group.world_size)

    runner = Go2Runner(vec_env, copy.deepcopy(train_cfg), log_dir=str(log_dir), device=str(devices.torch),
                       actor_inputs=inputs, recipe={"task": args.task, "flags": recipe(args)})
    if ckpt is not None:
        runner.load(args.resume, map_location=str(devices.torch))
        runner.current_learning_iteration = start_it      # rsl_rl would redo the loaded iteration
        print(f"[train] resumed from {args.resume}: iterations {start_it}..{start_it + args.max_iterations - 1}")
    if args.init_actor:
        init_actor(runner, args.init_actor, inputs)
        print(f"[train] actor initialised from {args.init_actor}; critic and optimizer start fresh")
    try:
        return learn(runner, args, group, log_dir, start_it, where)
    finally:
        vec_env.close()


def learn(runner, args, group: Group, log_dir: Path, start_it: int, where: str) -> int:
    """runner.learn with the noise anneal, torchrun's per-iteration bookkeeping, and a stop on
    Ctrl-C/SIGTERM after a complete, saved iteration."""
    anneal = None
    if args.final_noise_std is not None:
        from bridge.runner import NoiseAnneal
        # A stage of a --task run resumed after a stop keeps the stage's schedule, not its remainder's.
        first, count = getattr(args, "anneal_span", None) or (start_it, args.max_iterations)
        anneal = NoiseAnneal(runner.alg.actor, first, count, args.final_noise_std)
        anneal.apply(start_it)

    rss_start = resident_mib()
    stop = {"stop": None}
    install_stop_handlers(stop, repeat_stops_at_once=not group.is_distributed,
                          peer_failed=group.peer_failed if group.is_distributed else None)

    def after_iteration():
        if anneal is not None:                        # the next iteration's noise
            anneal.apply(runner.current_learning_iteration + 1)
        if group.is_distributed:                      # what rank 0 saves if a rank dies in the next one
            if group.is_main:
                runner.remember_iteration()
            group.in_step_now()
        if group.any(stop["stop"] is not None):    # all ranks stop after the same iteration
            raise StopRequested
    runner.logger.after_log.append(after_iteration)

    try:
        runner.learn(num_learning_iterations=args.max_iterations, init_at_random_ep_len=True)
    except StopRequested:
        it = runner.current_learning_iteration
        path = log_dir / f"model_{it}.pt"
        if group.is_main:
            runner.save(str(path))
            runner.logger.stop_logging_writer()
            launcher = "torchrun ... train.py" if group.is_distributed else "python train.py"
            how = ("the same command again" if args.task else
                   f"{launcher} -e {args.exp_name} --resume {path} --max_iterations N")
            print(f"[train] stopped by {stop['stop'] or 'a signal to another rank'} after iteration {it}; "
                  f"saved {path}\n[train] continue with: {how}", flush=True)
        else:
            print(f"{where} stopped after iteration {it}", flush=True)
    except KeyboardInterrupt:
        print("\n[train] stopped at once; checkpoints already written are intact", file=sys.stderr)
        return 130
    print(f"[train] resident memory: {rss_start:.0f} MiB at the start of training, "
          f"{resident_mib():.0f} MiB at the end", flush=True)
    return 0


# Settings that say where and how a run is kept, not what it learns: left out of a recipe.
NOT_RECIPE = ("task", "list_tasks", "print_config", "from_scratch", "exp_name", "log_root", "device", "logger",
              "wandb_project", "save_interval", "resume", "init_actor", "matmul_precision")


def recipe(args) -> dict:
    """The settings that decide what a run learns (recorded in checkpoints, cfgs.pkl and exported policies)."""
    return {k: v for k, v in sorted(vars(args).items()) if k not in NOT_RECIPE and not k.startswith("_")}


def run_dir(args) -> Path:
    return Path(args.log_root) / args.exp_name / getattr(args, "_stage_folder", "")


def resolve(argv) -> tuple:
    """The parsed flags and, for a --task run, the stages it trains (tools/registry.chain), each with
    its own flags: the stage's settings as defaults, the command line's flags over them."""
    from tools import registry
    args = parse_args(argv)
    if not args.task:
        if args.from_scratch:
            raise UserError("--from-scratch trains a named task's chain: add --task NAME (--list-tasks)")
        return args, [(None, args)]
    stages = registry.chain(args.task, args.from_scratch)
    if args.from_scratch and (args.resume or args.init_actor):
        raise UserError("--from-scratch trains every stage from the start: drop --resume and --init-actor "
                        "(run the same command again to resume a chain)")
    if args.resume and len(stages) > 1:
        raise UserError(f"--resume continues one run; {args.task} trains {len(stages)} stages: run the same "
                        "command again to resume where it stopped")
    out = []
    for stage in stages:
        stage_args = parse_args(argv, stage.flags)
        stage_args._stage_folder = stage.folder
        stage_args.task = stage.task                 # what its checkpoints record
        if stage.start == "parent" and not stage_args.init_actor and not stage_args.resume and \
                not args.from_scratch:
            parent = registry.get(registry.get(stage.task).parent)
            policy = registry.shipped_policy(parent)
            if policy is None or not policy.is_file():
                raise UserError(f"{stage.task} starts from {parent.name}'s policy, {policy or 'which none ships'}"
                                f"{' is missing' if policy else ''}: train {parent.name} too with --from-scratch, "
                                "or give --init-actor PATH")
            stage_args.init_actor = str(policy)
        out.append((stage, stage_args))
    return args, out


def stage_record(stage, args) -> dict:
    """What --print-config shows of one stage: the flags, the task config and rsl_rl's train config."""
    cfg = task_config(args)
    record = {"task": args.task, "stage": stage.label if stage else None,
              "folder": str(run_dir(args)), "start": stage.start if stage else "fresh",
              "init_actor": args.init_actor, "flags": recipe(args), "config": cfg.to_dict(),
              "ppo": ppo_config(args, run_dir(args))}
    return record


def print_config(args, stages) -> int:
    import json
    check_flags(args)
    print(json.dumps({"task": args.task, "from_scratch": args.from_scratch,
                      "stages": [stage_record(stage, a) for stage, a in stages]}, indent=1))
    return 0


def run_stages(args, stages, group: Group) -> int:
    """Train the stages in order. A stage whose last checkpoint exists is done; one with some of its
    checkpoints resumes from the latest; a fresh one starts from the stage before it (its actor, or
    its whole run for a later step of one task). Ends by exporting the last stage's actor."""
    from tools.registry import checkpoints
    prev = None                                   # (folder, last iteration) of the stage before
    for n, (stage, a) in enumerate(stages):
        folder = run_dir(a)
        first = prev[1] + 1 if stage.start == "resume" and prev else 0
        if stage.start == "resume" and prev is None:      # a task's later step, its first step not in this run
            raise UserError(f"{stage.label} continues the step before it, which this run does not train")
        last = first + a.max_iterations - 1
        have = [k for k in checkpoints(folder) if k >= first]
        a.anneal_span = (first, a.max_iterations)
        if last in have:
            print(f"[train] stage {n + 1}/{len(stages)} {stage.label}: done ({folder / f'model_{last}.pt'})", flush=True)
        else:
            if have:                                  # stopped in this stage: go on from its last checkpoint
                a.resume, a.init_actor = str(folder / f"model_{have[-1]}.pt"), None
                a.max_iterations = last - have[-1]
            elif stage.start == "resume":
                a.resume = str(prev[0] / f"model_{prev[1]}.pt")
            elif stage.start == "parent" and prev is not None:
                a.init_actor = str(prev[0] / f"model_{prev[1]}.pt")
            if len(stages) > 1:
                print(f"[train] stage {n + 1}/{len(stages)} {stage.label}: iterations {last - a.max_iterations + 1}"
                      f"..{last} in {folder}", flush=True)
            code = run(a, group)
            if code or last not in checkpoints(folder):
                if code == 0:
                    print(f"[train] {args.task}: stopped in stage {n + 1}/{len(stages)}; run the same command "
                          "again to continue from its last checkpoint", flush=True)
                return code
        prev = (folder, last)
    if group.is_main:
        from tools import registry
        from bridge.policy import export_actor
        task = registry.get(args.task)
        out = Path(args.log_root) / args.exp_name / (task.policy or f"{args.task}.pt")     # never policies/
        export_actor(prev[0] / f"model_{prev[1]}.pt", out)
        print(f"[train] {args.task}: exported {out}", flush=True)
    return 0


def main(argv=None) -> int:
    group = Group.from_env()                  # torchrun's ranks; rank 0 of 1 alone
    with group.quiet_unless_main():
        args = build_parser().parse_args(argv)
    if args.list_tasks:
        from tools.registry import describe
        print(describe())
        return 0
    try:
        args, stages = resolve(argv)
        if args.print_config:
            return print_config(args, stages)
        group.start()
        if args.task:
            return run_stages(args, stages, group)
        return run(args, group)
    except UserError as exc:                  # one line, from one rank; every rank stops
        group.report(command_name("train.py"), exc)
        return 2
    except Exception as exc:                  # torchrun: a rank failed or died later (Group.fail)
        if not group.started:
            raise
        return group.fail(command_name("train.py"), exc)
    finally:
        group.close()


if __name__ == "__main__":
    sys.exit(main())
