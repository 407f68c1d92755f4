"""play.py --viewer: the page's handlers reach the env (no browser), one-line errors, viewer off unchanged."""
import math
import signal
import socket
import sys

import numpy as np
import pytest

import play
from tools.evaluate import eval_config

viser = pytest.importorskip("viser", reason='the viewer extra is not installed: pip install -e ".[viewer]"')


@pytest.fixture(scope="module")
def page():
    """A viewer of 2 robots on the mujoco backend, served on a free port; never stepped in real time."""
    import jax

    from mjx_env.env import Go2Env
    from tools.viewer import Viewer
    args = play.parse_args(["--viewer", "--port", "0", "-B", "2"])
    env = Go2Env(2, "mujoco", eval_config(args))
    v = Viewer(env, args)
    v.pace = lambda: None                 # tests step as fast as they can
    yield v, env, env.reset(jax.random.PRNGKey(0))
    v.close()
    env.close()


def step(env, state):
    import jax.numpy as jnp
    return env.step(state, jnp.zeros((env.num_envs, 12), jnp.float32))


def test_slider_reaches_the_command_of_the_next_step(page):
    v, env, state = page
    v.robot.value = "0"
    state = v.before_step(state)
    own = np.asarray(state.commands).copy()
    v.sliders["vx"].value = 0.8                       # as a user's drag: the slider's own callbacks run
    v.robot.value = "1"                               # watch and steer robot 1
    v.sliders["yaw"].value = -0.4
    state = v.before_step(state)
    cmd = np.asarray(state.commands)
    assert cmd[0, 0] == pytest.approx(0.8) and cmd[1, 0] == own[1, 0]      # v_x: robot 0 only
    assert cmd[1, 2] == pytest.approx(-0.4) and cmd[0, 2] == own[0, 2]     # yaw: robot 1 only
    scale = env.cfg.obs.commands_scale
    assert np.asarray(state.obs)[1, 6 + 2] == pytest.approx(-0.4 * scale[2])  # the policy sees it
    state = step(env, state)
    assert np.asarray(state.commands)[:, 0] == pytest.approx([0.8, own[1, 0]])
    v.steer_all.value = True
    v.sliders["height"].value = 0.35
    state = v.before_step(state)
    assert np.asarray(state.commands)[:, 3] == pytest.approx([0.35, 0.35])
    v.steer_all.value = False


def test_push_adds_the_kick_in_the_chosen_direction(page):
    v, env, state = page
    bq, bv = env.model.base_qpos_adr, env.model.base_qvel_adr
    yaw = math.radians(30)                            # robot 1 heads 30 degrees left of +x
    qpos = np.array(state.qpos)
    qpos[1, bq + 3:bq + 7] = [math.cos(yaw / 2), 0, 0, math.sin(yaw / 2)]
    state = state.replace(qpos=state.qpos.at[:].set(qpos))
    state = v.before_step(state)
    before = np.asarray(state.qvel).copy()
    v.robot.value = "1"
    v.push_dir.value = 90                             # to its left
    v.kick.value = 1.0
    v.push_button.value = True                        # a click
    state = v.before_step(state)
    dv = np.asarray(state.qvel) - before
    assert dv[1, bv:bv + 2] == pytest.approx([math.cos(yaw + math.pi / 2), math.sin(yaw + math.pi / 2)], abs=1e-6)
    dv[1, bv:bv + 2] = 0
    assert not dv.any()                               # robot 0 and every other velocity untouched
    after = step(env, state)                          # and the physics starts from the kicked state
    assert np.asarray(after.metrics["lin_vel"])[1, 1] > 0.5


def test_reset_button_resets_the_watched_robot_only(page):
    v, env, state = page
    for _ in range(3):
        state = step(env, state)
    v.robot.value = "0"
    v.reset_button.value = True
    new = v.before_step(state)
    q, q_old = np.asarray(new.qpos), np.asarray(state.qpos)
    assert q[0] == pytest.approx(np.asarray(env.model.init_qpos, np.float32))
    assert int(np.asarray(new.episode_step)[0]) == 0 and (q[1] == q_old[1]).all()


def test_pause_holds_the_loop_until_step(page):
    import threading
    v, env, state = page
    v.pause_button.value = True                       # Pause
    assert v.paused and not v.step_button.disabled and v.pause_button.label == "Resume"
    out = []
    loop = threading.Thread(target=lambda: out.append(v.before_step(state)), daemon=True)
    loop.start()
    loop.join(0.5)
    assert loop.is_alive() and not out                # the play loop waits while paused
    v.step_button.value = True                        # Step: one step goes through
    loop.join(30)
    assert not loop.is_alive() and len(out) == 1
    v.pause_button.value = True                       # Resume
    assert not v.paused and v.step_button.disabled


