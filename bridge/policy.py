"""A trained actor as a plain torch module: obs (N, 48) -> actions (N, 12).

Reads rsl_rl checkpoints (model_{it}.pt) and the actor-only files this module exports
(policies/go2_walk.pt), which hold the same 'actor_state_dict' and nothing else to train with.

    python -m bridge.policy logs/go2-cpu/model_299.pt policies/go2_walk.pt   # export
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import torch

from mjx_env.errors import UserError

REPO = Path(__file__).resolve().parent.parent
SHIPPED_POLICY = REPO / "policies" / "go2_walk.pt"


class Actor(torch.nn.Module):
    """The rsl_rl MLPModel actor's deterministic path: MLP with ELU, mean action out."""

    def __init__(self, state_dict: dict, source: str = "?"):
        super().__init__()
        if "obs_normalizer._mean" in state_dict:     # trained with obs_normalization=True
            self.register_buffer("mean", state_dict["obs_normalizer._mean"].reshape(-1))
            self.register_buffer("std", state_dict["obs_normalizer._std"].reshape(-1))
        else:
            self.mean = self.std = None
        idx = sorted({int(m.group(1)) for k in state_dict if (m := re.match(r"mlp\.(\d+)\.weight$", k))})
        if not idx:
            raise UserError(f"{source} holds no actor MLP weights (mlp.N.weight)")
        layers = []
        for i, j in enumerate(idx):
            w, b = state_dict[f"mlp.{j}.weight"], state_dict[f"mlp.{j}.bias"]
            lin = torch.nn.Linear(w.shape[1], w.shape[0])
            with torch.no_grad():
                lin.weight.copy_(w)
                lin.bias.copy_(b)
            layers.append(lin)
            if i < len(idx) - 1:
                layers.append(torch.nn.ELU())
        self.net = torch.nn.Sequential(*layers)
        self.num_obs, self.num_actions = layers[0].in_features, layers[-1].out_features

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.mean is not None:
            obs = (obs - self.mean) / (self.std + 1e-2)
        return self.net(obs)


def load_actor(path: str | Path | None = None, num_obs: int = 48, num_actions: int = 12) -> Actor:
    from bridge.runner import load_checkpoint_file
    path = Path(path) if path else SHIPPED_POLICY
    ckpt = load_checkpoint_file(path, "policy checkpoint")
    actor = Actor(ckpt["actor_state_dict"], str(path)).eval()
    if (actor.num_obs, actor.num_actions) != (num_obs, num_actions):
        raise UserError(f"policy {path} maps {actor.num_obs} observations to {actor.num_actions} actions; "
                        f"this environment needs {num_obs} -> {num_actions}")
    return actor


def export_actor(src: str | Path, dst: str | Path) -> None:
    """Keep only the actor weights (and where they came from) of a training checkpoint."""
    from bridge.runner import atomic_write, load_checkpoint_file
    load_actor(src)   # validates
    ckpt = load_checkpoint_file(src)
    small = {"actor_state_dict": ckpt["actor_state_dict"], "iter": ckpt.get("iter"), "source": str(src)}
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(dst, lambda tmp: torch.save(small, tmp))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m bridge.policy CHECKPOINT OUT")
    try:
        export_actor(sys.argv[1], sys.argv[2])
    except UserError as exc:
        sys.exit(f"error: {exc}")
    print(f"wrote {sys.argv[2]}")
