"""Argument groups, one per family of flags, so that every command spells and defaults them alike;
and `run`, the single tail that turns a UserError into one line and exit code 2."""
from __future__ import annotations

from mjx_env.errors import UserError, run  # noqa: F401  (run: the commands' tail)

DEVICE_HELP = "device of the mjx backend and the actor, as in train.py (cuda:0 when torch and JAX both see a GPU); mujoco: cpu"
XML_HELP = "Go2 MJCF (default Unitree_go2/go2_mjx_gym.xml)"
BACKENDS = ("mujoco", "mjx")


def add_device(p, device_help: str | None = DEVICE_HELP) -> None:
    """--device and --matmul-precision (train, play, collect, bench)."""
    p.add_argument("--device", default=None, help=device_help)
    p.add_argument("--matmul-precision", "--matmul_precision", dest="matmul_precision", default="highest",
                   choices=("highest", "default"),
                   help="JAX float32 matmuls: highest (default; full float32 as C MuJoCo, no TF32 on GPU) or default")


def add_model(p, backend: str = "mujoco", backend_help: str = "mujoco (default) or mjx",
              xml_help: str | None = XML_HELP) -> None:
    """--xml-path, --backend and --mjx-impl (train, play, collect)."""
    p.add_argument("--xml-path", "--xml_path", dest="xml_path", default=None, help=xml_help)
    p.add_argument("--backend", default=backend, help=backend_help)
    add_mjx_impl(p)


MJX_IMPL_HELP = ("MJX's implementation with --backend mjx: jax (default) or warp, MuJoCo Warp's kernels "
                 "(optional extra: pip install -e '.[warp]')")


def add_mjx_impl(p) -> None:
    """--mjx-impl (train, play, collect, bench)."""
    p.add_argument("--mjx-impl", "--mjx_impl", dest="mjx_impl", default="jax", help=MJX_IMPL_HELP)


def check_mjx_impl(impl: str, backend: str) -> None:
    """mjx_env.physics.check_impl, before anything is loaded."""
    from mjx_env.physics import check_impl
    check_impl(impl, backend)


def check_backend(name: str, allowed=BACKENDS, flag: str = "--backend") -> None:
    if name not in allowed:
        raise UserError(f"unknown {flag} {name!r}: choose {', '.join(allowed[:-1])} or {allowed[-1]}")


def add_actor_inputs(p) -> None:
    """--history, --estimator, --actor-lin-vel: what the actor reads (train; play and collect take it
    from the policy file, which records it)."""
    p.add_argument("--history", type=int, default=1, metavar="N",
                   help="the actor sees its last N policy observations, oldest first (default 1: the seed's)")
    import argparse
    p.add_argument("--estimator", action=argparse.BooleanOptionalAction, default=False,
                   help="the actor learns its base velocity from its history (bridge/estimator.py)")
    p.add_argument("--actor-lin-vel", "--actor_lin_vel", dest="actor_lin_vel",
                   action=argparse.BooleanOptionalAction, default=False,
                   help="the actor observes the measured base velocity, with noise (the anchors' baseline)")


def add_commands(p, vx=(0.3, 1.0)) -> None:
    """--vx, --vy, --yaw, --height: one value or LOW HIGH (play, collect; collect --grid takes lists)."""
    p.add_argument("--vx", type=float, nargs="+", default=list(vx), help="forward command (m/s): V or LO HI")
    p.add_argument("--vy", type=float, nargs="+", default=[0.0], help="lateral command (m/s)")
    p.add_argument("--yaw", type=float, nargs="+", default=[0.0], help="yaw-rate command (rad/s)")
    p.add_argument("--height", type=float, nargs="+", default=[0.3], help="base height command (m)")


def add_perturbations(p) -> None:
    """--randomize, --push, --push-every, --jump, --jump-every (play, collect)."""
    p.add_argument("--push", type=float, default=0.0, metavar="M",
                   help="kick the base to M m/s more, horizontally in a random direction, every --push-every s")
    p.add_argument("--push-every", type=float, default=4.0, metavar="S", help="seconds between pushes (default 4)")
    p.add_argument("--randomize", action="store_true",
                   help="run under the training's domain randomization (physics drawn per env and episode)")
    p.add_argument("--jump", type=float, default=None, metavar="H",
                   help="command a jump to base height H (m) every --jump-every seconds (flight phases)")
    p.add_argument("--jump-every", type=float, default=2.0, metavar="S", help="seconds between jump commands")


def value_range(name, values):
    if len(values) not in (1, 2):
        raise UserError(f"--{name} takes one value or a LOW HIGH pair")
    lo, hi = (values[0], values[0]) if len(values) == 1 else values
    if lo > hi:
        raise UserError(f"--{name} range must be LOW HIGH with LOW <= HIGH, got {lo} {hi}")
    return (float(lo), float(hi))


# Each command's flag and unit, in the command vector's order (CommandConfig.ranges).
COMMAND_FLAGS = (("vx", "m/s"), ("vy", "m/s"), ("yaw", "rad/s"), ("height", "m"), ("jump", "m"))


def untrained_commands(args) -> list:
    """A note per command flag asking for values outside the ranges train.py samples commands from
    (CommandConfig's, which no flag of train.py changes): the policy never saw them, and what it does
    there is extrapolation. Allowed, since probing that is a fair use; said, so it is not a surprise."""
    from mjx_env.config import CommandConfig
    notes = []
    for (flag, unit), (field, (lo, hi)) in zip(COMMAND_FLAGS, CommandConfig().ranges()):
        values = getattr(args, flag, None)
        values = [] if values is None else values if isinstance(values, (list, tuple)) else [values]
        outside = [v for v in values if not lo <= v <= hi]
        if outside:
            notes.append(f"note: --{flag} {' '.join(f'{v:g}' for v in outside)} lies outside the {lo:g} to "
                         f"{hi:g} {unit} the policies are trained on (CommandConfig.{field}): expect "
                         "poorer tracking there")
    return notes


def randomization_config(args):
    """--randomize and --push as a RandomizationConfig (pushes of exactly M m/s every S s)."""
    from mjx_env.config import RandomizationConfig
    if args.push < 0 or args.push_every <= 0:
        raise UserError("--push must be >= 0 m/s and --push-every > 0 s")
    return RandomizationConfig(enabled=args.randomize, push=args.push > 0,
                               push_velocity_range=(args.push, args.push),
                               push_interval_range_s=(args.push_every, args.push_every))


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