def test_jump_handler_commands_a_jump(page):
    v, env, state = page
    assert v.jump_button is None                      # the walker, no --jump: no jump button on the page
    v.robot.value = "1"
    v.jump(0.6)
    state = v.before_step(state)
    assert np.asarray(state.commands)[:, 4] == pytest.approx([0.0, 0.6])
    assert np.asarray(state.jump_steps)[1] == env.cfg.command.jump_reward_steps
    from bridge.policy import SHIPPED_JUMP_POLICY
    from tools.viewer import Viewer
    for argv in (["--jump", "0.8"], ["--checkpoint", str(SHIPPED_JUMP_POLICY)]):   # policies that take jumps
        jumper = Viewer(env, play.parse_args(["--viewer", "--port", "0", "-B", "2"] + argv))
        try:
            assert jumper.jump_button is not None
            assert jumper.jump_height.value == pytest.approx(0.8 if "--jump" in argv else 0.6)
        finally:
            jumper.close()


def test_one_line_errors(monkeypatch):
    from mjx_env.errors import UserError
    from tools.viewer import check_bind
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(UserError, match=f"--port {port} is in use"):
            check_bind("127.0.0.1", port)
    with pytest.raises(UserError, match="--host 203.0.113.7 --port 8080: cannot bind"):
        check_bind("203.0.113.7", 8080)               # TEST-NET-3: no address of this machine
    with pytest.raises(UserError, match="--host no-such-host.invalid: cannot resolve"):
        check_bind("no-such-host.invalid", 8080)
    import tools.viewer as viewer
    monkeypatch.setitem(sys.modules, "viser", None)   # the extra is not installed
    with pytest.raises(UserError, match=r'--viewer needs viser: pip install -e "\.\[viewer\]"'):
        viewer.Viewer(None, play.parse_args(["--viewer"]))


def test_port_in_use_through_play_is_one_line_exit_2(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        rc = play.main(["--viewer", "--port", str(port), "-B", "1", "--duration", "0.1"])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert err == f"play.py: error: --port {port} is in use on 127.0.0.1: choose another --port\n"


def test_viewer_off_prints_as_before(capsys):
    handler = signal.getsignal(signal.SIGINT)
    sys.modules.pop("tools.viewer", None)
    assert play.main(["-B", "2", "--duration", "0.1", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "tools.viewer" not in sys.modules and signal.getsignal(signal.SIGINT) is handler
    lines = out.splitlines()
    assert err == "" and len(lines) == 8          # the shipped policy has a velocity estimator: its line last
    assert lines[0].startswith("model ") and ", 2 envs, 2 episodes, seed 0, commands {" in lines[0]
    assert [ln.split()[0] for ln in lines[1:7]] == ["mean_abs_vx_error", "mean_abs_vy_error", "mean_abs_yaw_rate_error",
                                                   "mean_abs_height_error", "fall_rate", "mean_episode_length_s"]
    assert lines[7].strip().startswith("velocity estimator error   x ")
    assert lines[5] == "  fall_rate                  0.0000" and lines[6] == "  mean_episode_length_s      0.1000"


@pytest.mark.parametrize("which", ["own", "menagerie"])
def test_scene_frames_compose_to_mujoco_poses(which, request):
    """The nested body frames the page draws put every body where C MuJoCo's kinematics does."""
    import mujoco

    from conftest import OWN_XML
    from mjx_env.model import load_go2
    from tools.viewer import Scene, quat_mul
    from mjx_env.config import EnvConfig
    model = load_go2(OWN_XML if which == "own" else request.getfixturevalue("ref_xml"), EnvConfig())
    server = viser.ViserServer(host="127.0.0.1", port=0, verbose=False)
    try:
        scene = Scene(server, model)
        m = model.mj_model
        meshes = sum(m.geom_type[i] == mujoco.mjtGeom.mjGEOM_MESH and m.geom_group[i] <= 2 for i in range(m.ngeom))
        assert (meshes > 0) == (which == "menagerie")        # Menagerie's visual meshes, our primitives
        rng = np.random.default_rng(0)
        for follow in (False, True):
            qpos = np.array(model.init_qpos, float)
            qpos[model.base_qpos_adr:model.base_qpos_adr + 3] += [1.5, -0.7, 0.1]
            quat = rng.normal(size=4)
            qpos[model.base_qpos_adr + 3:model.base_qpos_adr + 7] = quat / np.linalg.norm(quat)
            qpos[model.qpos_idx] += rng.uniform(-0.5, 0.5, 12)
            scene.pose(qpos, follow)
            d = mujoco.MjData(m)
            d.qpos[:] = qpos
            mujoco.mj_kinematics(m, d)
            shift = np.r_[d.xpos[model.base_body, :2], 0] if follow else np.zeros(3)
            world = {0: (np.asarray(scene.root.position), np.array([1.0, 0, 0, 0]))}
            for k, b in enumerate(scene.ids):
                p_pos, p_quat = world[int(m.body_parentid[b])]
                f = scene.frames[k]
                rot = np.zeros(9)
                mujoco.mju_quat2Mat(rot, p_quat)
                world[b] = (p_pos + rot.reshape(3, 3) @ f.position, quat_mul(p_quat, f.wxyz))
                assert world[b][0] == pytest.approx(d.xpos[b] - shift, abs=1e-6)
                assert abs(np.dot(world[b][1], d.xquat[b])) == pytest.approx(1.0, abs=1e-6)
    finally:
        server.stop()
