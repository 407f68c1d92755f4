"""Steps-per-second benchmark: every layer of the stack beside the raw physics beneath it.

    python bench.py                         # 1, 64, 512, 4096 envs on the current device
    python bench.py --num-envs 512 4096 --repeats 7 --json bench.json
    python bench.py --plot bench.png --from bench.json       # draw a report (matplotlib)
    python bench.py --backends mjx --mjx-impl warp --randomize --warp-caps 20 8   # Warp at other solver caps

Layers, per env count, measured in one run:
  rollout_1t / rollout_mt   raw C MuJoCo (mujoco.rollout), one thread / all threads: the CPU limit
  mjx_physics               raw MJX physics step (jit + vmap + lax.scan over the substeps)
  warp_physics              the same with MJX's Warp implementation (--mjx-impl warp, or jax warp)
  env_mujoco / env_mjx / env_warp   full environment step (physics + commands, obs, rewards, auto-reset)
  bridge_mujoco / bridge_mjx / bridge_warp  the environment as rsl_rl sees it (torch in, TensorDict out)
  train                     one PPO iteration (24 steps x envs), split into collection and learning
Each layer is measured --repeats times, the layers interleaved (round r measures every layer once,
starting at a different layer each round), so that a slow spell of the machine hits all layers
alike. The report gives the median and the range of every layer and of every ratio (a ratio is
taken within each round, then its median and range over the rounds). MJX compile time is measured
apart (ahead-of-time lower + compile; for Warp this includes building its kernels, or loading them
from Warp's kernel cache). Every timing waits for the device (block_until_ready;
torch.cuda.synchronize on a GPU).

A new layer: write a builder `def my_layers(ctx) -> list[Layer]` and add it to LAYER_BUILDERS
(and a row to BENEATH / RATIOS if it has a layer beneath it).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Callable

import mjx_env  # noqa: F401  (JAX memory policy)
from mjx_env.errors import OneLineParser, UserError, command_name
from mjx_env.files import atomic_write, check_folder
from tools.cli import add_device, check_backend, run


def _sync(devices, out=None):
    import jax
    if out is not None:
        jax.block_until_ready(out)
    from bridge.device import synchronize
    synchronize(devices)


def measure(fn, sync, min_time: float, warmup: bool = True, min_reps: int = 3) -> float:
    """Seconds per call: run in growing chunks, wait for the device after each chunk."""
    if warmup:
        sync(fn())      # compilation, caches
    reps, total = 0, 0.0
    chunk = 1
    while total < min_time or reps < min_reps:
        t0 = time.perf_counter()
        for _ in range(chunk):
            out = fn()
        sync(out)
        total += time.perf_counter() - t0
        reps += chunk
        chunk = min(chunk * 2, 64)
    return total / reps


@dataclasses.dataclass
class Layer:
    """One timed layer: fn() advances all envs by one control step; sync(out) waits for it."""
    name: str
    fn: Callable
    sync: Callable
    warm: bool = False

    def sample(self, min_time: float) -> float:
        s = measure(self.fn, self.sync, min_time, warmup=not self.warm)
        self.warm = True
        return s


def schedule(names: list, repeats: int) -> list:
    """Interleaved order of the measurements: every round measures every layer once, and round r
    starts at layer r (mod the number of layers), so no layer always runs first or last."""
    k = len(names)
    return [names[(r + i) % k] for r in range(repeats) for i in range(k)] if k else []


def summary(xs: list) -> dict:
    med = statistics.median(xs)
    return {"median": med, "min": min(xs), "max": max(xs),
            "spread": (max(xs) - min(xs)) / med if med else None, "samples": list(xs)}


def quietly(fn, *args):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


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


# ---- the layers ------------------------------------------------------------------------------
@dataclasses.dataclass
class Context:
    """What the layer builders share for one env count: the envs and a standing start state."""
    n: int
    args: object
    devices: object
    cfg: object
    envs: dict                   # mujoco, mjx (MJX's JAX implementation), warp (its Warp one) -> Go2Env
    state: object                # all robots standing on their four feet (host state of `ref`)
    qpos: object                 # numpy float64 (n, nq), (n, nv), (n, nu): the same state, raw
    qvel: object
    ctrl: object
    actions: object              # numpy zeros (n, 12): zero actions hold the default pose
    compile_s: dict
    closers: list

    def sync(self, out=None):
        _sync(self.devices, out)


def rollout_layers(ctx: Context) -> list:
    """Raw C MuJoCo: the same rollout call the backend makes, from prepared buffers."""
    from mjx_env.physics import MujocoPhysics, cpu_threads
    ref = next(iter(ctx.envs.values()))
    out = []
    for label, nthread in (("rollout_1t", 1), ("rollout_mt", ctx.args.threads or cpu_threads())):
        phys = MujocoPhysics(ref.model, ctx.cfg.env.substeps, ctx.n, nthread=nthread)
        phys.init_state[:, 1:1 + phys.nq], phys.init_state[:, 1 + phys.nq:] = ctx.qpos, ctx.qvel
        phys.control[:] = ctx.ctrl[:, None, :]
        ctx.closers.append(phys.close)
        out.append(Layer(label, phys.rollout, lambda out: None))
    return out


def mjx_physics_layers(ctx: Context) -> list:
    """Raw MJX physics of each implementation, compiled ahead of time (compile time reported apart)."""
    import jax
    import jax.numpy as jnp
    out = []
    for label in ("mjx", "warp"):
        if label not in ctx.envs:
            continue
        physics = ctx.envs[label].physics
        inputs = jax.device_put((jnp.asarray(ctx.qpos, jnp.float32), jnp.asarray(ctx.qvel, jnp.float32),
                                 jnp.asarray(ctx.ctrl, jnp.float32)), ctx.devices.jax)
        t0 = time.perf_counter()
        raw = jax.jit(physics.advance).lower(*inputs).compile()
        ctx.compile_s[f"{label}_physics"] = time.perf_counter() - t0
        out.append(Layer(f"{label}_physics", lambda raw=raw, inputs=inputs: raw(*inputs), ctx.sync))
    return out


def env_and_bridge_layers(ctx: Context) -> list:
    """Each backend's environment step, and the same through the torch bridge."""
    import jax
    import jax.numpy as jnp
    import torch
    from bridge.vec_env import Go2VecEnv
    out = []
    for backend, env in ctx.envs.items():
        standing = jax.device_put(ctx.state, env.device)
        s = {"state": standing}
        a = jax.device_put(jnp.asarray(ctx.actions), env.device)

        def env_step(env=env, s=s, a=a):
            s["state"] = env.step(s["state"], a)
            return s["state"].obs
        out.append(Layer(f"env_{backend}", env_step, ctx.sync))

        vec = Go2VecEnv(env, seed=1)
        vec.state = standing
        ta = torch.as_tensor(ctx.actions).to(vec.device)

        def bridge_step(vec=vec, ta=ta):
            with torch.inference_mode():
                return vec.step(ta)[1]
        out.append(Layer(f"bridge_{backend}", bridge_step, lambda out: ctx.sync()))
    return out


