"""Left-right mirror augmentation for rsl_rl's symmetry extension (issue 40).

rsl_rl 5.x (rsl_rl.extensions.symmetry.Symmetry) calls `data_augmentation_func(env=, obs=, actions=)`
with a TensorDict of observation groups and/or an action tensor (either may be None) and expects
each back with the original rows first and their mirror images after them ([original; mirrored],
twice the rows). It uses the function to append mirrored samples to PPO's mini-batches, to compute
the mirror loss, or both (the algorithm section's "symmetry_cfg", `symmetry_cfg` below).

The maps are mjx_env/symmetry.py's, built from the env's TaskConfig (`env.cfg`); each observation
group is mirrored by what it holds: "policy" (the actor's history of policy observations), "critic",
and "lin_vel" (bridge/estimator.py's target: the body-frame base velocity, v_y negated).
"""
from __future__ import annotations

import importlib.metadata

import torch
from rsl_rl.extensions.symmetry import Symmetry
from tensordict import TensorDict

from bridge.estimator import TARGET_GROUP
from mjx_env.errors import ConfigError
from mjx_env.symmetry import TaskMirror

AUGMENT = "bridge.symmetry:mirror_augment"       # how the algorithm config names the function
MODES = ("none", "augment", "loss", "both")      # train.py --symmetry


def symmetry_cfg(mode: str, mirror_loss_coeff: float = 1.0) -> dict | None:
    """rsl_rl's algorithm "symmetry_cfg" for a mode: "augment" appends mirrored samples to every
    mini-batch, "loss" adds mirror_loss_coeff x the mean squared difference between the actor's mean
    action on mirrored observations and the mirrored mean action, "both" does both; "none": None."""
    if mode not in MODES:
        raise ConfigError(f"symmetry mode {mode!r}: choose one of {', '.join(MODES)}")
    if mode == "none":
        return None
    return {"data_augmentation_func": AUGMENT, "use_data_augmentation": mode in ("augment", "both"),
            "use_mirror_loss": mode in ("loss", "both"), "mirror_loss_coeff": float(mirror_loss_coeff)}


_maps: dict = {}     # (TaskConfig, device) -> {group or "actions": (perm, sign) tensors}


def torch_maps(cfg, device) -> dict:
    """The task's mirror maps as (index, sign) tensors on `device`, built once per config and device."""
    key = (cfg, str(device))
    if key not in _maps:
        m = TaskMirror.of(cfg)
        named = {"policy": m.policy, "critic": m.critic, TARGET_GROUP: m.lin_vel, "actions": m.actions}
        _maps[key] = {k: (torch.as_tensor(v.perm, device=device), torch.as_tensor(v.sign, device=device))
                      for k, v in named.items()}
    return _maps[key]


def _mirror(x: torch.Tensor, perm_sign, what: str) -> torch.Tensor:
    perm, sign = perm_sign
    if x.shape[-1] != perm.numel():
        raise ConfigError(f"cannot mirror {what}: it has {x.shape[-1]} values per row, the task's layout "
                          f"{perm.numel()} (was the env built with another config?)")
    return x[..., perm] * sign.to(x.dtype)


def mirrored_obs(env, obs: TensorDict) -> TensorDict:
    """The mirror images alone of every observation group."""
    maps = torch_maps(env.cfg, obs.device)
    groups = {}
    for name, x in obs.items():
        if name not in maps or name == "actions":
            raise ConfigError(f"observation group {name!r} has no mirror rule (bridge/symmetry.py knows "
                              f"policy, critic and {TARGET_GROUP})")
        groups[name] = _mirror(x, maps[name], f"observation group {name!r}")
    return TensorDict(groups, batch_size=obs.batch_size, device=obs.device)


def mirror_augment(env, obs: TensorDict | None = None, actions: torch.Tensor | None = None):
    """[original; mirrored] observations (every group) and actions; None stays None."""
    obs_out = act_out = None
    if obs is not None:
        mirrored = mirrored_obs(env, obs)
        obs_out = TensorDict({name: torch.cat([x, mirrored[name]]) for name, x in obs.items()},
                             batch_size=[2 * obs.batch_size[0]], device=obs.device)
    if actions is not None:
        maps = torch_maps(env.cfg, actions.device)
        act_out = torch.cat([actions, _mirror(actions, maps["actions"], "the actions")])
    return obs_out, act_out


def mirror(env, name: str, x: torch.Tensor) -> torch.Tensor:
    """The mirror image alone of a tensor of one group ("policy", "critic", "lin_vel") or "actions"."""
    maps = torch_maps(env.cfg, x.device)
    if name not in maps:
        raise ConfigError(f"no mirror rule for {name!r}: choose one of {', '.join(maps)}")
    return _mirror(x, maps[name], name)


class LeanMirrorLoss(Symmetry):
    """rsl_rl's Symmetry, the mirror loss alone at one actor pass fewer, with the same loss and gradient.

    rsl_rl 5.x's compute_loss runs the actor, with a graph, on [original; mirrored] observations and
    compares the mirrored half's mean actions with the mirror of the original half's, detached: only
    the mirrored half gets a gradient, yet the backward pass runs over both halves. Here the target
    comes from a pass without a graph and only the mirrored observations are differentiated. The
    update with the mirror loss (measured on the 2-core machine: 75-130 % over plain PPO) is the chain's
    largest cost. Augmentation ("augment", "both") stays rsl_rl's own, and so does any mirror function
    other than mirror_augment, whose maps this class uses."""

    def compute_loss(self, actor, batch, original_batch_size: int) -> torch.Tensor:
        if self.use_data_augmentation:
            return super().compute_loss(actor, batch, original_batch_size)
        obs = batch.observations
        with torch.no_grad():
            target = mirror(self.env, "actions", actor(obs))
        loss = torch.nn.functional.mse_loss(actor(mirrored_obs(self.env, obs)), target)
        return loss if self.use_mirror_loss else loss.detach()


# LeanMirrorLoss replaces the compute_loss of this rsl_rl line only (its signature and its use in PPO.update);
# tests/test_symmetry.py compares the two on every run, so a change upstream within the line shows there.
LEAN_FOR = "5."


def lean(ext: Symmetry | None) -> Symmetry | None:
    """PPO's symmetry extension, with LeanMirrorLoss's compute_loss where it applies (the mirror loss
    without augmentation, on rsl_rl 5.x); anything else as it is."""
    try:
        version = importlib.metadata.version("rsl-rl-lib")
    except importlib.metadata.PackageNotFoundError:          # rsl_rl from a source tree: keep its own
        version = ""
    if (type(ext) is not Symmetry or ext.use_data_augmentation or ext.data_augmentation_func is not mirror_augment
            or not version.startswith(LEAN_FOR)):
        return ext
    out = LeanMirrorLoss.__new__(LeanMirrorLoss)
    out.__dict__.update(ext.__dict__)
    return out
