"""PPO configuration (the seed's hyperparameters, in rsl_rl 5.x layout) and a runner that
writes checkpoints atomically and checks them before loading."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch
from rsl_rl.runners import OnPolicyRunner
from rsl_rl.utils.logger import Logger

from bridge.symmetry import lean
from mjx_env.errors import UserError, first_line
from mjx_env.files import atomic_write


def ppo_train_cfg(num_steps_per_env: int = 24, save_interval: int = 100, estimator: bool = False) -> dict:
    """go2_train.py's PPO settings. In rsl_rl 5.x the action noise lives in
    actor.distribution_cfg.init_std and observation normalisation per model (the reference
    has none); a top-level 'empirical_normalization' would be silently ignored.
    `estimator`: the actor learns its base velocity from its inputs (bridge/estimator.py)."""
    mlp = dict(class_name="MLPModel", hidden_dims=[512, 256, 128], activation="elu", obs_normalization=False)
    cfg = {
        "num_steps_per_env": num_steps_per_env,
        "save_interval": save_interval,
        # rsl_rl's NaN check costs four device-to-host syncs per env step. The env never hands
        # out a non-finite value: it resets diverged envs and replaces non-finite actions
        # (counted in Episode/diverged_envs and Episode/bad_actions).
        "check_for_nan": False,
        "logger": "tensorboard",
        "obs_groups": {"actor": ["policy"], "critic": ["critic"]},
        "actor": dict(mlp, distribution_cfg={"class_name": "GaussianDistribution", "init_std": 1.0}),
        "critic": dict(mlp),
        "algorithm": {
            "class_name": "PPO",
            "clip_param": 0.2,
            "desired_kl": 0.01,
            "entropy_coef": 0.01,
            "gamma": 0.99,
            "lam": 0.95,
            "learning_rate": 0.001,
            "max_grad_norm": 1.0,
            "num_learning_epochs": 5,
            "num_mini_batches": 4,
            "schedule": "adaptive",
            "use_clipped_value_loss": True,
            "value_loss_coef": 1.0,
        },
    }
    if estimator:
        cfg["actor"].update(class_name="bridge.estimator:EstimatorModel", estimator_hidden_dims=[256, 128])
        cfg["algorithm"].update(class_name="bridge.estimator:EstimatorPPO", estimator_learning_rate=1e-3)
    return cfg


class DeviceLogger(Logger):
    """rsl_rl's Logger without a device-to-host sync per env step: the returns and lengths of
    the episodes that end stay on the device until log() (once per iteration), then fill the
    same last-100 buffers in the same order as rsl_rl's own process_env_step. Functions in
    after_log run after every log(), once per iteration (train.py: noise anneal, stop requests)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._ended = []      # per step: (ended mask, episode returns, episode lengths)
        self.after_log = []

    def process_env_step(self, rewards, dones, extras, intrinsic_rewards=None) -> None:
        if self.writer is None or intrinsic_rewards is not None:     # nothing logged / RND: rsl_rl's own
            return super().process_env_step(rewards, dones, extras, intrinsic_rewards)
        if "episode" in extras:
            self.ep_extras.append(extras["episode"])
        elif "log" in extras:
            self.ep_extras.append(extras["log"])
        self.cur_reward_sum += rewards
        self.cur_episode_length += 1
        ended = dones > 0
        self._ended.append((ended, self.cur_reward_sum.clone(), self.cur_episode_length.clone()))
        self.cur_reward_sum.masked_fill_(ended, 0)
        self.cur_episode_length.masked_fill_(ended, 0)

    def hand_over(self) -> None:
        """Move the episodes that ended since the last call into rewbuffer and lenbuffer."""
        if self._ended:
            ended, returns, lengths = (torch.stack(x) for x in zip(*self._ended))
            self._ended.clear()
            self.rewbuffer.extend(returns[ended].tolist())     # step-major, env index within a step
            self.lenbuffer.extend(lengths[ended].tolist())

    def log(self, *args, **kwargs) -> None:
        self.hand_over()
        super().log(*args, **kwargs)
        for hook in self.after_log:
            hook()


