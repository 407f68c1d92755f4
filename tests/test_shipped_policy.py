"""The shipped policy walks: the acceptance protocol of play.py, on this project's model and,
sim-to-sim, on the full Menagerie model. The shipped jump policy hops on command."""
import json
import subprocess
import sys


from bridge.policy import SHIPPED_JUMP_POLICY, SHIPPED_POLICY, load_actor

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


def test_shipped_jump_policy_hops_on_command(tmp_path):
    """Measured on 64 envs x 20 s (README): apex 0.413 m, rise 0.124 m, 94% of jumps with a flight
    phase, no falls; the walker rises 0.003 m and never leaves the floor. Here 8 envs, 3 jumps each."""
    import play
    out = tmp_path / "jump.json"
    assert play.main(["--checkpoint", str(SHIPPED_JUMP_POLICY), "-B", "8", "--duration", "7.5", "--jump", "0.6",
                      "--jump-every", "2", "--seed", "0", "--no-progress", "--json", str(out)]) == 0
    j = json.loads(out.read_text())["jump"]
    assert j["jumps"] == 8 * 3
    assert j["apex_rise_mean"] >= 0.08 and j["with_flight"] >= 0.5, j
    assert j["falls_during_jump"] == 0 and j["falls_after_jump"] == 0, j
