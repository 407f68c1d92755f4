"""Pictures: velocity tracking (play.py --plot) and throughput per layer (bench.py --plot).

Recording needs only numpy; drawing needs matplotlib (pip install -e '.[plot]').
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mjx_env.errors import UserError
from mjx_env.files import check_folder

TRACKED = (("v_x", "m/s"), ("v_y", "m/s"), ("yaw rate", "rad/s"))


def pyplot():
    try:
        import matplotlib
    except ImportError:
        raise UserError("--plot needs matplotlib: pip install -e '.[plot]'") from None
    matplotlib.use("Agg")                  # files only, no display
    import matplotlib.pyplot as plt
    return plt


def check_target(path) -> None:
    """Fail before the work, not after it: matplotlib is there and the folder exists."""
    pyplot()
    check_folder(path)


def save(fig, path) -> None:
    path = Path(path)
    check_target(path)
    try:
        fig.savefig(path, dpi=80)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}") from None


class TrackingTrace:
    """What play.py --plot draws: the first `shown` envs' commanded and measured v_x, v_y and yaw
    rate over their first episode, and the absolute errors of every step the metrics count."""

    def __init__(self, num_envs: int, dt: float, shown: int = 3):
        self.dt, self.k = dt, min(shown, num_envs)
        self.commanded, self.measured, self.errors = [], [], []
        self.first = np.ones(self.k, bool)           # still in its first episode

    def add(self, commands, lin_vel, ang_vel, counting, done) -> None:
        """One control step: commands (n, >=3) held during it, base-frame velocities reached."""
        cmd = np.asarray(commands)[:, :3]
        meas = np.column_stack([lin_vel[:, 0], lin_vel[:, 1], ang_vel[:, 2]])
        if self.first.any():
            keep = np.where(self.first[:, None], 1.0, np.nan)
            self.commanded.append(cmd[:self.k] * keep)
            self.measured.append(meas[:self.k] * keep)
            self.first &= ~np.asarray(done)[:self.k]
        self.errors.append(np.abs(meas - cmd)[np.asarray(counting)])

    def draw(self, path, title: str = "") -> None:
        plt = pyplot()
        cmd, meas = np.stack(self.commanded), np.stack(self.measured)       # (T, k, 3)
        errors = np.concatenate(self.errors)                                 # (steps, 3)
        t = self.dt * np.arange(1, len(cmd) + 1)
        fig, axes = plt.subplots(2, 3, figsize=(13, 6.5), gridspec_kw={"height_ratios": [3, 2]})
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for j, (name, unit) in enumerate(TRACKED):
            ax = axes[0, j]
            for i in range(self.k):
                c = colors[i % len(colors)]
                ax.plot(t, meas[:, i, j], color=c, lw=0.6, alpha=0.8)
                ax.plot(t, cmd[:, i, j], color=c, lw=2.0, ls="--", zorder=3)
            ax.set_title(f"{name}: commanded (dashed), measured", fontsize=10)
            ax.set(xlabel="time (s)", ylabel=f"{name} ({unit})")
            ax.grid(alpha=0.3)
            ax = axes[1, j]
            mean = errors[:, j].mean()
            top = np.quantile(errors[:, j], 0.995)        # the start-up transient would stretch the axis
            ax.hist(errors[:, j], bins=60, range=(0.0, top), color="0.45")
            ax.axvline(mean, color="C3", label=f"mean {mean:.3f} {unit}")
            ax.set(xlabel=f"|{name} error| ({unit}), all steps, 99.5% shown", ylabel="steps")
            ax.legend(loc="upper right", fontsize=8)
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        save(fig, path)
        plt.close(fig)


BENCH_STYLE = {       # layer -> (label, style); the raw physics beneath each backend stand out as its limit
    "rollout_mt": ("raw C MuJoCo, all threads (CPU limit)", dict(color="k", lw=2.5, ls="--")),
    "rollout_1t": ("raw C MuJoCo, 1 thread", dict(color="0.6", lw=1.5, ls="--")),
    "env_mujoco": ("env, mujoco backend", dict(color="C0", lw=1.8, marker="o", ms=4)),
    "bridge_mujoco": ("env + torch bridge, mujoco", dict(color="C0", lw=1.2, ls="-.", marker="x", ms=5)),
    "mjx_physics": ("raw MJX physics (MJX limit)", dict(color="C2", lw=2.5, ls=":")),
    "env_mjx": ("env, mjx backend", dict(color="C2", lw=1.8, marker="o", ms=4)),
    "bridge_mjx": ("env + torch bridge, mjx", dict(color="C2", lw=1.2, ls="-.", marker="x", ms=5)),
}


def bench_figure(report: dict, path) -> None:
    """Env-steps/s of every layer against the number of envs (median, bars: min-max over rounds)."""
    plt = pyplot()
    results = sorted(report.get("results", []), key=lambda r: r["num_envs"])
    if not results:
        raise UserError("the benchmark report holds no results to plot")
    fig, ax = plt.subplots(figsize=(8.5, 5.5))
    names = list(dict.fromkeys(k for r in results for k in r["layers"]))
    series = [(n, [(r["num_envs"], r["layers"][n]) for r in results if n in r["layers"]]) for n in names]
    series += [(f"train_{b}", [(r["num_envs"], r["train"][b]) for r in results if b in r.get("train", {})])
               for b in dict.fromkeys(b for r in results for b in r.get("train", {}))]
    for i, (name, pts) in enumerate(series):
        x = np.array([p[0] for p in pts])
        y = np.array([p[1]["env_steps_per_s"] for p in pts])
        label, style = BENCH_STYLE.get(name, (name.replace("_", " "), dict(color=f"C{4 + i % 6}", lw=1.5,
                                                                              marker="^", ms=4)))
        if name.startswith("train_"):
            label, style = f"PPO iteration, {name[6:]} (collection + update)", dict(color="C3", lw=1.5, marker="s", ms=4)
        lo = [p[1].get("env_steps_per_s_min", v) for p, v in zip(pts, y)]
        hi = [p[1].get("env_steps_per_s_max", v) for p, v in zip(pts, y)]
        ax.errorbar(x, y, yerr=[y - np.array(lo), np.array(hi) - y], label=label, capsize=3, **style)
    ax.set(xscale="log", yscale="log", xlabel="number of envs", ylabel="env-steps per second")
    ax.set_xticks([r["num_envs"] for r in results], [str(r["num_envs"]) for r in results])
    ax.grid(alpha=0.3, which="both")
    m = report.get("machine", {})
    ax.set_title(f"{m.get('cpu', '?')}, {report.get('threads', '?')} threads, device {report.get('device', '?')}",
                 fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    save(fig, path)
    plt.close(fig)