def randomized_layers(ctx: Context) -> list:
    """--randomize: each backend's environment step under domain randomization and pushes, from the
    same standing state (its own draws); the same without joint friction loss (dr_nofl); and with the
    randomization machinery on but every draw at its nominal value and no pushes (dr_nominal)."""
    if not ctx.args.randomize:
        return []
    import jax
    import jax.numpy as jnp
    from mjx_env import randomize
    from mjx_env.config import RandomizationConfig
    dr = RandomizationConfig(enabled=True, push=True)
    # Where the cost comes from: without the friction-loss draw (the one that adds constraint rows),
    # and the per-env model machinery alone (every range at the nominal value, no pushes).
    nofl = dataclasses.replace(dr, joint_frictionloss_range=(0.0, 0.0))
    model = ctx.envs[next(iter(ctx.envs))].model.mj_model
    nominal = randomize.nominal(nofl, model)
    variants = [(b, tag, c) for b in ctx.envs
                for tag, c in (("dr", dr), ("dr_nofl", nofl), ("dr_nominal", nominal))]
    out = []
    for backend, tag, rcfg in variants:
        env = make_env(backend, ctx.n, ctx.cfg.replace(randomization=rcfg), ctx.args, ctx.devices)
        ctx.closers.append(env.close)
        drawn = env.reset(jax.random.PRNGKey(0))
        s = {"state": jax.device_put(ctx.state.replace(dr=drawn.dr, push_countdown=drawn.push_countdown),
                                     env.device)}
        a = jax.device_put(jnp.asarray(ctx.actions), env.device)

        def env_step(env=env, s=s, a=a):
            s["state"] = env.step(s["state"], a)
            return s["state"].obs
        out.append(Layer(f"env_{backend}_{tag}", env_step, ctx.sync))
    return out


