"""A learned estimate of the base velocity for the actor (train.py --estimator), on rsl_rl 5.x's own
extension points: a model class named in the actor config and an algorithm class named in the
algorithm config (both resolved by rsl_rl's `resolve_callable`).

- `EstimatorModel` is rsl_rl's MLPModel with a small MLP in front: the actor's observations (its
  history of policy observations) -> the body-frame base linear velocity, in the observation's units
  (x lin_vel_scale). The estimate joins the MLP's input beside the history.
- `EstimatorPPO` is rsl_rl's PPO plus one regression: after PPO's own update, the estimator is fitted
  to the true velocity (the critic's privileged values, handed over as the "lin_vel" observation
  group) over the same rollout and mini-batches, with an optimizer of its own (as rsl_rl's RND has).

The estimate enters the policy detached. PPO's gradient would otherwise reshape it into whatever
latent helps the return and it would stop meaning "velocity": then neither its error could be
reported nor could a user trust what the policy is told about its own speed (HIMLoco's estimator
is trained the same way, by its own loss only). Detached, the PPO ratio is also exact: the
estimator is updated only after PPO has finished with the rollout it collected.
"""
from __future__ import annotations

import torch
from rsl_rl.algorithms import PPO
from rsl_rl.models import MLPModel
from rsl_rl.modules import MLP
from rsl_rl.utils import reduce_gradients_in_buckets, resolve_optimizer

TARGET_GROUP = "lin_vel"     # the observation group holding the true velocity (scaled)


class EstimatorModel(MLPModel):
    """MLPModel whose MLP reads [observations, estimated base velocity (3)]."""

    def __init__(self, obs, obs_groups, obs_set, output_dim, estimator_hidden_dims=(256, 128), **kwargs):
        super().__init__(obs, obs_groups, obs_set, output_dim, **kwargs)
        self.estimator = MLP(self.obs_dim, 3, list(estimator_hidden_dims), kwargs.get("activation", "elu"))

    def _get_latent_dim(self) -> int:
        return self.obs_dim + 3

    def estimate(self, obs) -> torch.Tensor:
        """The velocity estimate from the actor's (normalised) observations, with its gradient."""
        return self.estimator(super().get_latent(obs))

    def get_latent(self, obs, masks=None, hidden_state=None) -> torch.Tensor:
        x = super().get_latent(obs, masks, hidden_state)
        return torch.cat([x, self.estimator(x).detach()], dim=-1)

    def as_onnx(self, verbose: bool) -> torch.nn.Module:
        raise NotImplementedError("export through bridge.deploy, which puts the estimator inside the graph")


class EstimatorPPO(PPO):
    """PPO, then a regression of the actor's estimator on the true velocity (mean squared error)."""

    def __init__(self, actor, critic, storage, estimator_learning_rate: float = 1e-3, **kwargs):
        super().__init__(actor, critic, storage, **kwargs)
        if not isinstance(self._raw_actor, EstimatorModel):
            raise TypeError("EstimatorPPO needs an EstimatorModel actor")
        self.estimator_optimizer = resolve_optimizer("adam")(self._raw_actor.estimator.parameters(),
                                                             lr=estimator_learning_rate)

    def estimator_loss(self, obs) -> torch.Tensor:
        return (self._raw_actor.estimate(obs) - obs[TARGET_GROUP]).pow(2).mean()

    def update_estimator(self) -> float:
        """Fit the estimator over the rollout still in storage (PPO's update only rewinds its cursor)."""
        params = list(self._raw_actor.estimator.parameters())
        total, n = 0.0, 0
        for batch in self.storage.mini_batch_generator(self.num_mini_batches, self.num_learning_epochs):
            obs = batch.observations
            if self.symmetry is not None and self.symmetry.use_data_augmentation:   # mirrored, v_y negated
                obs, _ = self.symmetry.data_augmentation_func(env=self.symmetry.env, obs=obs, actions=None)
            loss = self.estimator_loss(obs)
            self.estimator_optimizer.zero_grad()
            loss.backward()
            if self.is_multi_gpu:
                reduce_gradients_in_buckets(params, self.gpu_world_size, self.grad_reduce_bucket_mb)
            self.estimator_optimizer.step()
            total += loss.detach()
            n += 1
        return float(total / max(n, 1))        # one host sync per iteration, for the log

    def update(self) -> dict:
        losses = super().update()
        losses["estimator"] = self.update_estimator()
        return losses

    def save(self) -> dict:
        saved = super().save()
        saved["estimator_optimizer_state_dict"] = self.estimator_optimizer.state_dict()
        return saved

    def load(self, loaded_dict: dict, load_cfg: dict | None, strict: bool) -> bool:
        out = super().load(loaded_dict, load_cfg, strict)
        if (load_cfg is None or load_cfg.get("optimizer")) and "estimator_optimizer_state_dict" in loaded_dict:
            self.estimator_optimizer.load_state_dict(loaded_dict["estimator_optimizer_state_dict"])
        return out
