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
import dataclasses
from pathlib import Path

import torch

from bridge.actor_inputs import ActorInputs
from mjx_env.errors import UserError, first_line

REPO = Path(__file__).resolve().parent.parent
SHIPPED_POLICY = REPO / "policies" / "go2_walk.pt"
# The walker shipped before it (one frame, no estimator): the states and start of several tests
# and the jump policy's origin (README, "The policy shipped before").
ROBUST_V1_POLICY = REPO / "policies" / "go2_walk_robust_v1.pt"
SHIPPED_JUMP_POLICY = REPO / "policies" / "go2_jump.pt"      # the --jumps task (README, "Jumps")


def _mlp(state_dict: dict, prefix: str, source: str) -> torch.nn.Sequential:
    """An rsl_rl MLP (Linear layers with ELU between) rebuilt from its weights."""
    idx = sorted({int(m.group(1)) for k in state_dict if (m := re.match(rf"{prefix}\.(\d+)\.weight$", k))})
    if not idx:
        raise UserError(f"{source} holds no actor MLP weights ({prefix}.N.weight)")
    layers = []
    for i, j in enumerate(idx):
        w, b = state_dict[f"{prefix}.{j}.weight"], state_dict[f"{prefix}.{j}.bias"]
        lin = torch.nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(w)
            lin.bias.copy_(b)
        layers.append(lin)
        if i < len(idx) - 1:
            layers.append(torch.nn.ELU())
    return torch.nn.Sequential(*layers)


class Actor(torch.nn.Module):
    """The rsl_rl MLPModel actor's deterministic path: MLP with ELU, mean action out; with an
    estimator (bridge/estimator.py), the MLP reads [observations, estimated base velocity]."""

    def __init__(self, state_dict: dict, source: str = "?"):
        super().__init__()
        if "obs_normalizer._mean" in state_dict:     # trained with obs_normalization=True
            self.register_buffer("mean", state_dict["obs_normalizer._mean"].reshape(-1))
            self.register_buffer("std", state_dict["obs_normalizer._std"].reshape(-1))
        else:
            self.mean = self.std = None
        self.net = _mlp(state_dict, "mlp", source)
        has_estimator = any(k.startswith("estimator.") for k in state_dict)
        self.estimator = _mlp(state_dict, "estimator", source) if has_estimator else None
        self.num_obs = self.net[0].in_features - 3 * has_estimator
        self.num_actions = self.net[-1].out_features

    def estimate(self, obs: torch.Tensor) -> torch.Tensor:
        """The estimated base velocity (body frame, x lin_vel_scale as in the critic's values)."""
        if self.mean is not None:
            obs = (obs - self.mean) / (self.std + 1e-2)
        return self.estimator(obs)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.mean is not None:
            obs = (obs - self.mean) / (self.std + 1e-2)
        if self.estimator is not None:
            obs = torch.cat([obs, self.estimator(obs)], dim=-1)
        return self.net(obs)


def load_actor(path: str | Path | None = None, num_obs: int | None = None, num_actions: int = 12) -> Actor:
    """The actor of a checkpoint, an exported actor .pt or an ONNX policy (one read of the file), with
    `.inputs`, what it reads. `num_obs` defaults to what those inputs say."""
    from bridge.runner import load_checkpoint_file
    path = Path(path) if path else SHIPPED_POLICY
    if path.suffix == ".onnx":
        if not path.is_file():
            raise UserError(f"policy checkpoint not found: {path}")
        from bridge.deploy import OnnxActor, onnx_inputs
        actor = OnnxActor(path)
        actor.inputs = onnx_inputs(path)
    else:
        ckpt = load_checkpoint_file(path, "policy checkpoint")
        actor = Actor(ckpt["actor_state_dict"], str(path)).eval()
        actor.inputs = ActorInputs.of(ckpt)
        # what an exported actor .pt keeps (export_actor), not the whole file: no critic or optimizer state
        actor.saved = {"actor_state_dict": ckpt["actor_state_dict"], "iter": ckpt.get("iter"),
                       **{k: ckpt[k] for k in ("task", "recipe") if k in ckpt}}
    num_obs = actor.inputs.size if num_obs is None else num_obs
    if (actor.num_obs, actor.num_actions) != (num_obs, num_actions):
        raise UserError(f"policy {path} maps {actor.num_obs} observations to {actor.num_actions} actions; "
                        f"this environment needs {num_obs} -> {num_actions}")
    return actor