LAYER_BUILDERS = (rollout_layers, mjx_physics_layers, env_and_bridge_layers, randomized_layers)
# An env label's backend and MJX implementation.
LABELS = {"mujoco": ("mujoco", "jax"), "mjx": ("mjx", "jax"), "warp": ("mjx", "warp")}


def make_env(label: str, n: int, cfg, args, devices):
    from mjx_env.env import Go2Env
    backend, impl = LABELS[label]
    return Go2Env(n, backend, cfg, nthread=args.threads, device=devices.jax if backend == "mjx" else None,
                  mjx_impl=impl, warp=warp_config(args))


def warp_config(args):
    """WarpConfig with --warp-caps ITER LS in place of its solver caps (to time what the caps cost)."""
    from mjx_env.config import WarpConfig
    if args.warp_caps is None:
        return WarpConfig()
    return dataclasses.replace(WarpConfig(), iterations=args.warp_caps[0], ls_iterations=args.warp_caps[1])

# Each layer's ratio to the layer beneath it (printed beside it), and further ratios of interest.
BENEATH = {"rollout_mt": "rollout_1t", "env_mujoco": "rollout_mt", "bridge_mujoco": "env_mujoco",
           "env_mjx": "mjx_physics", "bridge_mjx": "env_mjx",
           "env_mujoco_dr": "env_mujoco", "env_mujoco_dr_nofl": "env_mujoco", "env_mujoco_dr_nominal": "env_mujoco",
           "env_mjx_dr": "env_mjx", "env_mjx_dr_nofl": "env_mjx", "env_mjx_dr_nominal": "env_mjx",
           "env_warp": "warp_physics", "bridge_warp": "env_warp",
           "env_warp_dr": "env_warp", "env_warp_dr_nofl": "env_warp", "env_warp_dr_nominal": "env_warp"}
RATIOS = [(a, b) for a, b in BENEATH.items()] + [("mjx_physics", "rollout_mt"), ("env_mjx", "env_mujoco"),
                                                 ("warp_physics", "mjx_physics"), ("env_warp", "env_mjx")]


class TrainTimer:
    """One PPO iteration per sample, as train.py runs it (with a log dir, so rsl_rl's logger step,
    TensorBoard writer and final checkpoint are paid too), split into collection and learning."""

    def __init__(self, ctx: Context, backend: str):
        from bridge.runner import Go2Runner, ppo_train_cfg
        from bridge.vec_env import Go2VecEnv
        self.ctx, self.spans = ctx, []
        vec = Go2VecEnv(ctx.envs[backend], seed=1)
        log_dir = tempfile.mkdtemp(prefix="bench_train_")
        ctx.closers.append(lambda: shutil.rmtree(log_dir, ignore_errors=True))
        self.runner = Go2Runner(vec, copy.deepcopy(ppo_train_cfg()), log_dir=log_dir, device=str(ctx.devices.torch))
        update = self.runner.alg.update

        def timed_update():
            ctx.sync()
            t0 = time.perf_counter()
            out = update()
            ctx.sync()
            self.spans.append(time.perf_counter() - t0)
            return out
        self.runner.alg.update = timed_update
        quietly(self.runner.learn, 1)                 # warm-up iteration
        self.runner.current_learning_iteration = 1    # no periodic checkpoint (train.py: every 100)

    def sample(self, iterations: int) -> dict:
        self.spans.clear()
        t0 = time.perf_counter()
        quietly(self.runner.learn, iterations)        # its console log goes to a buffer
        self.ctx.sync()
        total = (time.perf_counter() - t0) / iterations
        learn = sum(self.spans) / len(self.spans)
        return {"iteration_s": total, "learning_s": learn}


