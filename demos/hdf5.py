"""The HDF5 format of demonstrations (h5py and numpy only), as collect_trajectories.py writes it.

Layout of the file (T steps in all, E episodes; float32 unless said):
  steps/   qpos (T, nq), qvel (T, nv)              MuJoCo state at which the action was taken
           base_pos (T, 3), base_quat (T, 4)        world frame, quaternion w x y z
           base_lin_vel (T, 3), base_ang_vel (T, 3) base frame
           joint_pos (T, 12), joint_vel (T, 12)     policy order FR, FL, RR, RL x hip, thigh, calf
           last_action (T, 12)                      previous action: it sets this step's PD target
           actions (T, 12)                          policy output (clipped), unscaled
           pd_targets (T, 12)                       joint targets applied during this step (rad)
           commands (T, 5)                          vx, vy, yaw rate, height, jump (H at the step a jump
                                                    is commanded, else 0; obs[:, 47] is the jump phase)
           obs (T, 48)                              policy observation
           rewards (T,)                             reward of this step
           foot_contacts (T, 4) bool, foot_pos (T, 4, 3)   feet FR, FL, RR, RL at this state
           done, time_out, terminated (T,) bool     the episode ends after this step (and why)
  episodes/ start (E,) int64, length (E,) int32, fell (E,) bool, command (E, 5),
           seed (E,) int64 (run seed), key (E, 2) uint32 (the env's PRNG key at the episode's start),
           env_index (E,) int32; with --randomize also dr_<draw> (E, ...): the episode's physics draws
           (mjx_env/randomize.py: friction, added_base_mass, base_com_offset, link_mass_scale, ...)
  attrs:   model_path, model_sha256, checkpoint, checkpoint_sha256, task, dt, sim_dt, configs (JSON),
           joint_names, state_names (JSON: qpos then qvel entries), created, format_version
Episode i is steps[start[i] : start[i] + length[i]]; its last step has done = True.
An --out ending in .npz writes the DynaFlow layout instead (demos/npz.py), from the same arrays.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from mjx_env.errors import UserError

FORMAT_VERSION = 1
STEP_FIELDS = ("qpos", "qvel", "base_pos", "base_quat", "base_lin_vel", "base_ang_vel", "joint_pos", "joint_vel",
               "last_action", "actions", "pd_targets", "commands", "obs", "rewards", "foot_contacts", "foot_pos",
               "done", "time_out", "terminated")


@dataclasses.dataclass
class Dataset:
    steps: dict
    episodes: dict
    meta: dict

    def __len__(self) -> int:
        return len(self.episodes["start"])

    def episode(self, i: int) -> dict:
        s, n = int(self.episodes["start"][i]), int(self.episodes["length"][i])
        return {k: v[s:s + n] for k, v in self.steps.items()}


def load_dataset(path) -> Dataset:
    """Read a file written by collect_trajectories.py into numpy arrays."""
    import h5py
    path = Path(path)
    if not path.is_file():
        raise UserError(f"dataset not found: {path}")
    with h5py.File(path, "r") as f:
        steps = {k: f["steps"][k][()] for k in f["steps"]}
        episodes = {k: f["episodes"][k][()] for k in f["episodes"]}
        meta = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    meta["configs"] = json.loads(meta["configs"])
    meta["joint_names"] = list(json.loads(meta["joint_names"]))
    if "state_names" in meta:
        meta["state_names"] = list(json.loads(meta["state_names"]))
    return Dataset(steps, episodes, meta)


def write_hdf5(path, steps: dict, episodes: dict, meta: dict) -> None:
    """The HDF5 layout above; meta holds configs as a dict and name lists as lists."""
    import h5py
    with h5py.File(path, "w") as f:
        g = f.create_group("steps")
        for k, data in steps.items():
            g.create_dataset(k, data=data, compression="gzip", compression_opts=4)
        g = f.create_group("episodes")
        for k, data in episodes.items():
            g.create_dataset(k, data=data)
        f.attrs.update({k: json.dumps(v) if k in ("configs", "joint_names", "state_names") else v
                        for k, v in meta.items()})
