"""SHA-256 digests of rollouts of the default env: every output of every step, bit for bit.

Used to show that an option which is off leaves the env unchanged, in two ways:
- in the same process, against the env built another way (tests/test_randomization.py, test_jumps.py);
- against digests recorded with the code from before an option existed (GOLDEN). Those depend on the
  machine: XLA compiles the JAX task (and MJX) for the CPU's vector instruction set, and a wider one
  sums in another order, so the low bits differ (24 of 76 qpos values by 1e-10 after one MJX step
  between an AVX-512 and an AVX2 machine). Each digest is recorded under `fingerprint()`, and a
  machine with another fingerprint skips the comparison, saying why.

    PYTHONPATH=. python tests/rollout_digest.py        # this machine's fingerprint and digests

Run against the code of an older commit (its checkout first on sys.path), this file records the
GOLDEN digests of a new machine.
"""
from __future__ import annotations

import hashlib
import os
import platform
import re

import numpy as np

# The State fields the env had before the jump option (a new field adds to the pytree, so it is left out).
FIELDS = ("qpos", "qvel", "last_action", "commands", "jump_steps", "episode_step", "key", "obs", "critic_obs",
          "reward", "terminated", "time_out", "done", "diverged", "bad_action", "reward_terms", "episode_sums",
          "final_episode_sums", "final_episode_length", "metrics")

# XLA's x86 CPU levels (xla_cpu_max_isa), each with the /proc/cpuinfo flags it needs.
ISA_LEVELS = (("AVX512", ("avx512f", "avx512bw", "avx512dq", "avx512vl", "avx2", "fma")),
              ("AVX2", ("avx2", "fma", "avx")), ("AVX", ("avx",)), ("SSE4_2", ("sse4_2",)))


def xla_isa() -> str:
    """The vector instruction set XLA compiles for here: the widest level the CPU has, capped by
    XLA_FLAGS=--xla_cpu_max_isa=LEVEL when set."""
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(next(l for l in f if l.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        return "unknown"
    names = [name for name, need in ISA_LEVELS if flags.issuperset(need)]
    if not names:
        return "unknown"
    cap = re.search(r"--xla_cpu_max_isa=(\w+)", os.environ.get("XLA_FLAGS", ""))
    order = [name for name, _ in ISA_LEVELS]
    if cap and cap.group(1).upper() in order:
        names = [n for n in names if order.index(n) >= order.index(cap.group(1).upper())]
    return names[0] if names else "unknown"


def fingerprint() -> str:
    """What a recorded digest depends on: CPU architecture and vector ISA, jax, jaxlib and mujoco."""
    import jax
    import jaxlib
    import mujoco
    return f"{platform.machine()}/{xla_isa()}/jax {jax.__version__}/jaxlib {jaxlib.__version__}/mujoco {mujoco.__version__}"


# Recorded with the code of b95e9f6, from before domain randomization, jumps and the actor inputs
# (1a2b450 gives the same), on two development machines that both report "AMD EPYC": one with
# AVX-512, one with AVX2 only. The mujoco backend's digest is the same on both.
GOLDEN = {
    "x86_64/AVX512/jax 0.10.2/jaxlib 0.10.2/mujoco 3.17.0": {
        "mujoco": "4c1c6cb741b5a2d7abda2528bdc925ba6a9866753ecd22aaeb693c11a5a0f41a",
        "mjx": "bc6f6d71e0e9164fac6033288f338304e76830a584795bde64f89140b193258c",
    },
    "x86_64/AVX2/jax 0.10.2/jaxlib 0.10.2/mujoco 3.17.0": {
        "mujoco": "4c1c6cb741b5a2d7abda2528bdc925ba6a9866753ecd22aaeb693c11a5a0f41a",
        "mjx": "06a421f0fc36f3c0206c26c888ad1963cf11070fa1a7ecc1bdb9b9909d8e2f83",
    },
}


def _update(h, state) -> None:
    for name in FIELDS:
        v = getattr(state, name)
        items = sorted(v.items()) if isinstance(v, dict) else [("", v)]
        for k, x in items:
            x = np.asarray(x)
            h.update(f"{name}/{k}:{x.dtype}:{x.shape}".encode())
            h.update(np.ascontiguousarray(x).tobytes())


def rollout_digest(backend: str, cfg=None, n: int = 8, steps: int = 60) -> tuple[str, dict]:
    """(hex digest, counts of the events the rollout went through). It goes through random command
    resampling, a time-out and a non-finite action (which ends that env's episode and resets it)."""
    import jax
    import jax.numpy as jnp

    from mjx_env.env import Go2Env

    env = Go2Env(n, backend, cfg)
    h = hashlib.sha256()
    s = env.reset(jax.random.PRNGKey(7))
    _update(h, s)
    # Staggered episode counters: resampling at 200 steps and a time-out at 1000 fall inside the rollout.
    # (Committed to the env's device like the rest of the state, so that the step is the program the
    # other tests of the shared env compile: a committed and an uncommitted input lower differently.)
    s = s.replace(episode_step=jax.device_put(jnp.asarray((np.arange(n) * 131 + 150) % 1000, jnp.int32).at[1].set(990),
                                              env.device))
    rng = np.random.default_rng(0)
    events = dict(resampled=0, terminated=0, time_out=0, bad_action=0)
    for t in range(steps):
        a = rng.normal(0.0, 0.6, (n, 12)).astype(np.float32)
        if t == 10:
            a[3, 5] = np.nan
        prev, s = s, env.step(s, jnp.asarray(a))
        _update(h, s)
        events["resampled"] += int(np.sum(np.any(np.asarray(s.commands != prev.commands), axis=1) & ~np.asarray(s.done)))
        for k in ("terminated", "time_out", "bad_action"):
            events[k] += int(np.sum(np.asarray(getattr(s, k))))
    env.close()
    return h.hexdigest(), events


if __name__ == "__main__":
    print(fingerprint())
    for backend in ("mujoco", "mjx"):
        print(backend, *rollout_digest(backend))