def bench_count(n: int, args, devices) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from mjx_env.config import TaskConfig

    cfg = TaskConfig()
    substeps = cfg.env.substeps
    compile_s = {}
    # Every layer does the same work: all robots standing on their four feet (zero actions hold
    # the default pose; no env falls or resets), from the same state.
    actions_np = np.zeros((n, 12), np.float32)
    envs = {}
    labels = [b if b == "mujoco" else {"jax": "mjx", "warp": "warp"}[i]
              for b in args.backends for i in (["jax"] if b == "mujoco" else args.mjx_impl)]
    for label in labels:
        env = make_env(label, n, cfg, args, devices)
        if label != "mujoco":
            s0 = env.reset(jax.random.PRNGKey(0))
            a0 = jax.device_put(jnp.asarray(actions_np), env.device)
            t0 = time.perf_counter()
            # AOT: compile time apart from the rest (Warp's env step is its checked step, which
            # env.step calls and reads the overflow bits of every few steps)
            if label == "warp":
                env.step_checked = env.step_checked.lower(s0, a0).compile()
            else:
                env.step_jit = env.step_jit.lower(s0, a0).compile()
            compile_s[f"env_{label}"] = time.perf_counter() - t0
        envs[label] = env
    ref = envs.get("mujoco") or envs.get("mjx") or envs["warp"]
    state = ref.reset(jax.random.PRNGKey(0))
    for _ in range(25):                 # drop from the initial height and settle on the feet
        state = ref.step(state, jnp.zeros((n, 12)))
    qpos, qvel = np.asarray(state.qpos, np.float64), np.asarray(state.qvel, np.float64)
    ctrl = np.asarray(ref.task.ctrl(jax.tree_util.tree_map(lambda x: x[0], state), jnp.zeros(12)))
    ctx = Context(n, args, devices, cfg, envs, state, qpos, qvel, np.tile(ctrl, (n, 1)), actions_np,
                  compile_s, [])
    layers = {layer.name: layer for build in LAYER_BUILDERS for layer in build(ctx)}
    trainers = {b: TrainTimer(ctx, b) for b in args.train_backends}

    samples = {name: [] for name in layers}
    train_samples = {b: [] for b in trainers}
    order = schedule(list(layers), args.repeats)
    for i, name in enumerate(order):
        samples[name].append(layers[name].sample(args.seconds))
        if (i + 1) % len(layers) == 0:                 # end of a round: one PPO sample per backend
            for b, t in trainers.items():
                train_samples[b].append(t.sample(args.train_iterations))
    for close in ctx.closers:
        close()
    for env in envs.values():
        env.close()
    return summarize(n, substeps, samples, train_samples, compile_s, order)


def summarize(n, substeps, samples, train_samples, compile_s, order) -> dict:
    """Medians and ranges over the rounds; ratios are taken within each round."""
    layers, rates = {}, {}
    for name, secs in samples.items():
        rates[name] = [n / s for s in secs]
        med = statistics.median(secs)
        r = summary(rates[name])
        layers[name] = {"s_per_step": med, "env_steps_per_s": n / med, "physics_steps_per_s": n * substeps / med,
                        "env_steps_per_s_min": r["min"], "env_steps_per_s_max": r["max"],
                        "spread": r["spread"], "env_steps_per_s_samples": r["samples"]}
    ratios, ratio_spread = {}, {}
    for a, b in RATIOS:
        if a in rates and b in rates:
            r = summary([x / y for x, y in zip(rates[a], rates[b])])
            ratios[f"{a} / {b}"] = r["median"]
            ratio_spread[f"{a} / {b}"] = {k: r[k] for k in ("min", "max", "spread", "samples")}
    train = {}
    for b, xs in train_samples.items():
        it = statistics.median([x["iteration_s"] for x in xs])
        learn = statistics.median([x["learning_s"] for x in xs])
        shares = [x["learning_s"] / x["iteration_s"] for x in xs]
        train[b] = {"iteration_s": it, "collection_s": it - learn, "learning_s": learn,
                    "learning_share": learn / it, "env_steps_per_s": 24 * n / it,
                    "iteration_s_min": min(x["iteration_s"] for x in xs),
                    "iteration_s_max": max(x["iteration_s"] for x in xs),
                    "learning_share_min": min(shares), "learning_share_max": max(shares), "samples": xs}
    return {"num_envs": n, "layers": layers, "ratios": ratios, "ratio_spread": ratio_spread,
            "compile_s": compile_s, "train": train, "order": order}