class Go2Runner(OnPolicyRunner):
    remembered = None            # see remember_iteration

    def __init__(self, env, train_cfg: dict, log_dir: str | None = None, device: str = "cpu", actor_inputs=None,
                 recipe: dict | None = None):
        super().__init__(env, train_cfg, log_dir=log_dir, device=device)
        self.alg.symmetry = lean(self.alg.symmetry)     # the mirror loss at one actor pass fewer
        self.actor_inputs = actor_inputs      # bridge.policy.ActorInputs, recorded in every checkpoint
        self.recipe = recipe                  # {"task": name or None, "flags": train.py's settings}, recorded too
        self.logger = DeviceLogger(log_dir=log_dir, cfg=self.cfg, env_cfg=self.env.cfg, num_envs=self.env.num_envs,
                                   is_distributed=self.is_distributed, gpu_world_size=self.gpu_world_size,
                                   gpu_global_rank=self.gpu_global_rank, device=self.device)

    def _configure_multi_gpu(self) -> None:
        """Data-parallel PPO on the process group bridge.distributed started.

        rsl_rl 5.5.1 (OnPolicyRunner._configure_multi_gpu) requires the device cuda:LOCAL_RANK and
        starts an NCCL process group itself, so it cannot run on a CPU. When the group is already
        running (NCCL for CUDA tensors, gloo for CPU tensors), set up the same state here: the rest
        of rsl_rl (parameter broadcast, gradient all-reduce, KL averaging, rank-0-only logging) then
        runs unchanged, on a GPU or on the CPU.
        """
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return super()._configure_multi_gpu()
        self.gpu_world_size = torch.distributed.get_world_size()
        self.gpu_global_rank = torch.distributed.get_rank()
        self.gpu_local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.is_distributed = self.gpu_world_size > 1
        self.cfg["multi_gpu"] = {"global_rank": self.gpu_global_rank, "local_rank": self.gpu_local_rank,
                                 "world_size": self.gpu_world_size} if self.is_distributed else None
        if self.device not in ("cpu", f"cuda:{self.gpu_local_rank}"):
            raise UserError(f"rank {self.gpu_global_rank} trains on {self.device}; under torchrun each rank "
                            f"uses cuda:LOCAL_RANK (cuda:{self.gpu_local_rank}) or the CPU")
        if self.device != "cpu":
            torch.cuda.set_device(self.gpu_local_rank)        # NCCL works on the current device

    def remember_iteration(self) -> None:
        """Keep a CPU copy of what a checkpoint of the iteration just completed holds. Under
        torchrun a peer may die in the middle of the next update, when the live weights are
        half-updated; rank 0 then saves this copy (save_remembered). On a GPU it costs one
        device-to-host copy of the networks and optimizer state per iteration."""
        self.remembered = _to_cpu(self.checkpoint())

    def save_remembered(self, path: str) -> int | None:
        """Write the last remembered iteration (atomically); its number, or None if there is none."""
        saved = self.remembered
        if saved is None:
            return None
        atomic_write(path, lambda tmp: torch.save(saved, tmp))
        return saved["iter"]

    def checkpoint(self, infos=None) -> dict:
        """What a checkpoint holds: rsl_rl's models and optimizer, the iteration, the actor's inputs."""
        saved = self.alg.save()
        saved.update(iter=self.current_learning_iteration, infos=infos)
        if self.actor_inputs is not None:
            saved["actor_inputs"] = dataclasses.asdict(self.actor_inputs)
        if self.recipe is not None:
            saved.update(task=self.recipe["task"], recipe=self.recipe["flags"])
        return saved

    def save(self, path: str, infos=None) -> None:
        # OnPolicyRunner.save would hand the temporary file to W&B (which links, then loses it):
        # write atomically, then upload the final path.
        saved = self.checkpoint(infos)
        atomic_write(path, lambda tmp: torch.save(saved, tmp))
        self.logger.save_model(path, self.current_learning_iteration)


def keep_last_iteration(runner: Go2Runner | None, log_dir: Path, exp_name: str, resume: str | None) -> str:
    """Under torchrun, rank 0 when a rank failed or died: save the last complete iteration and say
    how to continue (the end of bridge.distributed.Group.fail's one line)."""
    it = runner.remembered["iter"] if runner is not None and runner.remembered is not None else None
    if it is None:
        if resume:
            return (f"no iteration completed since {resume}; continue with: torchrun ... train.py "
                    f"-e {exp_name} --resume {resume} --max_iterations N")
        return "no iteration completed, nothing to save"
    path = Path(log_dir) / f"model_{it}.pt"
    runner.save_remembered(str(path))
    try:
        runner.logger.stop_logging_writer()           # flush TensorBoard
    except Exception:
        pass
    return (f"saved {path} (iteration {it}); continue with: torchrun ... train.py -e {exp_name} "
            f"--resume {path} --max_iterations N")


