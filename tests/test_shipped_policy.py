"""The shipped policies walk: play.py's protocol (shorter than the README's 64 envs x 20 s), on this
project's model and, sim-to-sim, on the full Menagerie model. The shipped jump policy hops on command."""
import json

import pytest

from bridge.policy import SHIPPED_JUMP_POLICY, SHIPPED_POLICY, ActorInputs, load_actor, policy_inputs

from conftest import REPO

ESTIMATOR_POLICY = REPO / "policies" / "go2_walk_estimator.pt"
ROLLING_POLICY = REPO / "policies" / "go2_walk_rolling.pt"
PROTOCOL = ["--num_envs", "16", "--episodes", "1", "--duration", "10", "--vx", "0.3", "1.0",
            "--vy", "0", "--yaw", "0", "--height", "0.3", "--seed", "0", "--no-progress"]
# The README's protocol (64 envs x 20 s), for the claims made on it (slow).
README_PROTOCOL = [{"16": "64", "10": "20"}.get(a, a) for a in PROTOCOL]
# The README's claim for the walkers on the Menagerie model under 1 m/s pushes: "no falls under pushes".
# Asserted as it is: a fall rate of exactly this (the target in docs/evaluation.md is at most 5 %).
MENAGERIE_PUSH_FALL_RATE = 0.0


def play(tmp_path, *extra):
    import play as play_cmd
    out = tmp_path / "metrics.json"
    assert play_cmd.main([*PROTOCOL, *extra, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_shipped_policy_is_small_and_knows_its_inputs():
    assert SHIPPED_POLICY.stat().st_size < 2_000_000
    assert policy_inputs(SHIPPED_POLICY) == ActorInputs(history_length=6, estimator=True)
    actor = load_actor()
    assert (actor.num_obs, actor.num_actions) == (6 * 48, 12)


def test_shipped_policy_tracks_forward_commands(tmp_path):
    """policies/go2_walk.pt (README, "The drift") on the training model. Measured on 64 envs x 20 s:
    v_x error 0.028 m/s, bias +0.014, +0.009, +0.013 per bin, estimator error 0.016, no falls. Here
    16 envs x 10 s (measured: 0.033, bias at most +0.015, estimator 0.017): the bias bound is the
    target itself, so this test fails if the policy's bias leaves it."""
    m = play(tmp_path)
    assert m["mean_abs_vx_error"] <= 0.05 and m["fall_rate"] == 0.0, m
    assert m["max_abs_vx_bias"] <= 0.03, m
    assert m["estimator_abs_error_m_s"]["x"] <= 0.04, m


def test_shipped_policy_sim_to_sim_on_menagerie(tmp_path, ref_xml):
    """The same policy on the Menagerie model under 1 m/s pushes every 4 s. Measured on 64 envs x 20 s:
    no falls, v_x error 0.045, bias -0.001, -0.004, -0.003 per bin, estimator error 0.033. Here
    16 envs x 10 s (measured: no falls, 0.048, bias at most 0.009 in size, estimator 0.032); the bias
    bound is the target on Menagerie."""
    m = play(tmp_path, "--xml-path", str(ref_xml), "--push", "1.0")
    assert m["fall_rate"] == MENAGERIE_PUSH_FALL_RATE, m
    assert m["mean_abs_vx_error"] <= 0.08 and m["max_abs_vx_bias"] <= 0.03, m
    assert m["estimator_abs_error_m_s"]["x"] <= 0.06, m


@pytest.mark.slow
def test_shipped_policy_has_no_falls_under_pushes_on_menagerie_in_the_readme_protocol(tmp_path, ref_xml):
    """The README's "no falls under pushes" for policies/go2_walk.pt on its own protocol: 64 envs x 20 s,
    a 1 m/s push every 4 s (five each): 0 of 64 fall."""
    assert README_PROTOCOL[:2] == ["--num_envs", "64"] and README_PROTOCOL[5] == "20"
    import play as play_cmd
    out = tmp_path / "metrics.json"
    assert play_cmd.main([*README_PROTOCOL, "--xml-path", str(ref_xml), "--push", "1.0", "--json", str(out)]) == 0
    m = json.loads(out.read_text())
    assert m["fall_rate"] == MENAGERIE_PUSH_FALL_RATE, m


def test_estimator_policy_knows_and_tracks_its_speed(tmp_path):
    """policies/go2_walk_estimator.pt (README, "What the actor sees"): 6 frames and an estimator,
    read from the file. Measured on 64 envs x 20 s: v_x error 0.046 m/s, signed bias +0.04 in every
    bin, estimator error 0.017 m/s, no falls (the robust policy: 0.128, +0.12). Here 16 envs x 10 s."""
    assert ESTIMATOR_POLICY.stat().st_size < 2_000_000
    assert policy_inputs(ESTIMATOR_POLICY) == ActorInputs(history_length=6, estimator=True)
    m = play(tmp_path, "--checkpoint", str(ESTIMATOR_POLICY))
    assert m["mean_abs_vx_error"] <= 0.08 and m["fall_rate"] == 0.0, m
    assert m["max_abs_vx_bias"] <= 0.07, m
    assert m["estimator_abs_error_m_s"]["x"] <= 0.04, m


def test_rolling_policy_holds_pushes_on_menagerie(tmp_path, ref_xml):
    """policies/go2_walk_rolling.pt (README, "What the actor sees"), trained with the feet's rolling
    friction drawn, on the Menagerie model under 1 m/s pushes every 4 s. Measured on 64 envs x 20 s:
    no falls, v_x error 0.073 m/s, bias -0.047 to -0.056 per bin, estimator error 0.028 m/s (the
    estimator policy: 15.6 % falls). Here 16 envs x 10 s, two pushes each."""
    assert policy_inputs(ROLLING_POLICY) == ActorInputs(history_length=6, estimator=True)
    m = play(tmp_path, "--checkpoint", str(ROLLING_POLICY), "--xml-path", str(ref_xml), "--push", "1.0")
    assert m["fall_rate"] == MENAGERIE_PUSH_FALL_RATE, m
    assert m["mean_abs_vx_error"] <= 0.09 and m["max_abs_vx_bias"] <= 0.08, m
    assert m["estimator_abs_error_m_s"]["x"] <= 0.05, m


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
