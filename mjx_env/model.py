"""Load a Go2 MJCF and map its joints to the policy's action order, by name.

Any MJCF with a free-floating base and the 12 Go2 joints works (this project's
Unitree_go2/go2_mjx_gym.xml, or the MuJoCo Menagerie go2.xml/scene.xml). The PD actuators are
rebuilt from the task config so that actuator i drives action i, whatever the model declares.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

from mjx_env.config import JOINT_NAMES, LEGS, EnvConfig
from mjx_env.errors import ModelError, first_line

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_XML = REPO_ROOT / "Unitree_go2" / "go2_mjx_gym.xml"
# MuJoCo Menagerie's unitree_go2 folder (scene.xml inside) for the sim-to-sim evaluations: the folder
# GO2_MENAGERIE names, else the one a checkout of this team keeps beside it (../shared/reference).
MENAGERIE_ENV = "GO2_MENAGERIE"
MENAGERIE_HINT = ("get it with: git clone https://github.com/google-deepmind/mujoco_menagerie, then "
                  f"export {MENAGERIE_ENV}=mujoco_menagerie/unitree_go2")


def menagerie_dir() -> Path:
    """Where the Menagerie Go2 is expected (it may not be there: see menagerie_scene)."""
    given = os.environ.get(MENAGERIE_ENV)
    return Path(given) if given else REPO_ROOT.parent / "shared" / "reference" / "unitree_go2"


def menagerie_scene() -> Path:
    """Menagerie's Go2 scene.xml, or a one-line ModelError that says how to get it."""
    scene = menagerie_dir() / "scene.xml"
    if not scene.is_file():
        raise ModelError(f"MuJoCo Menagerie's Go2 not found at {scene}: {MENAGERIE_HINT}")
    return scene


@dataclass(frozen=True)
class Go2Model:
    """A compiled MjModel plus the index maps the task needs (all in action order)."""

    mj_model: mujoco.MjModel
    xml_path: str
    qpos_idx: np.ndarray      # (12,) qpos address of each joint
    qvel_idx: np.ndarray      # (12,) dof address of each joint
    base_qpos_adr: int        # free joint: pos at [adr, adr+3), quat (w,x,y,z) at [adr+3, adr+7)
    base_qvel_adr: int        # free joint: world linear vel [adr, adr+3), body angular vel [adr+3, adr+6)
    base_body: int            # body id of the floating base (the free joint's body)
    foot_geom_ids: tuple      # (4,) geom id of each foot in LEGS order, -1 if not found
    init_qpos: np.ndarray     # (nq,) base at its initial pose, joints at the default angles
    # The same physics without textures and visual-only meshes (a few kB instead of MBs): the
    # mujoco backend copies it once per env when physics parameters are randomized.
    physics_mj_model: mujoco.MjModel | None = None

    @property
    def nq(self) -> int:
        return self.mj_model.nq

    @property
    def nv(self) -> int:
        return self.mj_model.nv


def load_spec(xml_path: str | os.PathLike) -> mujoco.MjSpec:
    path = Path(xml_path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path} (pass --xml-path with a Go2 MJCF, "
                         f"e.g. {DEFAULT_XML.relative_to(REPO_ROOT)})")
    try:
        return mujoco.MjSpec.from_file(str(path))
    except Exception as exc:  # mujoco raises ValueError with the parser's message
        raise ModelError(f"cannot parse model {path}: {first_line(exc)}") from None


def torque_limit(joint: str, hip: float, knee: float) -> float:
    """The Go2's motors: calf (knee) joints get the knee limit, hip and thigh joints the hip limit (N m)."""
    return knee if joint.endswith("calf_joint") else hip


def _rebuild_actuators(spec: mujoco.MjSpec, cfg: EnvConfig) -> None:
    """Replace whatever actuators the model has with PD servos in action order."""
    for key in list(spec.keys):          # keyframes may hold ctrl vectors of the old actuators
        spec.delete(key)
    for act in list(spec.actuators):
        spec.delete(act)
    for name in JOINT_NAMES:
        limit = torque_limit(name, cfg.torque_limit_hip, cfg.torque_limit_knee)
        act = spec.add_actuator(name=name.replace("_joint", ""), target=name,
                                trntype=mujoco.mjtTrn.mjTRN_JOINT)
        act.set_to_position(kp=cfg.kp, kv=cfg.kd)
        act.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
        act.forcerange = [-limit, limit]
        act.ctrllimited = mujoco.mjtLimited.mjLIMITED_FALSE


def _ensure_floor(spec: mujoco.MjSpec) -> None:
    """A bare robot file (e.g. Menagerie go2.xml) gets a floor so it can stand."""
    if any(g.type == mujoco.mjtGeom.mjGEOM_PLANE for g in spec.worldbody.geoms):
        return
    spec.worldbody.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[0, 0, 0.05])