def _to_cpu(obj):
    """A copy of nested state dicts with every tensor copied to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def load_checkpoint_file(path: str | os.PathLike, what: str = "checkpoint") -> dict:
    """torch.load a training checkpoint or exported actor; one-line UserError if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        give = ("a logs/NAME/model_K.pt of train.py" if what == "checkpoint" else    # --resume needs the critic
                "a logs/NAME/model_K.pt of train.py or an actor exported by python -m bridge.policy")
        raise UserError(f"cannot read {what} {path}: not a file torch.save wrote ({first_line(exc)}); "
                        f"give {give}") from None
    if not isinstance(ckpt, dict) or "actor_state_dict" not in ckpt:
        raise UserError(f"{path} is not an rsl_rl checkpoint (no actor_state_dict)")
    return ckpt


def read_checkpoint(path: str | os.PathLike, inputs, num_critic_obs: int, num_actions: int) -> dict:
    """Load a checkpoint to resume from and check it fits this environment and these actor inputs
    (bridge.policy.ActorInputs)."""
    from bridge.actor_inputs import ActorInputs
    ckpt = load_checkpoint_file(path)
    ActorInputs.of(ckpt).check(inputs, path)
    num_obs = inputs.size + 3 * inputs.estimator        # what the actor's MLP reads
    for part, n_in in (("actor", num_obs), ("critic", num_critic_obs)):
        sd = ckpt.get(f"{part}_state_dict") if part == "actor" else ckpt.get("critic_state_dict", {})
        weights = [k for k in sd if k.startswith("mlp.") and k.endswith(".weight")]
        if not weights:
            if part == "critic":
                continue
            raise UserError(f"checkpoint {path} holds no {part} network weights")
        first, last = sd[weights[0]], sd[weights[-1]]
        if first.shape[1] != n_in:
            raise UserError(f"checkpoint {path} expects {first.shape[1]} {part} observations, "
                            f"this environment gives {n_in}")
        if part == "actor" and last.shape[0] != num_actions:
            raise UserError(f"checkpoint {path} outputs {last.shape[0]} actions, this environment needs {num_actions}")
    return ckpt


class NoiseAnneal:
    """Lowers the actor's action noise over the second part of a run (train.py --final-noise-std).

    PPO trains a Gaussian policy, but the policy deployed and evaluated is its mean. With the noise
    of a short CPU run (std ~1.1 at the end), the mean walked 15-20% faster than commanded on the
    nominal model, and its speed error vanished when play.py added the training noise back: the policy
    had learned to command a faster gait so that the noisy one tracked. So after `hold` of the run the
    noise std is capped, per action, at a value going linearly from its level then down to `final` at
    the last iteration; PPO keeps learning the mean under the lower noise. Only the scalar std
    parameterisation (rsl_rl's default, this project's) is handled.
    """

    def __init__(self, actor, first_it: int, num_its: int, final: float, hold: float = 0.5):
        dist = getattr(actor, "distribution", None)
        if dist is None or not hasattr(dist, "std_param"):
            raise UserError("--final-noise-std needs the Gaussian actor with a scalar std (rsl_rl's default)")
        self.std = dist.std_param
        self.final, self.start = float(final), first_it + int(hold * num_its)
        self.last = first_it + num_its - 1
        self.std0 = None

    def cap(self, it: int):
        """The per-action cap for iteration `it` (None while the noise is still free)."""
        if it < self.start:
            return None
        if self.std0 is None:                 # the level the anneal starts from
            self.std0 = self.std.detach().clone()
        frac = 1.0 if self.last <= self.start else min(1.0, (it - self.start) / (self.last - self.start))
        return self.std0 + (self.std0.clamp(max=self.final) - self.std0) * frac

    @torch.no_grad()
    def apply(self, it: int) -> None:
        """Before iteration `it` collects: clamp the std to its cap."""
        cap = self.cap(it)
        if cap is not None:
            self.std.copy_(torch.minimum(self.std, cap))
