"""Recover a demonstration's actions from its states alone, by gradient descent through Φ.

    python collect_trajectories.py --episodes 4 --duration 4 --out demos.npz
    python examples/recover_actions.py demos.npz --episode 0 --start 100 --horizon 16 --iters 300

This is DynaFlow's inner problem: only the states of a window are known. Starting from zero
actions, Adam minimises the (normalised) squared state error between the rollout Φ(x0, u_prev, U)
and the recorded states, with exact gradients through the env's physics (see recover()). The latency buffer u_prev (the
action before x0) is not a state either, so it is recovered too; with the env's one-step latency the
H states after x0 are shaped by the H actions u_prev, U[0], ..., U[H-2], and U[H-1] reaches no
state of the window (it stays zero). The recorded actions are printed beside, for reference only.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # run from anywhere in the checkout


def adam(lr, b1=0.9, b2=0.999, eps=1e-8):
    """Adam (Kingma & Ba) in a few lines of JAX: init(params) -> state; update(grad, state, params)."""
    import jax.numpy as jnp

    def init(p):
        return jnp.zeros_like(p), jnp.zeros_like(p), jnp.zeros((), jnp.int32)

    def update(g, state, p):
        m, v, k = state
        m, v, k = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g, k + 1
        step = lr * (m / (1 - b1 ** k)) / (jnp.sqrt(v / (1 - b2 ** k)) + eps)
        return p - step, (m, v, k)

    return init, update


def load_window(path, episode: int, start: int, horizon: int):
    """x0, the H states after it, and the recorded actions (reference only) of one window."""
    from mjx_env.errors import UserError
    path = Path(path)
    if not path.is_file() or path.suffix != ".npz":
        raise UserError(f"{path}: need an NPZ dataset (python collect_trajectories.py --out demos.npz, "
                        "or ... convert demos.h5 --out demos.npz)")
    z = np.load(path, allow_pickle=True)
    if not 0 <= episode < len(z["episode_lengths"]):
        raise UserError(f"--episode {episode}: the file has episodes 0..{len(z['episode_lengths']) - 1}")
    T = int(z["episode_lengths"][episode])
    if horizon < 2 or start < 0 or start + horizon >= T:
        raise UserError(f"--start {start} --horizon {horizon} does not fit episode {episode} ({T} steps): "
                        f"need horizon >= 2 and start + horizon <= {T - 1}")
    states = z["states"][episode][start:start + horizon + 1]
    # the H actions that shape the window: u_prev = the action before x0, then U[0..H-2]
    recorded = np.concatenate([z["last_actions"][episode][start:start + 1],
                               z["actions"][episode][start:start + horizon - 1]])
    return z, states, recorded


def recover(dyn, states, scale, iters: int, lr: float, print_every: int = 1, recorded=None, log=print):
    """Adam on the H actions from zero. Returns (actions, errors): the RMS state error over the whole
    window before each update, and after the last.

    The loss is the mean squared state error with each state entry divided by `scale` (its spread in
    the dataset), so that joint velocities (rad/s) do not drown positions and orientation: with the
    plain squared error Adam stalls about twice as high on walking windows.
    """
    import jax
    import jax.numpy as jnp

    x0, target = jnp.asarray(states[None, 0]), jnp.asarray(states[None, 1:])
    H = target.shape[1]
    w = jnp.asarray(1.0 / np.square(scale), jnp.float32)

    def rollout(a):           # a: (H, 12) = u_prev, U[0..H-2]; U[H-1] reaches no state of the window
        U = jnp.concatenate([a[1:], jnp.zeros_like(a[:1])])[None]
        return dyn.rollout(x0, a[None, 0], U)[0, 1:]

    def loss(a):
        X = rollout(a)
        return jnp.mean(w * jnp.square(X - target[0])), X

    init, update = adam(lr)

    @jax.jit
    def step(a, opt):
        (_, X), g = jax.value_and_grad(loss, has_aux=True)(a)
        a, opt = update(g, opt, a)
        return a, opt, jnp.sqrt(jnp.mean(jnp.square(X - target[0])))

    # committed to Φ's device like step's outputs, so that the second call does not compile again
    a = jax.device_put(jnp.zeros((H, dyn.nu), jnp.float32), dyn.device)
    opt, errors = jax.device_put(init(a), dyn.device), []
    t0 = time.time()
    for i in range(iters + 1):
        a_next, opt, err = step(a, opt)      # err: of `a`, before this update
        errors.append(float(err))
        if i % print_every == 0 or i == iters:
            extra = "" if recorded is None else \
                f"   action RMS error {float(np.sqrt(np.mean((np.asarray(a) - recorded) ** 2))):.4f}"
            log(f"iter {i:4d}   state RMS error {errors[-1]:.6f}{extra}   "
                f"({time.time() - t0:.1f} s)")
        if i < iters:
            a = a_next
    return np.asarray(a), np.array(errors)


def main(argv=None) -> int:
    from mjx_env.errors import OneLineParser, UserError
    p = OneLineParser(prog="recover_actions.py", description=__doc__.split("\n")[0])
    p.add_argument("npz", help="dataset in the DynaFlow NPZ format")
    p.add_argument("--episode", type=int, default=0, help="which episode of the file (default 0)")
    p.add_argument("--start", type=int, default=100, help="first state of the window (control step)")
    p.add_argument("--horizon", "-H", type=int, default=16, help="H: the window has H+1 states")
    p.add_argument("--iters", type=int, default=300, help="Adam steps (default 300)")
    p.add_argument("--lr", type=float, default=0.1, help="Adam step size (actions are O(1))")
    p.add_argument("--print-every", type=int, default=10, help="steps between printed losses")
    p.add_argument("--xml-path", default=None, help="the model the data was collected with (default: the file's)")
    args = p.parse_args(argv)
    try:
        if args.iters < 0 or not args.lr > 0 or args.print_every < 1:
            raise UserError(f"need --iters >= 0, --lr > 0 and --print-every >= 1, got {args.iters}, {args.lr:g} "
                            f"and {args.print_every}")
        z, states, recorded = load_window(args.npz, args.episode, args.start, args.horizon)
        from demos.npz import env_config
        from mjx_env.files import sha256
        from mjx_env.config import TaskConfig
        from mjx_env.dynamics import Go2Dynamics

        xml = args.xml_path or str(z["model_path"])
        if Path(xml).is_file() and sha256(xml) != str(z["model_sha256"]):
            print(f"warning: {xml} is not the model the data was collected with (SHA-256 differs)", file=sys.stderr)
        dyn = Go2Dynamics(xml, TaskConfig(env=env_config(z)))
        H = args.horizon
        print(f"{args.npz}: episode {args.episode}, states {args.start}..{args.start + H} "
              f"(H = {H}, {H * float(z['dt']):.2f} s), collected with the {z['backend']} backend")
        floor = dyn.rollout(states[None, 0], recorded[None, 0],
                            np.concatenate([recorded[1:], np.zeros((1, 12), np.float32)])[None])
        print(f"recorded actions through Φ: state RMS error {np.sqrt(np.mean((np.asarray(floor)[0, 1:] - states[1:]) ** 2)):.2e}"
              " (the floor)")
        # each state entry's spread over the dataset (floored: some are nearly constant)
        scale = np.maximum(np.concatenate(list(z["states"])).std(axis=0), 1e-2)
        actions, errors = recover(dyn, states, scale, args.iters, args.lr, args.print_every, recorded)
    except UserError as exc:
        print(f"recover_actions.py: error: {exc}", file=sys.stderr)
        return 2
    print(f"state RMS error {errors[0]:.4f} (zero actions) -> {errors[-1]:.6f} after {args.iters} Adam steps: "
          f"{errors[0] / errors[-1]:.0f}x lower, horizon H = {args.horizon}; "
          f"action RMS error {np.sqrt(np.mean(recorded ** 2)):.3f} -> {np.sqrt(np.mean((actions - recorded) ** 2)):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