def bench_phi(args, devices) -> list:
    """Φ (mjx_env/dynamics.py): forward and forward+backward of B windows of H control steps.

    Forward is Go2Dynamics.rollout; forward+backward is rollout_vjp then its pullback (what
    TorchDynamics' backward runs). Programs are compiled ahead of time (compile time apart); memory
    is XLA's buffer plan of each program (arguments + outputs + temporaries) and the process's peak
    resident set so far. Samples of the two are interleaved; the ratio is taken within each round.

    Compile times, side by side: "cold" compiles into a fresh persistent compilation cache (what the
    first run on a machine pays: Φ turns the cache on by default), "cached" compiles the same programs
    again after jax.clear_caches() (what every later process pays: loaded from the cache). The cached
    programs' values and gradients are checked equal to the cold ones, bit for bit. With --phi-cache
    warm the first compile uses the cache as it is (a later run's figure, or a machine's first).
    """
    import resource
    import tempfile

    from jax.experimental.compilation_cache import compilation_cache

    import jax
    import jax.numpy as jnp
    import numpy as np

    from mjx_env.config import TaskConfig
    from mjx_env.dynamics import Go2Dynamics
    from mjx_env.env import Go2Env

    cache_dir = None
    if args.phi_cache == "cold":
        cache_dir = tempfile.mkdtemp(prefix="phi_cache_")          # cold: nothing cached yet
        jax.config.update("jax_compilation_cache_dir", cache_dir)
        compilation_cache.reset_cache()
    cfg = TaskConfig()
    dyn = Go2Dynamics(cfg=cfg, device=devices.jax, remat=args.phi_remat)
    # Standing robots (settled for 25 steps) with small random actions: feet stay in contact.
    env = Go2Env(1, "mujoco", cfg)
    s = env.reset(jax.random.PRNGKey(0))
    for _ in range(25):
        s = env.step(s, jnp.zeros((1, 12)))
    x_stand = np.concatenate([s.qpos, s.qvel], axis=1)
    rng = np.random.default_rng(0)

    def mem(compiled):
        try:
            m = compiled.memory_analysis()
        except Exception:     # not every backend reports it
            m = None
        if m is None:
            return None
        return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                   - getattr(m, "alias_size_in_bytes", 0))

    out = []
    for B in args.phi_batch:
        for H in args.phi_horizon:
            x0, u_prev, U = dyn.check(np.repeat(x_stand, B, 0), np.zeros((B, 12), np.float32),
                                      rng.normal(0.0, 0.1, (B, H, 12)).astype(np.float32))
            W = jax.device_put(jnp.ones((B, H + 1, dyn.nx), dyn.dtype), dyn.device)
            t0 = time.perf_counter()
            fwd = dyn.compile_forward(x0, u_prev, U)
            t1 = time.perf_counter()
            vjp, pull = dyn.compile_vjp(x0, u_prev, U, W)
            t2 = time.perf_counter()
            # the same programs from the persistent cache, as a new process would get them
            jax.clear_caches()
            t3 = time.perf_counter()
            fwd_c = dyn.compile_forward(x0, u_prev, U)
            t4 = time.perf_counter()
            vjp_c, pull_c = dyn.compile_vjp(x0, u_prev, U, W)
            t5 = time.perf_counter()
            same = (bool(jnp.array_equal(fwd(x0, u_prev, U), fwd_c(x0, u_prev, U)))
                    and all(bool(jnp.array_equal(a, b)) for a, b in
                            zip(pull(vjp(x0, u_prev, U)[1], W), pull_c(vjp_c(x0, u_prev, U)[1], W))))
            del fwd_c, vjp_c, pull_c
            # compiled ahead of time: no warm-up call needed (warm=True)
            layers = {"forward": Layer("forward", lambda: fwd(x0, u_prev, U), lambda o: _sync(devices, o), True),
                      "forward_backward": Layer("forward_backward", lambda: pull(vjp(x0, u_prev, U)[1], W),
                                                lambda o: _sync(devices, o), True)}
            secs = {k: [] for k in layers}
            for name in schedule(list(layers), args.repeats):
                secs[name].append(measure(layers[name].fn, layers[name].sync, args.seconds,
                                          warmup=False, min_reps=1))
            ratio = summary([b / f for f, b in zip(secs["forward"], secs["forward_backward"])])
            r = {"B": B, "H": H, "remat": dyn.remat, "phi_cache": args.phi_cache, "compile_s": {"forward": t1 - t0, "forward_backward": t2 - t1},
                 "compile_cached_s": {"forward": t4 - t3, "forward_backward": t5 - t4},
                 "cached_values_and_gradients_equal": same,
                 "ratio_fwd_bwd_to_fwd": ratio["median"], "ratio_min": ratio["min"], "ratio_max": ratio["max"],
                 "memory_bytes": {"forward": mem(fwd), "forward_backward_vjp": mem(vjp),
                                  "forward_backward_pullback": mem(pull)},
                 "peak_rss_mb_so_far": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
            for name, xs in secs.items():
                med = statistics.median(xs)
                r[name] = {"s": med, "s_min": min(xs), "s_max": max(xs), "windows_per_s": B / med,
                           "control_steps_per_s": B * H / med, "samples": xs}
            out.append(r)
            print(phi_table([r]), flush=True)
    env.close()
    if cache_dir is not None:
        import shutil
        shutil.rmtree(cache_dir, ignore_errors=True)
    return out


def phi_table(results) -> str:
    mb = lambda b: f"{b / 2**20:,.0f} MB" if b else "n/a"
    rows = []
    for r in results:
        f, fb, m = r["forward"], r["forward_backward"], r["memory_bytes"]
        remat = " remat" if r["remat"] else ""
        rows.append(f"phi B={r['B']:<5} H={r['H']:<3}{remat} forward {f['windows_per_s']:,.1f} windows/s "
                    f"({f['control_steps_per_s']:,.0f} steps/s); forward+backward {fb['windows_per_s']:,.1f} "
                    f"windows/s ({fb['control_steps_per_s']:,.0f} steps/s); ratio {r['ratio_fwd_bwd_to_fwd']:.2f} "
                    f"[{r['ratio_min']:.2f}-{r['ratio_max']:.2f}]; XLA memory fwd {mb(m['forward'])}, "
                    f"vjp {mb(m['forward_backward_vjp'])}, pullback {mb(m['forward_backward_pullback'])}; "
                    f"peak RSS {r['peak_rss_mb_so_far']:,.0f} MB; compile {r['compile_s']['forward']:.0f} s + "
                    f"{r['compile_s']['forward_backward']:.0f} s {r.get('phi_cache', 'cold')}, "
                    f"{r['compile_cached_s']['forward']:.1f} s + "
                    f"{r['compile_cached_s']['forward_backward']:.1f} s cached (values and gradients "
                    f"{'equal' if r['cached_values_and_gradients_equal'] else 'DIFFER'})")
    return "\n".join(rows)


def table(report) -> str:
    rows = [f"{'envs':>6} {'layer':<15} {'env-steps/s median [min-max]':>32} {'phys-steps/s':>13}  "
            "ratio to the layer beneath, median [min-max] over the rounds"]
    for r in report["results"]:
        for name, v in r["layers"].items():
            below = BENEATH.get(name)
            rel = ""
            if below in r["layers"]:
                key = f"{name} / {below}"
                s = r["ratio_spread"][key]
                rel = f"{r['ratios'][key]:.3f} [{s['min']:.3f}-{s['max']:.3f}] of {below}"
            rate = f"{v['env_steps_per_s']:,.0f} [{v['env_steps_per_s_min']:,.0f}-{v['env_steps_per_s_max']:,.0f}]"
            rows.append(f"{r['num_envs']:>6} {name:<15} {rate:>32} {v['physics_steps_per_s']:>13,.0f}  {rel}")
        for name, c in r["compile_s"].items():
            rows.append(f"{r['num_envs']:>6} {'compile ' + name:<48} {c:>13.2f} s")
        for backend, t in r["train"].items():
            rate = f"{t['env_steps_per_s']:,.0f}"
            rows.append(f"{r['num_envs']:>6} {'train ' + backend:<15} {rate:>32} {'':>13}  "
                        f"iteration {t['iteration_s']:.2f} s [{t['iteration_s_min']:.2f}-{t['iteration_s_max']:.2f}]"
                        f" = collection {t['collection_s']:.2f} s + learning {t['learning_s']:.2f} s "
                        f"({100 * t['learning_share']:.0f}%)")
    return "\n".join(rows)


def main(argv=None) -> int:
    p = OneLineParser(prog=command_name("bench.py"), description=__doc__.split("\n\n")[0])
    p.add_argument("--num-envs", "--num_envs", dest="num_envs", type=int, nargs="+", default=[1, 64, 512, 4096],
                   help="batch sizes to time (default: 1 64 512 4096)")
    p.add_argument("--backends", nargs="+", default=["mujoco", "mjx"],
                   help="backends whose physics and env layers to time: mujoco, mjx (default: both)")
    p.add_argument("--mjx-impl", "--mjx_impl", dest="mjx_impl", nargs="+", default=["jax"],
                   help="MJX's implementation(s) for the mjx layers: jax (default), warp, or jax warp side by side "
                        "(warp: pip install -e '.[warp]')")
    p.add_argument("--warp-caps", "--warp_caps", dest="warp_caps", type=int, nargs=2, default=None,
                   metavar=("ITER", "LS"), help="Warp's solver and line-search iteration caps in place of "
                   "WarpConfig's, to time what they cost (parity with C MuJoCo needs WarpConfig's)")
    p.add_argument("--train-backends", nargs="*", default=None,
                   help="backends to time a PPO iteration with: mujoco, mjx or warp (MJX's Warp implementation); "
                        "default: the one train.py picks")
    p.add_argument("--train-iterations", type=int, default=1, help="PPO iterations per round (default 1)")
    p.add_argument("--repeats", type=int, default=5,
                   help="rounds: measurements of every layer, interleaved (default 5)")
    p.add_argument("--seconds", type=float, default=1.0, help="minimum timed seconds per measurement (default 1)")
    p.add_argument("--threads", type=int, default=None, help="C MuJoCo threads (default: all cores)")
    add_device(p, device_help="device of the mjx layers and the PPO iteration (default: cuda:0 when torch and JAX "
                              "both see a GPU, else cpu)")
    p.add_argument("--randomize", action="store_true",
                   help="also time each backend's env step under domain randomization and pushes")
    p.add_argument("--json", default="bench.json", help="where to write the JSON report (default bench.json)")
    p.add_argument("--plot", default=None, metavar="OUT.png", help="env-steps/s of every layer against envs")
    p.add_argument("--from", dest="from_json", default=None, metavar="BENCH.json",
                   help="with --plot: draw an existing report instead of measuring")
    p.add_argument("--phi", action="store_true", help="benchmark the differentiable rollout Φ instead")
    p.add_argument("--phi-batch", type=int, nargs="+", default=[128, 1024], help="Φ windows per call (B)")
    p.add_argument("--phi-horizon", type=int, nargs="+", default=[16, 32], help="Φ window lengths (H)")
    p.add_argument("--phi-cache", choices=("cold", "warm"), default="cold",
                   help="Φ's first compile: cold (default), into a fresh compilation cache, as a machine's first "
                        "run; warm, with the cache as it is (Φ's own, or $JAX_COMPILATION_CACHE_DIR), as a later run")
    p.add_argument("--phi-remat", action="store_true",
                   help="Φ with remat=True: each control step recomputed in the backward pass (less memory, "
                        "a slower compile)")
    args = p.parse_args(argv)
    return run("bench.py", lambda: bench(args))


def bench(args) -> int:
    if args.plot:
        from tools.plots import bench_figure, check_target
        check_target(args.plot)
    if args.from_json:
        if not args.plot:
            raise UserError("--from needs --plot OUT.png")
        try:
            report = json.loads(open(args.from_json).read())
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read benchmark report {args.from_json}: {exc}") from None
        bench_figure(report, args.plot)
        print(f"wrote {args.plot}")
        return 0
    for n in args.num_envs:
        if n < 1:
            raise UserError(f"--num-envs must be >= 1, got {n}")
    if args.repeats < 1 or args.train_iterations < 1:
        raise UserError(f"--repeats and --train-iterations must be >= 1, got {args.repeats} "
                        f"and {args.train_iterations}")
    if args.seconds < 0:
        raise UserError(f"--seconds must be >= 0, got {args.seconds:g}")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    check_folder(args.json)                   # before the benchmark, not after it
    for b in args.backends:
        check_backend(b, ("mjx", "mujoco"), flag="backend")
    from mjx_env.physics import check_impl
    for impl in args.mjx_impl:
        check_impl(impl)
    if "warp" in args.mjx_impl and "mjx" not in args.backends:
        raise UserError("--mjx-impl warp times MJX's Warp implementation: add mjx to --backends")
    if args.warp_caps is not None and ("warp" not in args.mjx_impl or min(args.warp_caps) < 1):
        raise UserError(f"--warp-caps takes two iteration caps >= 1 for --mjx-impl warp, got "
                        f"{' '.join(map(str, args.warp_caps))} with --mjx-impl {' '.join(args.mjx_impl)}")
    for b in args.train_backends or []:
        check_backend(b, ("mjx", "mujoco", "warp"), flag="train backend")
        if b != "mujoco" and (LABELS[b][1] not in args.mjx_impl or "mjx" not in args.backends):
            raise UserError(f"--train-backends {b} needs its env layer: --backends mjx --mjx-impl {LABELS[b][1]}")
    from bridge import device as devmod
    from mjx_env.config import TaskConfig
    from mjx_env.physics import cpu_threads
    devices = devmod.resolve(args.device, args.matmul_precision)
    if args.train_backends is None:
        auto = ("mjx" if "jax" in args.mjx_impl else "warp") if devices.is_gpu else "mujoco"
        args.train_backends = [auto] if LABELS[auto][0] in args.backends else []
    warp = warp_config(args)
    report = {"machine": {"cpu": cpu_name(), "cores": cpu_threads(), "platform": platform.platform()},
              "device": devices.name, "matmul_precision": args.matmul_precision, "threads": args.threads or cpu_threads(), "versions": versions(),
              "substeps": TaskConfig().env.substeps, "repeats": args.repeats, "seconds": args.seconds,
              "warp_caps": [warp.iterations, warp.ls_iterations],
              "results": []}
    if args.phi:
        if min(args.phi_batch + args.phi_horizon) < 1:
            raise UserError("--phi-batch and --phi-horizon must be >= 1")
        if args.plot:
            raise UserError("--plot draws the env layers; it does not go with --phi")
        report["phi"] = bench_phi(args, devices)
    for n in [] if args.phi else args.num_envs:
        report["results"].append(bench_count(n, args, devices))
        print(table({"results": report["results"][-1:]}), flush=True)
    atomic_write(args.json, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=1)))
    print(f"\n{report['machine']['cpu']}, {report['threads']} threads, device {report['device']}, "
          f"{args.repeats} interleaved rounds")
    print(phi_table(report["phi"]) if args.phi else table(report))
    print(f"wrote {args.json}")
    if args.plot:
        bench_figure(report, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
