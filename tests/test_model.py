"""The project's Go2 MJCF against the Menagerie reference, and model loading errors."""
import mujoco
import numpy as np
import pytest

from mjx_env.config import JOINT_NAMES, LEGS, EnvConfig
from mjx_env.errors import ModelError
from mjx_env.model import load_go2

from conftest import OWN_XML

LINKS = ["base"] + [f"{leg}_{p}" for leg in LEGS for p in ("hip", "thigh", "calf")]


def _raw(path):
    return mujoco.MjModel.from_xml_path(str(path))


def test_masses_match_reference(ref_xml):
    own, ref = _raw(OWN_XML), _raw(ref_xml)
    total = lambda m: m.body_mass.sum()
    assert abs(total(own) - total(ref)) / total(ref) < 0.01
    for link in LINKS:
        mo, mr = own.body(link).mass[0], ref.body(link).mass[0]
        assert abs(mo - mr) / mr < 0.02, link
        np.testing.assert_allclose(own.body(link).inertia, ref.body(link).inertia, rtol=0.02, err_msg=link)


def test_joints_match_reference(ref_xml):
    own, ref = _raw(OWN_XML), _raw(ref_xml)
    for name in JOINT_NAMES:
        jo, jr = own.joint(name), ref.joint(name)
        np.testing.assert_allclose(jo.axis, jr.axis, err_msg=name)
        np.testing.assert_allclose(jo.range, jr.range, err_msg=name)
    hinge = lambda m: sorted(m.joint(i).name for i in range(m.njnt) if m.jnt_type[i] == mujoco.mjtJoint.mjJNT_HINGE)
    assert hinge(own) == hinge(ref) == sorted(JOINT_NAMES)


def _feet_in_base(go2):
    m = go2.mj_model
    d = mujoco.MjData(m)
    d.qpos[:] = go2.init_qpos
    mujoco.mj_kinematics(m, d)
    base = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "base")
    R, p = d.xmat[base].reshape(3, 3), d.xpos[base]
    return np.array([R.T @ (d.geom_xpos[g] - p) for g in go2.foot_geom_ids])


def test_feet_at_default_pose_match_reference(ref_xml):
    cfg = EnvConfig()
    own, ref = _feet_in_base(load_go2(OWN_XML, cfg)), _feet_in_base(load_go2(ref_xml, cfg))
    assert np.abs(own - ref).max() < 0.005
    # FR is front (x > 0) and right (y < 0); RL rear and left.
    assert own[0, 0] > 0 > own[0, 1] and own[3, 0] < 0 < own[3, 1]
    assert own[:, 2].max() < -0.25   # feet well below the base at the default pose


def test_file_declares_pd_actuators_in_action_order():
    m, cfg = _raw(OWN_XML), EnvConfig()
    for i, joint in enumerate(JOINT_NAMES):
        assert m.joint(m.actuator_trnid[i, 0]).name == joint
        assert m.actuator_gainprm[i, 0] == cfg.kp
        np.testing.assert_allclose(m.actuator_biasprm[i, :3], [0.0, -cfg.kp, -cfg.kd])
        limit = cfg.torque_limit_knee if "calf" in joint else cfg.torque_limit_hip
        np.testing.assert_allclose(m.actuator_forcerange[i], [-limit, limit])
    # physics step divides the control period; speed options for MJX
    assert abs(round(cfg.dt / m.opt.timestep) * m.opt.timestep - cfg.dt) < 1e-12
    assert m.opt.cone == mujoco.mjtCone.mjCONE_PYRAMIDAL and m.opt.iterations <= 10


def test_only_feet_touch_the_floor():
    go2 = load_go2(OWN_XML, EnvConfig())
    m = go2.mj_model
    colliding = [g for g in range(m.ngeom) if m.geom_contype[g] or m.geom_conaffinity[g]]
    floor = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "floor")
    assert sorted(colliding) == sorted([floor, *go2.foot_geom_ids])


def test_reference_model_loads_with_rebuilt_pd(ref_xml):
    go2 = load_go2(ref_xml, EnvConfig())
    m = go2.mj_model
    assert m.nu == 12 and m.opt.timestep == EnvConfig().sim_dt
    for i, joint in enumerate(JOINT_NAMES):   # Menagerie declares legs FL, FR, RL, RR in its tree
        assert m.joint(m.actuator_trnid[i, 0]).name == joint
        assert go2.qpos_idx[i] == m.jnt_qposadr[m.joint(joint).id]


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match="model file not found: .*nope.xml"):
        load_go2(tmp_path / "nope.xml", EnvConfig())


def test_malformed_file(tmp_path):
    bad = tmp_path / "bad.xml"
    bad.write_text("<mujoco><worldbody><body></mujoco>")
    with pytest.raises(ModelError, match="cannot parse model .*bad.xml") as e:
        load_go2(bad, EnvConfig())
    assert "\n" not in str(e.value)


def test_model_lacking_a_joint(tmp_path):
    spec = mujoco.MjSpec.from_file(str(OWN_XML))
    spec.delete(spec.actuator("RL_calf"))
    spec.delete(spec.joint("RL_calf_joint"))
    path = tmp_path / "no_rl_calf.xml"
    path.write_text(spec.to_xml())
    with pytest.raises(ModelError, match="lacks the Go2 joint\\(s\\) RL_calf_joint"):
        load_go2(path, EnvConfig())
