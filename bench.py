"""Steps-per-second benchmark: every layer of the stack beside the raw physics beneath it.

    python bench.py                         # 1, 64, 512, 4096 envs on the current device
    python bench.py --num-envs 512 4096 --json bench.json

Layers, per env count, measured in one run:
  rollout_1t / rollout_mt   raw C MuJoCo (mujoco.rollout), one thread / all threads: the CPU limit
  mjx_physics               raw MJX physics step (jit + vmap + lax.scan over the substeps)
  env_mujoco / env_mjx      full environment step (physics + commands, obs, rewards, auto-reset)
  bridge_mujoco / bridge_mjx  the environment as rsl_rl sees it (torch in, TensorDict out)
  train                     one PPO iteration (24 steps x envs), split into collection and learning
MJX compile time is measured apart (ahead-of-time lower + compile). Every timing waits for the
device (block_until_ready; torch.cuda.synchronize on a GPU).
"""
from __future__ import annotations

import copy
import json
import platform
import sys
import time
from importlib import metadata

import mjx_env  # noqa: F401  (JAX memory policy)
from mjx_env.errors import OneLineParser, UserError


def _sync(devices, out=None):
    import jax
    if out is not None:
        jax.block_until_ready(out)
    from bridge.device import synchronize
    synchronize(devices)


