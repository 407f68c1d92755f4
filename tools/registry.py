"""The named tasks: one row per recipe (`train.py --task NAME`), in the manner of legged_gym's
task_registry and mjlab's registered tasks.

A task is a set of train.py settings (argparse destinations and values) over train.py's defaults,
which are the original go2_train.py's. Any flag given on the command line still overrides the task.
A task may start from its parent's policy (`parent`: the actor only, the critic starts fresh), and
may have later steps that continue its own run (`then`: the critic and optimizer go on, the
iteration count numbers on), as the jump recipe was trained.

`chain(name, from_scratch)` plans the stages a run trains: the task's own steps, or with
--from-scratch its ancestors' first. Each stage has its own folder, so a chain interrupted anywhere
resumes where it stopped when the same command runs again.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from types import MappingProxyType

from mjx_env.errors import UserError

REPO = Path(__file__).resolve().parent.parent
POLICIES = REPO / "policies"

# The settings the shipped walkers share: domain randomization and pushes, commands held for the
# whole 4 s resampling period (the 5 %-per-step resampling learned tracking slowly on a CPU).
_ROBUST = dict(randomize=True, random_resample_prob=0.0)
# The velocity-aware walkers: six frames of history, a velocity estimator, a narrow tracking reward
# and the action noise capped over the second half of the run (the policy is deployed noise-free).
_AWARE = dict(_ROBUST, history=6, estimator=True, tracking_sigma=0.05, final_noise_std=0.3)


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    description: str
    flags: MappingProxyType               # train.py settings of the first step (dest -> value)
    parent: str | None = None             # starts from this task's policy (actor only)
    policy: str | None = None             # the policy file it produces (shipped in policies/ if it exists)
    then: tuple = ()                      # later steps: settings changed from the step before; each resumes it
    minutes: str = ""                     # CPU wall time measured (2-core machine), for the tasks table

    @property
    def steps(self) -> tuple:
        """The settings of each step, in order (the later ones carried over from the one before)."""
        out = [dict(self.flags)]
        for change in self.then:
            out.append({**out[-1], **change})
        return tuple(out)


TASKS: dict[str, Task] = {}


def register(name: str, description: str, flags: dict, **kw) -> Task:
    if name in TASKS:
        raise ValueError(f"task {name} registered twice")
    task = Task(name, description, MappingProxyType(dict(flags)), **kw)
    TASKS[name] = task
    return task


register("Go2-Velocity-Flat", "velocity tracking on flat ground with the original go2_train.py's settings "
         "(4096 envs, 10000 iterations; a GPU run)", {})
register("Go2-Velocity-Nominal", "velocity tracking without randomization, the first CPU recipe: 323 "
         "iterations, then 300 with commands held", dict(num_envs=2048, max_iterations=323, seed=1),
         then=(dict(max_iterations=300, random_resample_prob=0.0),), policy="go2_walk_nominal.pt", minutes="54")
register("Go2-Velocity-Robust", "velocity tracking under domain randomization and 1 m/s pushes",
         dict(_ROBUST, num_envs=2048, max_iterations=473, seed=1), policy="go2_walk_robust_v1.pt",
         minutes="60-140")
register("Go2-Velocity-Estimator", "the robust walker with 6 frames of history and a velocity estimator",
         dict(_AWARE, num_envs=512, max_iterations=200, seed=1), parent="Go2-Velocity-Robust",
         policy="go2_walk_estimator.pt", minutes="32")
register("Go2-Velocity-Rolling", "the estimator walker trained with the feet's rolling friction drawn",
         dict(_AWARE, num_envs=512, max_iterations=300, seed=1, rolling_friction=0.02),
         parent="Go2-Velocity-Robust", policy="go2_walk_rolling.pt")
register("Go2-Velocity-Walker", "the shipped walker: history, velocity estimator, a steady drift it must "
         "correct, wider motor and joint-friction draws",
         dict(_AWARE, num_envs=512, max_iterations=450, seed=2, rolling_friction=0.02,
              reward_scales=["tracking_lin_vel=6.5", "tracking_ang_vel=2"],
              dr_ranges=["kp_scale_range=0.75,1.25", "joint_frictionloss_range=0,0.4",
                         "drift_accel_range=-1,1", "drift_yaw_accel_range=-1.5,1.5"]),
         parent="Go2-Velocity-Robust", policy="go2_walk.pt", minutes="32")
# A one-command chain for the velocity-aware walker (issue 40): the robust stage cut to 1024 envs and
# 300 iterations, both stages at 3 learning epochs (the update runs at the CPU's matrix-product rate, so
# fewer passes are the lever), the walker stage at 300 iterations.
register("Go2-Velocity-Robust-Short", "the robust walker cut for a one-hour chain: 1024 envs, 300 iterations, "
         "3 epochs", dict(_ROBUST, num_envs=1024, max_iterations=300, seed=1, num_learning_epochs=3))
register("Go2-Velocity-Walker-Short", "the shipped walker's settings over the short robust stage, 300 iterations, "
         "3 epochs; --from-scratch trains both in one command",
         dict(TASKS["Go2-Velocity-Walker"].flags, max_iterations=300, num_learning_epochs=3),
         parent="Go2-Velocity-Robust-Short", policy="go2_walk_short.pt")
# The same chain with the left-right mirror loss in both stages and a narrower width (0.02) for the
# walker stage's speed term alone (its yaw term keeps 0.05: 0.02 for both made it fall on Menagerie).
register("Go2-Velocity-Robust-Mirror", "Go2-Velocity-Robust-Short with the left-right mirror loss",
         dict(TASKS["Go2-Velocity-Robust-Short"].flags, symmetry="loss"))
register("Go2-Velocity-Walker-Mirror", "Go2-Velocity-Walker-Short with the mirror loss and a speed tracking width "
         "of 0.02; --from-scratch trains both stages in one command",
         dict(TASKS["Go2-Velocity-Walker-Short"].flags, symmetry="loss", tracking_sigma=0.02, tracking_sigma_yaw=0.05),
         parent="Go2-Velocity-Robust-Mirror", policy="go2_walk_mirror.pt")
register("Go2-Jump", "the reference's jump task: walks and hops on command (3 steps from the robust walker)",
         dict(num_envs=1024, max_iterations=300, seed=1, jumps=True), parent="Go2-Velocity-Robust",
         then=(dict(max_iterations=701), dict(max_iterations=200, seed=2, entropy_coef=0.0)),
         policy="go2_jump.pt", minutes="72")


def get(name: str) -> Task:
    if name not in TASKS:
        raise UserError(f"unknown --task {name!r}; the tasks are: {', '.join(TASKS)} (--list-tasks describes them)")
    return TASKS[name]


def ancestry(name: str) -> list[Task]:
    """The task and its parents, the first ancestor first."""
    out, seen = [], set()
    while name is not None:
        if name in seen:
            raise ValueError(f"task {name}'s parents form a loop")
        seen.add(name)
        out.append(get(name))
        name = out[-1].parent
    return out[::-1]


def shipped_policy(task: Task) -> Path | None:
    return POLICIES / task.policy if task.policy else None


@dataclasses.dataclass(frozen=True)
class Stage:
    """One training run of a chain."""
    task: str
    step: int                 # 0 for a task's first step
    flags: dict               # the task's settings of this step
    folder: str               # under logs/{exp_name}/ ('' for the run's own folder)
    start: str                # "fresh", "parent" (the parent's actor) or "resume" (the step before)

    @property
    def label(self) -> str:
        return self.task if self.step == 0 else f"{self.task} step {self.step + 1}"


def chain(name: str, from_scratch: bool) -> list[Stage]:
    """The stages a `--task NAME` run trains, in order. Without --from-scratch only the task's own
    steps (the first from its parent's shipped policy); a one-step task then writes into the run's
    own folder, as a plain train.py run does."""
    tasks = ancestry(name) if from_scratch else [get(name)]
    stages = []
    for t in tasks:
        for k, flags in enumerate(t.steps):
            start = "resume" if k else ("parent" if t.parent else "fresh")
            stages.append([t.name, k, flags, start])
    nested = len(stages) > 1
    return [Stage(task, k, flags, f"{i + 1}-{task}" + (f"-step{k + 1}" if k else "") if nested else "", start)
            for i, (task, k, flags, start) in enumerate(stages)]


CKPT_RE = re.compile(r"^model_(\d+)\.pt$")


def checkpoints(folder: Path) -> list[int]:
    """The iterations of the model_K.pt files in a run folder, in order."""
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for f in folder.iterdir() if (m := CKPT_RE.match(f.name)))


def describe() -> str:
    """--list-tasks: a name, what it produces and a description per task."""
    width = max(map(len, TASKS))
    lines = []
    for t in TASKS.values():
        made = f" -> policies/{t.policy}" if t.policy else ""
        start = f" (from {t.parent})" if t.parent else ""
        lines.append(f"{t.name:<{width}}  {t.description}{start}{made}")
    return "\n".join(lines)