def _strip_visuals(spec: mujoco.MjSpec) -> None:
    """Drop what only rendering uses: textures, materials, and meshes of geoms that collide with
    nothing. Inertias stay (they are explicit or computed before this, see load_go2's check)."""
    for tex in list(spec.textures):
        spec.delete(tex)
    for mat in list(spec.materials):
        spec.delete(mat)
    for g in spec.geoms:
        g.material = ""
        if g.type == mujoco.mjtGeom.mjGEOM_MESH and g.contype == 0 and g.conaffinity == 0:
            g.type, g.meshname, g.size = mujoco.mjtGeom.mjGEOM_SPHERE, "", [1e-3, 0, 0]
    used = {g.meshname for g in spec.geoms}
    for mesh in list(spec.meshes):
        if mesh.name not in used:
            spec.delete(mesh)


def load_go2(xml_path: str | os.PathLike | None, cfg: EnvConfig) -> Go2Model:
    """Load, check and prepare a Go2 model. Raises ModelError with a one-line message."""
    xml_path = DEFAULT_XML if xml_path is None else Path(xml_path)
    spec = load_spec(xml_path)

    names = {j.name for j in spec.joints}
    missing = [n for n in JOINT_NAMES if n not in names]
    if missing:
        raise ModelError(f"model {xml_path} lacks the Go2 joint(s) {', '.join(missing)}; "
                         f"a Go2 MJCF needs the 12 joints {JOINT_NAMES[0]} ... {JOINT_NAMES[-1]}")
    _rebuild_actuators(spec, cfg)
    _ensure_floor(spec)
    spec.option.timestep = cfg.sim_dt
    # C MuJoCo would silently reset a diverging env to qpos0; the task detects divergence and
    # resets (and counts) it itself, identically on both backends.
    spec.option.disableflags |= mujoco.mjtDisableBit.mjDSBL_AUTORESET
    try:
        m = spec.compile()
    except Exception as exc:
        raise ModelError(f"cannot compile model {xml_path}: {first_line(exc)}") from None

    free = [j for j in range(m.njnt) if m.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE]
    if len(free) != 1:
        raise ModelError(f"model {xml_path} needs exactly one free joint (the floating base), has {len(free)}")
    jids = [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, n) for n in JOINT_NAMES]
    for n, j in zip(JOINT_NAMES, jids):
        if m.jnt_type[j] != mujoco.mjtJoint.mjJNT_HINGE:
            raise ModelError(f"joint {n} of {xml_path} must be a hinge joint")

    qpos_idx = np.array([m.jnt_qposadr[j] for j in jids], dtype=np.int32)
    qvel_idx = np.array([m.jnt_dofadr[j] for j in jids], dtype=np.int32)
    base_qpos_adr = int(m.jnt_qposadr[free[0]])
    base_qvel_adr = int(m.jnt_dofadr[free[0]])

    init_qpos = m.qpos0.copy()
    init_qpos[base_qpos_adr:base_qpos_adr + 3] = cfg.base_init_pos
    init_qpos[base_qpos_adr + 3:base_qpos_adr + 7] = cfg.base_init_quat
    init_qpos[qpos_idx] = cfg.default_angles()

    _strip_visuals(spec)
    try:
        lean = spec.compile()
    except Exception:           # a model whose visuals cannot be dropped keeps them
        lean = None
    if lean is not None and not (lean.ngeom == m.ngeom and np.array_equal(lean.body_mass, m.body_mass)
                                 and np.array_equal(lean.body_inertia, m.body_inertia)):
        lean = None             # visual geoms carried mass: keep the full model
    return Go2Model(
        physics_mj_model=lean if lean is not None else m,
        mj_model=m, xml_path=str(xml_path), qpos_idx=qpos_idx, qvel_idx=qvel_idx,
        base_qpos_adr=base_qpos_adr, base_qvel_adr=base_qvel_adr, base_body=int(m.jnt_bodyid[free[0]]),
        foot_geom_ids=tuple(_find_foot(m, leg) for leg in LEGS), init_qpos=init_qpos,
    )


def _find_foot(m: mujoco.MjModel, leg: str) -> int:
    """The foot geom of a leg: the geom named like the leg, else the last sphere on its calf."""
    gid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, leg)
    if gid >= 0:
        return gid
    body = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, f"{leg}_calf")
    spheres = [g for g in range(m.ngeom)
               if m.geom_bodyid[g] == body and m.geom_type[g] == mujoco.mjtGeom.mjGEOM_SPHERE]
    return spheres[-1] if spheres else -1