def measure(fn, sync, min_time: float) -> float:
    """Seconds per call: run in growing chunks, wait for the device after each chunk."""
    out = fn()          # warm-up (compilation, caches)
    sync(out)
    reps, total = 0, 0.0
    chunk = 1
    while total < min_time or reps < 3:
        t0 = time.perf_counter()
        for _ in range(chunk):
            out = fn()
        sync(out)
        total += time.perf_counter() - t0
        reps += chunk
        chunk = min(chunk * 2, 64)
    return total / reps


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("mujoco", "mujoco-mjx", "jax", "jaxlib", "torch", "rsl-rl-lib", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def bench_count(n: int, args, devices) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    from bridge.runner import Go2Runner, ppo_train_cfg
    from bridge.vec_env import Go2VecEnv
    from mjx_env.config import TaskConfig
    from mjx_env.env import Go2Env
    from mjx_env.physics import MujocoPhysics, cpu_threads

    cfg = TaskConfig()
    substeps = cfg.env.substeps
    sync = lambda out=None: _sync(devices, out)
    layers, compile_s, train = {}, {}, {}
    # Every layer does the same work: all robots standing on their four feet (zero actions hold
    # the default pose; no env falls or resets), from the same state.
    actions_np = np.zeros((n, 12), np.float32)

    def record(name, seconds):
        layers[name] = {"s_per_step": seconds, "env_steps_per_s": n / seconds,
                        "physics_steps_per_s": n * substeps / seconds}

    envs = {}
    for backend in args.backends:
        env = Go2Env(n, backend, cfg, nthread=args.threads,
                     device=devices.jax if backend == "mjx" else None)
        if backend == "mjx":
            s0 = env.reset(jax.random.PRNGKey(0))
            a0 = jax.device_put(jnp.asarray(actions_np), env.device)
            t0 = time.perf_counter()
            env.step = env.step.lower(s0, a0).compile()     # AOT: compile time apart from the rest
            compile_s["env_mjx"] = time.perf_counter() - t0
        envs[backend] = env
    ref = envs.get("mujoco") or envs["mjx"]
    state = ref.reset(jax.random.PRNGKey(0))
    for _ in range(25):                 # drop from the initial height and settle on the feet
        state = ref.step(state, jnp.zeros((n, 12)))
    qpos, qvel = np.asarray(state.qpos, np.float64), np.asarray(state.qvel, np.float64)
    ctrl = np.asarray(ref.task.ctrl(jax.tree_util.tree_map(lambda x: x[0], state), jnp.zeros(12)))
    ctrl = np.tile(ctrl, (n, 1))

    # Raw C MuJoCo: the same rollout call the backend makes, from prepared buffers.
    threads = args.threads or cpu_threads()
    for label, nthread in (("rollout_1t", 1), ("rollout_mt", threads)):
        phys = MujocoPhysics(ref.model, substeps, n, nthread=nthread)
        phys.init_state[:, 1:1 + phys.nq], phys.init_state[:, 1 + phys.nq:] = qpos, qvel
        phys.control[:] = ctrl[:, None, :]
        record(label, measure(phys.rollout, lambda out: None, args.seconds))
        phys.close()

    if "mjx" in args.backends:
        physics = envs["mjx"].physics
        inputs = jax.device_put((jnp.asarray(qpos, jnp.float32), jnp.asarray(qvel, jnp.float32),
                                 jnp.asarray(ctrl, jnp.float32)), devices.jax)
        t0 = time.perf_counter()
        raw = jax.jit(physics.advance).lower(*inputs).compile()
        compile_s["mjx_physics"] = time.perf_counter() - t0
        record("mjx_physics", measure(lambda: raw(*inputs), sync, args.seconds))

    for backend, env in envs.items():
        standing = jax.device_put(state, env.device)
        s = {"state": standing}
        a = jax.device_put(jnp.asarray(actions_np), env.device)

        def env_step():
            s["state"] = env.step(s["state"], a)
            return s["state"].obs
        record(f"env_{backend}", measure(env_step, sync, args.seconds))

        vec = Go2VecEnv(env, seed=1)
        vec.state = standing
        ta = torch.as_tensor(actions_np).to(vec.device)

        def bridge_step():
            with torch.inference_mode():
                return vec.step(ta)[1]
        record(f"bridge_{backend}", measure(bridge_step, lambda out: sync(), args.seconds))

        if backend in args.train_backends:
            runner = Go2Runner(vec, copy.deepcopy(ppo_train_cfg()), log_dir=None, device=str(devices.torch))
            update, spans = runner.alg.update, []

            def timed_update():
                sync()
                t0 = time.perf_counter()
                out = update()
                sync()
                spans.append(time.perf_counter() - t0)
                return out
            runner.alg.update = timed_update
            runner.learn(1)                        # warm-up iteration
            spans.clear()
            t0 = time.perf_counter()
            runner.learn(args.train_iterations)
            sync()
            total = (time.perf_counter() - t0) / args.train_iterations
            learn = sum(spans) / len(spans)
            steps = runner.cfg["num_steps_per_env"] * n
            train[backend] = {"iteration_s": total, "collection_s": total - learn, "learning_s": learn,
                              "learning_share": learn / total, "env_steps_per_s": steps / total}
        env.close()

    L = lambda k: layers[k]["env_steps_per_s"] if k in layers else None
    ratio = lambda a, b: (L(a) / L(b)) if L(a) and L(b) else None
    ratios = {
        "rollout_mt / rollout_1t": ratio("rollout_mt", "rollout_1t"),
        "env_mujoco / rollout_mt": ratio("env_mujoco", "rollout_mt"),
        "bridge_mujoco / env_mujoco": ratio("bridge_mujoco", "env_mujoco"),
        "env_mjx / mjx_physics": ratio("env_mjx", "mjx_physics"),
        "bridge_mjx / env_mjx": ratio("bridge_mjx", "env_mjx"),
        "mjx_physics / rollout_mt": ratio("mjx_physics", "rollout_mt"),
        "env_mjx / env_mujoco": ratio("env_mjx", "env_mujoco"),
    }
    return {"num_envs": n, "layers": layers, "ratios": {k: v for k, v in ratios.items() if v is not None},
            "compile_s": compile_s, "train": train}


BENEATH = {"rollout_mt": "rollout_1t", "env_mujoco": "rollout_mt", "bridge_mujoco": "env_mujoco",
           "env_mjx": "mjx_physics", "bridge_mjx": "env_mjx"}


def table(report) -> str:
    rows = [f"{'envs':>6} {'layer':<15} {'env-steps/s':>12} {'phys-steps/s':>13}  ratio to the layer beneath"]
    for r in report["results"]:
        for name, v in r["layers"].items():
            below = BENEATH.get(name)
            rel = ""
            if below in r["layers"]:
                rel = f"{v['env_steps_per_s'] / r['layers'][below]['env_steps_per_s']:.3f} of {below}"
            rows.append(f"{r['num_envs']:>6} {name:<15} {v['env_steps_per_s']:>12,.0f} "
                        f"{v['physics_steps_per_s']:>13,.0f}  {rel}")
        for name, c in r["compile_s"].items():
            rows.append(f"{r['num_envs']:>6} {'compile ' + name:<29} {c:>13.2f} s")
        for backend, t in r["train"].items():
            rows.append(f"{r['num_envs']:>6} {'train ' + backend:<15} {t['env_steps_per_s']:>12,.0f} "
                        f"{'':>13}  iteration {t['iteration_s']:.2f} s = collection {t['collection_s']:.2f} s"
                        f" + learning {t['learning_s']:.2f} s ({100 * t['learning_share']:.0f}%)")
    return "\n".join(rows)


def main(argv=None) -> int:
    p = OneLineParser(prog="bench.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--num-envs", type=int, nargs="+", default=[1, 64, 512, 4096])
    p.add_argument("--backends", nargs="+", default=["mujoco", "mjx"])
    p.add_argument("--train-backends", nargs="*", default=None,
                   help="backends to time a PPO iteration with (default: the one train.py picks)")
    p.add_argument("--train-iterations", type=int, default=2)
    p.add_argument("--seconds", type=float, default=2.0, help="minimum timed seconds per measurement")
    p.add_argument("--threads", type=int, default=None, help="C MuJoCo threads (default: all cores)")
    p.add_argument("--device", default=None)
    p.add_argument("--json", default="bench.json", help="where to write the JSON report")
    args = p.parse_args(argv)
    try:
        for n in args.num_envs:
            if n < 1:
                raise UserError(f"--num-envs must be >= 1, got {n}")
        for b in args.backends + (args.train_backends or []):
            if b not in ("mjx", "mujoco"):
                raise UserError(f"unknown backend {b!r}: choose mjx or mujoco")
        from bridge import device as devmod
        from mjx_env.config import TaskConfig
        from mjx_env.physics import cpu_threads
        devices = devmod.resolve(args.device)
        if args.train_backends is None:
            auto = "mjx" if devices.is_gpu else "mujoco"
            args.train_backends = [auto] if auto in args.backends else []
        report = {"machine": {"cpu": cpu_name(), "cores": cpu_threads(), "platform": platform.platform()},
                  "device": devices.name, "threads": args.threads or cpu_threads(), "versions": versions(),
                  "substeps": TaskConfig().env.substeps, "results": []}
        for n in args.num_envs:
            report["results"].append(bench_count(n, args, devices))
            print(table({"results": report["results"][-1:]}), flush=True)
    except UserError as exc:
        print(f"bench.py: error: {exc}", file=sys.stderr)
        return 2
    with open(args.json, "w") as f:
        json.dump(report, f, indent=1)
    print(f"\n{report['machine']['cpu']}, {report['threads']} threads, device {report['device']}")
    print(table(report))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
