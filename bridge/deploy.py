"""ONNX export of a trained actor, with the facts a robot-side controller needs as metadata.

    python -m bridge.policy logs/go2-cpu/model_622.pt go2_walk.onnx

The graph maps `obs` (N, H x 48) to `actions` (N, 12) for any batch N: one row holds the last H
policy observations, oldest first (H = metadata `history_length`, 1 for the seed's policy); a
velocity estimator, if the policy has one, is inside the graph. `metadata_props` holds
JSON-encoded values, all read from mjx_env/config.py: joint names in action order, default joint
positions, PD gains and torque limits, action scale, clip and latency, control and physics
periods, the observation layout (term, size, per-element scale) and the command ranges, plus the
SHA-256 of the MJCF and of the checkpoint. examples/deploy_onnx.py shows how to use them.
"""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from mjx_env.errors import UserError, first_line
from mjx_env.files import sha256

OPSET = 18          # torch.export-based exporter's own default; onnxruntime >= 1.14 runs it
FORMAT = "go2-policy/1"
COMMAND_NAMES = ("lin_vel_x", "lin_vel_y", "ang_vel_z", "height", "jump")


HISTORY_FILL = ("obs holds the last history_length observations, oldest first; at an episode's start every slot "
                "holds its first observation, then each control step drops the oldest and appends the newest")


def deploy_metadata(cfg, model_path, checkpoint_path, estimator: bool = False, task: str | None = None) -> dict:
    """The deploy facts of a task config as plain JSON values (keys as in the ONNX file)."""
    from mjx_env.config import JOINT_NAMES
    from mjx_env.model import torque_limit
    e, o, c = cfg.env, cfg.obs, cfg.command
    limits = [torque_limit(n, e.torque_limit_hip, e.torque_limit_knee) for n in JOINT_NAMES]
    layout = [{"name": name, "size": size, "scale": list(scale)} for name, size, scale in o.policy_layout(e.num_actions)]
    ranges = [lo_hi for _, lo_hi in c.ranges()]
    return {
        "format": FORMAT,
        "num_obs": o.num_obs,
        "num_actions": e.num_actions,
        "joint_names": list(JOINT_NAMES),
        "default_joint_pos": list(e.default_angles()),
        "kp": [e.kp] * e.num_actions,
        "kd": [e.kd] * e.num_actions,
        "torque_limits": limits,
        "action_scale": e.action_scale,
        "action_clip": e.clip_actions,
        "action_latency_steps": int(e.simulate_action_latency),
        "control_dt": e.dt,
        "sim_dt": e.sim_dt,
        "observation_layout": layout,
        "history_length": o.history_length,
        "history_fill": HISTORY_FILL,
        "velocity_estimator": bool(estimator),
        "command_names": list(COMMAND_NAMES),
        "command_ranges": {n: list(r) for n, r in zip(COMMAND_NAMES, ranges)},
        "base_init_pos": list(e.base_init_pos),
        "termination_roll_pitch_deg": [e.termination_roll_deg, e.termination_pitch_deg],
        "model_file": Path(model_path).name,
        "model_sha256": sha256(model_path),
        "checkpoint_file": Path(checkpoint_path).name,
        "checkpoint_sha256": sha256(checkpoint_path),
        "task": task,              # the train.py --task that produced it (tools/registry.py), or null
    }


DOC = ("Go2 walking policy. actions = net(obs); PD target of each joint = default_joint_pos + "
       "action_scale * clip(action, +-action_clip), applied action_latency_steps control periods later "
       "(control_dt), torque = kp (target - q) - kd qdot clipped to torque_limits. obs = concatenation of "
       "observation_layout terms, each raw value times its scale; the input row is the last history_length "
       "such observations, oldest first (history_fill). All metadata values are JSON.")


def export_onnx(actor: torch.nn.Module, dst, metadata: dict) -> None:
    """Export with torch.export (dynamo=True: the legacy TorchScript exporter is deprecated since
    torch 2.9), a dynamic batch, then attach the metadata; the file appears complete or not at all."""
    # Not rsl_rl's own path (OnPolicyRunner.export_policy_to_onnx / MLPModel.as_onnx): it needs the
    # rsl_rl model, which an exported actor .pt no longer has; it traces a batch of 1 with no dynamic
    # axis (a fixed-batch graph), and writes the file in place without metadata. The graph here is
    # the same MLP (obs -> actions, opset 18) with a dynamic batch.
    import onnx

    from mjx_env.files import atomic_write
    example = torch.zeros(2, actor.num_obs)        # batch 2: a batch of 1 would be specialised
    quiet = logging.getLogger("torch.onnx")          # it warns that the absent torchvision's ops are skipped
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(actor, (example,), dynamo=True, opset_version=OPSET, verbose=False,
                                    input_names=["obs"], output_names=["actions"],
                                    dynamic_shapes={"obs": {0: torch.export.Dim("batch")}})
    quiet.setLevel(level)
    proto = program.model_proto
    proto.doc_string = DOC
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=json.dumps(value))
    atomic_write(dst, lambda tmp: onnx.save_model(proto, tmp))


def read_metadata(path) -> dict:
    """The JSON-decoded metadata_props of an exported policy."""
    import onnx
    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: json.loads(p.value) for p in proto.metadata_props}


def onnx_inputs(path):
    """The bridge.policy.ActorInputs of an exported policy, from its metadata (seed's before they existed)."""
    from bridge.actor_inputs import ActorInputs
    meta = read_metadata(path)
    return ActorInputs(history_length=int(meta.get("history_length", 1)),
                       actor_lin_vel=any(t["name"] == "base_lin_vel" for t in meta.get("observation_layout", [])),
                       estimator=bool(meta.get("velocity_estimator", False)))


class OnnxActor(torch.nn.Module):
    """An exported policy run by onnxruntime, with the Actor's interface (torch in, torch out),
    so that play.py and collect_trajectories.py evaluate it through the same loop."""

    def __init__(self, path):
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError:
            raise UserError("an .onnx policy needs onnxruntime: pip install -e '.[onnx]'") from None
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise UserError(f"cannot load ONNX policy {path}: {first_line(exc)}") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if [i.name for i in inputs] != ["obs"] or not outputs:
            raise UserError(f"ONNX policy {path} must have one input named 'obs', has {[i.name for i in inputs]}")
        self.output = outputs[0].name
        self.num_obs, self.num_actions = inputs[0].shape[-1], outputs[0].shape[-1]
        self.metadata = {k: json.loads(v) for k, v in self.session.get_modelmeta().custom_metadata_map.items()}

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.detach().to("cpu", torch.float32).contiguous().numpy()
        y = self.session.run([self.output], {"obs": x})[0]
        return torch.from_numpy(np.ascontiguousarray(y)).to(obs.device)
