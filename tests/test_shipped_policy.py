"""The shipped policy walks: the acceptance protocol of play.py, on this project's model and,
sim-to-sim, on the full Menagerie model."""
import json
import subprocess
import sys


from bridge.policy import SHIPPED_POLICY, load_actor

from conftest import REPO

PROTOCOL = ["--num_envs", "64", "--episodes", "1", "--duration", "20", "--vx", "0.3", "1.0",
            "--vy", "0", "--yaw", "0", "--height", "0.3", "--seed", "0"]


def play(tmp_path, *extra):
    out = tmp_path / "metrics.json"
    r = subprocess.run([sys.executable, str(REPO / "play.py"), *PROTOCOL, *extra, "--json", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(out.read_text())


def test_shipped_policy_is_small_and_actor_only():
    assert SHIPPED_POLICY.stat().st_size < 2_000_000
    actor = load_actor()
    assert (actor.num_obs, actor.num_actions) == (48, 12)


def test_shipped_policy_tracks_forward_commands(tmp_path):
    m = play(tmp_path)
    assert m["mean_abs_vx_error"] <= 0.15, m
    assert m["fall_rate"] <= 0.05, m


def test_shipped_policy_sim_to_sim_on_menagerie(tmp_path, ref_xml):
    m = play(tmp_path, "--xml-path", str(ref_xml))
    assert m["fall_rate"] <= 0.10, m