def check_init_actor(ckpt: dict, inputs: ActorInputs, path, num_actions: int = 12) -> None:
    """--init-actor takes an actor of the same inputs, or a one-frame actor without an estimator that
    widen_actor extends to these inputs; anything else is refused in one line."""
    old = ActorInputs.of(ckpt)
    actor = Actor(ckpt["actor_state_dict"], str(path))
    if actor.num_obs != old.size or actor.num_actions != num_actions:
        raise UserError(f"--init-actor {path} maps {actor.num_obs} observations to {actor.num_actions} actions; "
                        f"this run's actor maps {inputs.size} -> {num_actions}")
    if old != inputs and old != ActorInputs():
        raise UserError(f"--init-actor {path} reads {old}; this run's actor reads {inputs}: only the seed's layout "
                        "(one frame of 48) starts a wider actor")


def widen_actor(ckpt: dict, new_state_dict: dict, inputs: ActorInputs) -> dict:
    """The actor of a one-frame checkpoint as a state dict of this run's wider actor that computes
    the same actions: its first layer reads the newest frame's 48 values with the old weights, and
    the older frames, a measured velocity and the velocity estimate with zeros; a new estimator keeps its fresh initialisation.
    PPO then learns to use the rest. (check_init_actor has accepted the file.)"""
    out = {k: v.clone() for k, v in new_state_dict.items()}
    for k, v in ckpt["actor_state_dict"].items():
        if k == "mlp.0.weight":
            w = torch.zeros_like(out[k])
            newest = slice(inputs.size - 48, inputs.size)        # the measured velocity leads a frame
            w[:, newest] = v
            out[k] = w
        else:
            out[k] = v.clone()
    return out


def policy_inputs(path: str | Path | None = None) -> ActorInputs:
    """The inputs a policy file reads (play and collect set up their env with them)."""
    from bridge.runner import load_checkpoint_file
    path = Path(path) if path else SHIPPED_POLICY
    if path.suffix == ".onnx":
        from bridge.deploy import onnx_inputs
        return onnx_inputs(path)
    return ActorInputs.of(load_checkpoint_file(path, "policy checkpoint"))


def export_actor(src: str | Path, dst: str | Path, xml_path: str | Path | None = None) -> None:
    """Export a checkpoint's actor: to ONNX with deploy metadata (dst *.onnx), or keep only its
    weights and where they came from (dst *.pt)."""
    from mjx_env.files import atomic_write
    from mjx_env.config import TaskConfig
    from mjx_env.model import DEFAULT_XML

    dst = Path(dst)
    if dst.suffix not in (".onnx", ".pt"):
        raise UserError(f"cannot tell the format of {dst}: name it *.onnx (ONNX with deploy metadata) "
                        "or *.pt (actor weights)")
    cfg = TaskConfig()
    if Path(src).suffix == ".onnx":
        raise UserError(f"{src} is already an exported ONNX policy; export from an rsl_rl checkpoint or actor .pt")
    actor = load_actor(src)                                               # validates
    inputs = actor.inputs
    cfg = cfg.replace(obs=cfg.obs.with_actor_inputs(inputs.history_length, inputs.actor_lin_vel))
    xml_path = Path(xml_path) if xml_path else DEFAULT_XML
    if not xml_path.is_file():
        raise UserError(f"model file not found: {xml_path}")
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.suffix == ".onnx":
            from bridge.deploy import deploy_metadata, export_onnx
            export_onnx(actor, dst, deploy_metadata(cfg, xml_path, src, inputs.estimator, actor.saved.get("task")))
        else:
            small = {**actor.saved, "source": str(src), "actor_inputs": dataclasses.asdict(inputs)}
            atomic_write(dst, lambda tmp: torch.save(small, tmp))
    except OSError as exc:
        raise UserError(f"cannot write {dst}: {exc.strerror or first_line(exc)}; choose a writable path") from None


def main(argv=None) -> int:
    from mjx_env.errors import OneLineParser, command_name, run
    p = OneLineParser(prog=command_name("python -m bridge.policy"), description="Export a trained actor: *.pt "
                      "(weights, the task and its settings) or *.onnx (with deploy metadata).")
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
