"""A trained actor as a plain torch module: obs (N, 48) -> actions (N, 12).

Reads rsl_rl checkpoints (model_{it}.pt) and the actor-only files this module exports
(policies/go2_walk.pt), which hold the same 'actor_state_dict' and nothing else to train with,
and ONNX files exported for deployment (run by onnxruntime, see bridge/deploy.py).

    python -m bridge.policy logs/go2-cpu/model_299.pt policies/go2_walk.pt   # export the actor
    python -m bridge.policy logs/go2-cpu/model_299.pt go2_walk.onnx          # ONNX with deploy metadata
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import torch

from mjx_env.errors import UserError, first_line

REPO = Path(__file__).resolve().parent.parent
SHIPPED_POLICY = REPO / "policies" / "go2_walk.pt"
SHIPPED_JUMP_POLICY = REPO / "policies" / "go2_jump.pt"      # the --jumps task (README, "Jumps")


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
    if path.suffix == ".onnx":
        if not path.is_file():
            raise UserError(f"policy checkpoint not found: {path}")
        from bridge.deploy import OnnxActor
        actor = OnnxActor(path)
    else:
        ckpt = load_checkpoint_file(path, "policy checkpoint")
        actor = Actor(ckpt["actor_state_dict"], str(path)).eval()
    if (actor.num_obs, actor.num_actions) != (num_obs, num_actions):
        raise UserError(f"policy {path} maps {actor.num_obs} observations to {actor.num_actions} actions; "
                        f"this environment needs {num_obs} -> {num_actions}")
    return actor


def export_actor(src: str | Path, dst: str | Path, xml_path: str | Path | None = None) -> None:
    """Export a checkpoint's actor: to ONNX with deploy metadata (dst *.onnx), or keep only its
    weights and where they came from (dst *.pt)."""
    from bridge.runner import load_checkpoint_file
    from mjx_env.files import atomic_write
    from mjx_env.config import TaskConfig
    from mjx_env.model import DEFAULT_XML

    dst = Path(dst)
    if dst.suffix not in (".onnx", ".pt"):
        raise UserError(f"cannot tell the format of {dst}: name it *.onnx (ONNX with deploy metadata) "
                        "or *.pt (actor weights)")
    cfg = TaskConfig()
    actor = load_actor(src, cfg.obs.num_obs, cfg.env.num_actions)     # validates
    if not isinstance(actor, Actor):
        raise UserError(f"{src} is already an exported ONNX policy; export from an rsl_rl checkpoint or actor .pt")
    xml_path = Path(xml_path) if xml_path else DEFAULT_XML
    if not xml_path.is_file():
        raise UserError(f"model file not found: {xml_path}")
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.suffix == ".onnx":
            from bridge.deploy import deploy_metadata, export_onnx
            export_onnx(actor, dst, deploy_metadata(cfg, xml_path, src))
        else:
            ckpt = load_checkpoint_file(src)
            small = {"actor_state_dict": ckpt["actor_state_dict"], "iter": ckpt.get("iter"), "source": str(src)}
            atomic_write(dst, lambda tmp: torch.save(small, tmp))
    except OSError as exc:
        raise UserError(f"cannot write {dst}: {exc.strerror or first_line(exc)}; choose a writable path") from None


def main(argv=None) -> int:
    from mjx_env.errors import OneLineParser, run
    p = OneLineParser(prog="python -m bridge.policy", description="Export a trained actor: *.pt or *.onnx.")
    p.add_argument("checkpoint", help="rsl_rl checkpoint (model_K.pt) or exported actor .pt")
    p.add_argument("out", help="*.onnx: ONNX with deploy metadata; *.pt: actor weights only")
    p.add_argument("--xml-path", "--xml_path", dest="xml_path", default=None,
                   help="the MJCF the policy was trained on, hashed into the ONNX metadata "
                        "(default Unitree_go2/go2_mjx_gym.xml)")
    args = p.parse_args(argv)

    def export() -> int:
        export_actor(args.checkpoint, args.out, args.xml_path)
        print(f"wrote {args.out}")
        return 0
    return run(p.prog, export)


if __name__ == "__main__":
    sys.exit(main())
