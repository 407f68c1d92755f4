"""Demonstration datasets (numpy and h5py, never torch): the HDF5 format (demos/hdf5.py), DynaFlow's
NPZ format (demos/npz.py), one writer that picks the format by file suffix, merging parts and converting.
A new format is one module here plus one line in WRITERS."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from demos import npz
from demos.hdf5 import FORMAT_VERSION, STEP_FIELDS, Dataset, load_dataset, write_hdf5  # noqa: F401
from mjx_env.errors import UserError
from mjx_env.files import atomic_write, check_folder, sha256

WRITERS = {".npz": npz.write_npz}       # any other suffix: HDF5


def write(path, steps: dict, episodes: dict, meta: dict) -> None:
    """Write a dataset atomically, in the format its suffix names (*.npz: DynaFlow's NPZ; else HDF5)."""
    writer = WRITERS.get(Path(path).suffix, write_hdf5)
    atomic_write(path, lambda tmp: writer(tmp, steps, episodes, meta))


# Parts of one collection agree on all of these; merge refuses the others.
SAME_IN_EVERY_PART = {"model_sha256": "model", "checkpoint_sha256": "checkpoint", "configs": "task configs",
                      "backend": "backend", "dt": "control period", "sim_dt": "physics step",
                      "joint_names": "joint order", "format_version": "format version"}


def merge(paths, out) -> dict:
    """One dataset from HDF5 parts of one collection, episodes in the order of the parts."""
    out = Path(out)
    check_folder(out)
    if out.resolve() in {Path(p).resolve() for p in paths}:
        raise UserError(f"--out {out} is one of the parts: write the merged file elsewhere")
    import h5py
    for p in paths:
        if Path(p).is_file() and not h5py.is_hdf5(p):
            raise UserError(f"{p} is not an HDF5 file: merge reads parts written by collect_trajectories.py --out *.h5")
    parts = [load_dataset(p) for p in paths]
    missing_parts(paths, parts)
    ref = parts[0].meta
    seeds = {}
    for path, ds in zip(paths, parts):
        for key, what in SAME_IN_EVERY_PART.items():
            if ds.meta.get(key) != ref.get(key):
                raise UserError(f"{path} comes from a different {what} than {paths[0]}: "
                                "merge only parts of one collection")
        for seed in sorted(set(ds.episodes["seed"].tolist())):
            if seed in seeds:
                raise UserError(f"{path} and {seeds[seed]} were both collected with seed {seed}, so their "
                                "episodes repeat: give every part its own --seed")
            seeds[seed] = path
    steps = {k: np.concatenate([ds.steps[k] for ds in parts]) for k in STEP_FIELDS}
    offsets = np.cumsum([0] + [len(ds.steps["done"]) for ds in parts])
    episodes = {k: np.concatenate([ds.episodes[k] for ds in parts]) for k in parts[0].episodes}  # dr_* too
    episodes["start"] = np.concatenate([ds.episodes["start"] + o for ds, o in zip(parts, offsets)]).astype(np.int64)
    meta = dict(ref, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                merged_from=json.dumps([Path(p).name for p in paths]))
    meta.pop("part_of", None)
    write(out, steps, episodes, meta)
    return {"episodes": int(sum(len(ds) for ds in parts)), "steps": int(offsets[-1]),
            "falls": int(episodes["fell"].sum()), "out": str(out)}


def part_name(out: Path, rank: int, world: int) -> Path:
    """Where rank `rank` of a torchrun collection into `out` writes its part."""
    return out.with_name(f".{out.name}.part{rank}of{world}.h5")


def missing_parts(paths, parts) -> None:
    """The parts a torchrun collection wrote carry part_of (rank, ranks, out): refuse to merge some
    of them without the others, naming the first one missing."""
    given = {}
    for path, ds in zip(paths, parts):
        if "part_of" in ds.meta:
            p = json.loads(ds.meta["part_of"])
            given.setdefault((p["out"], p["ranks"]), (Path(path), set()))[1].add(p["rank"])
    for (out, world), (path, ranks) in given.items():
        missing = sorted(set(range(world)) - ranks)
        if missing:
            name = path.with_name(part_name(Path(out), missing[0], world).name)
            raise UserError(f"{name} is missing: it is rank {missing[0]}'s part of {out} from {world} ranks "
                            f"({len(missing)} of {world} missing); run the torchrun collection again")


def convert(h5_path, out) -> dict:
    """Rewrite an HDF5 dataset of collect_trajectories.py as NPZ, with the collector's own writer."""
    out = Path(out)
    if out.suffix != ".npz":
        raise UserError(f"--out must end in .npz, got {out}")
    check_folder(out)
    import h5py
    if Path(h5_path).is_file() and not h5py.is_hdf5(h5_path):
        raise UserError(f"{h5_path} is not an HDF5 file (convert reads what collect_trajectories.py --out *.h5 "
                        "wrote)")
    ds = load_dataset(h5_path)
    if "state_names" not in ds.meta:          # files written before the names were stored
        ds.meta["state_names"] = _state_names_of(ds.meta)
    write(out, ds.steps, ds.episodes, ds.meta)
    return {"episodes": len(ds), "steps": int(ds.episodes["length"].sum()), "out": str(out)}


def _state_names_of(meta: dict):
    """State names from the dataset's model file, if it is still there and unchanged; else None."""
    from mjx_env.config import EnvConfig
    from mjx_env.model import load_go2
    path = Path(meta["model_path"])
    if not path.is_file() or sha256(path) != meta["model_sha256"]:
        return None
    return npz.state_names(load_go2(path, EnvConfig()).mj_model)
