"""The table of randomization draws (mjx_env/randomize.py DRAWS): the config's range checks, the
logged stats, the PRNG stream and bench.py's nominal variant all come from it."""
import dataclasses

import jax
import numpy as np
import pytest

from mjx_env.config import EnvConfig, RandomizationConfig, TaskConfig
from mjx_env.errors import ConfigError
from mjx_env.model import load_go2
from mjx_env.randomize import DRAW_STREAM, DRAWS, Randomizer, nominal


def test_every_draw_has_its_range_in_the_config():
    fields = {f.name for f in dataclasses.fields(RandomizationConfig)}
    assert len({d.name for d in DRAWS}) == len(DRAWS)
    assert all(d.range in fields for d in DRAWS)
    ranges, nonnegative = RandomizationConfig().ranges()
    # the checks before the table, in the same order
    assert ranges == ("friction_range", "added_base_mass_range", "base_com_offset_range", "link_mass_scale_range",
                      "kp_scale_range", "kd_scale_range", "joint_frictionloss_range", "joint_damping_scale_range",
                      "joint_armature_scale_range", "foot_torsional_friction_range", "foot_rolling_friction_range",
                      "drift_accel_range", "drift_yaw_accel_range", "push_interval_range_s", "push_velocity_range")
    assert set(nonnegative) == set(ranges) - {"added_base_mass_range", "base_com_offset_range",
                                              "drift_accel_range", "drift_yaw_accel_range", "push_interval_range_s"}


@pytest.mark.parametrize("draw", [d for d in DRAWS], ids=lambda d: d.name)
def test_validation_follows_the_table(draw):
    reversed_range = RandomizationConfig(enabled=True, **{draw.range: (1.0, 0.5)})
    with pytest.raises(ConfigError, match=f"randomization.{draw.range} must be a finite"):
        reversed_range.validate()
    below_zero = RandomizationConfig(enabled=True, **{draw.range: (-0.1, 0.5)})
    if draw.nonnegative:
        with pytest.raises(ConfigError, match=f"randomization.{draw.range} must not go below 0"):
            below_zero.validate()
    else:
        below_zero.validate()


@pytest.fixture(scope="module")
def go2():
    return load_go2(None, EnvConfig())


def test_nominal_variant_leaves_the_model_as_loaded(go2):
    m = go2.mj_model
    r = nominal(RandomizationConfig(enabled=True, push=True), m)
    assert r.enabled and not r.push
    assert r.friction_range == (float(m.geom_friction[:, 0].max()),) * 2
    assert r.added_base_mass_range == (0.0, 0.0) and r.link_mass_scale_range == (1.0, 1.0)
    assert r.joint_frictionloss_range == (0.0, 0.0) and r.kp_scale_range == (1.0, 1.0)
    # every draw at its nominal value: the model fields equal the loaded model's, but for the feet's
    # and floor's friction, set to the model's largest
    rz = Randomizer(go2, TaskConfig(randomization=r))
    fields = rz.fields(rz.sample(jax.random.PRNGKey(3)))
    for name, value in fields.items():
        if name != "geom_friction":
            assert np.allclose(np.asarray(value), getattr(m, name), atol=1e-6), name
    friction = np.asarray(fields["geom_friction"])
    assert np.all(friction[rz.friction_geoms, 0] == np.float32(m.geom_friction[:, 0].max()))
    others = np.setdiff1d(np.arange(m.ngeom), rz.friction_geoms)
    assert np.array_equal(friction[others], m.geom_friction[others].astype(np.float32))


def test_sample_and_stats_follow_the_table(go2):
    rz = Randomizer(go2, TaskConfig(randomization=RandomizationConfig(enabled=True)))
    key = jax.random.PRNGKey(11)
    d = rz.sample(key)
    assert list(d) == [x.name for x in DRAWS]
    # row i draws from split i of the draw stream
    k = jax.random.split(jax.random.fold_in(key, DRAW_STREAM), len(DRAWS))
    lo, hi = RandomizationConfig().kd_scale_range
    i = [x.name for x in DRAWS].index("kd_scale")
    expect = jax.random.uniform(k[i], (len(rz.dofs),), minval=lo, maxval=hi)
    assert np.array_equal(np.asarray(d["kd_scale"]), np.asarray(expect))
    for x in DRAWS:
        a = np.asarray(d[x.name])
        lo, hi = getattr(RandomizationConfig(), x.range)
        assert np.all((a >= lo) & (a <= hi)), x.name
    s = rz.stats(jax.vmap(rz.sample)(jax.random.split(key, 5)))
    assert list(s)[:3] == ["friction", "added_base_mass", "base_com_offset_norm"]
    assert all(np.shape(v) == (5,) for v in s.values()) and len(s) == len(DRAWS)
