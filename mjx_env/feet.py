"""Where a state's feet are and whether they touch the floor, from C MuJoCo on the host.

For the tools (play.py's flight check, the datasets' foot fields): it reads poses of either backend,
and it is not part of the task, which never needs foot contacts.
"""
from __future__ import annotations

import mujoco
import numpy as np

from mjx_env.errors import UserError


class FootProbe:
    """Foot positions, floor gaps and floor contacts of poses qpos (feet in LEGS order: FR, FL, RR, RL).

    gap: how far a foot is beyond the reach of a floor contact. MuJoCo makes a contact while a pair is
    closer than its margin (the larger of the two geoms'), so a positive gap means no contact and no
    contact force; resting feet sink a little (soft contacts: about 1 mm on this project's model,
    17 mm on Menagerie's) and have a negative gap. It needs sphere feet and one floor plane; NaN otherwise.
    contact: MuJoCo's collision reports a foot-floor contact within 1 mm.
    """

    def __init__(self, go2):
        self.m = m = go2.mj_model
        self.d = mujoco.MjData(m)
        self.feet = np.array(go2.foot_geom_ids)
        if (self.feet < 0).any():
            raise UserError(f"model {go2.xml_path} has no foot geom on some leg (named FR/FL/RR/RL, "
                            "or a sphere on the calf)")
        planes = np.flatnonzero(m.geom_type == mujoco.mjtGeom.mjGEOM_PLANE)
        spheres = (m.geom_type[self.feet] == mujoco.mjtGeom.mjGEOM_SPHERE).all()
        self.has_gap = bool(spheres and len(planes) == 1)
        if self.has_gap:
            mujoco.mj_kinematics(m, self.d)
            self.floor = float(self.d.geom_xpos[planes[0], 2])
            self.radius = m.geom_size[self.feet, 0]
            self.margin = np.maximum(m.geom_margin[self.feet], m.geom_margin[planes[0]])

    def __call__(self, qpos: np.ndarray):
        """(n, nq) poses -> foot positions (n, 4, 3) float32, gaps (n, 4), contacts (n, 4) bool."""
        n = len(qpos)
        pos, contact = np.zeros((n, 4, 3), np.float32), np.zeros((n, 4), bool)
        gap = np.full((n, 4), np.nan)
        for i in range(n):
            self.d.qpos[:] = qpos[i]
            mujoco.mj_fwdPosition(self.m, self.d)            # kinematics and collision
            pos[i] = self.d.geom_xpos[self.feet]
            if self.has_gap:
                gap[i] = self.d.geom_xpos[self.feet, 2] - self.radius - self.floor - self.margin
            for c in self.d.contact[:self.d.ncon]:
                if c.dist <= 1e-3:
                    for k, g in enumerate(self.feet):
                        if c.geom1 == g or c.geom2 == g:
                            contact[i, k] = True
        return pos, gap, contact
