"""The benchmark runs end to end at tiny sizes and writes a complete, consistent JSON report.

No time is asserted: only the report's structure and its arithmetic."""
import json
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    r = subprocess.run([sys.executable, str(REPO / "bench.py"), "--num-envs", "2", "8", "--seconds", "0.05",
                        "--train-iterations", "1", "--json", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "rollout_mt" in r.stdout and "ratio to the layer beneath" in r.stdout
    return json.loads(out.read_text())


def test_report_header(report):
    assert report["device"] == "cpu" and report["threads"] >= 1 and report["substeps"] == 4
    for pkg in ("mujoco", "mujoco-mjx", "jax", "torch", "rsl-rl-lib"):
        assert report["versions"][pkg]
    assert [r["num_envs"] for r in report["results"]] == [2, 8]


def test_every_layer_measured_with_consistent_units(report):
    layers = {"rollout_1t", "rollout_mt", "mjx_physics", "env_mujoco", "env_mjx", "bridge_mujoco", "bridge_mjx"}
    for r in report["results"]:
        n = r["num_envs"]
        assert set(r["layers"]) == layers
        for v in r["layers"].values():
            assert v["s_per_step"] > 0
            assert v["env_steps_per_s"] == pytest.approx(n / v["s_per_step"])
            assert v["physics_steps_per_s"] == pytest.approx(4 * v["env_steps_per_s"])
        L = {k: v["env_steps_per_s"] for k, v in r["layers"].items()}
        assert r["ratios"]["env_mujoco / rollout_mt"] == pytest.approx(L["env_mujoco"] / L["rollout_mt"])
        assert r["ratios"]["bridge_mjx / env_mjx"] == pytest.approx(L["bridge_mjx"] / L["env_mjx"])
        assert r["ratios"]["rollout_mt / rollout_1t"] == pytest.approx(L["rollout_mt"] / L["rollout_1t"])
        assert r["compile_s"]["env_mjx"] > 0 and r["compile_s"]["mjx_physics"] > 0


def test_training_iteration_split(report):
    for r in report["results"]:
        t = r["train"]["mujoco"]          # on CPU, train.py's backend
        assert set(r["train"]) == {"mujoco"}
        assert t["collection_s"] > 0 and t["learning_s"] > 0
        assert t["collection_s"] + t["learning_s"] == pytest.approx(t["iteration_s"])
        assert t["learning_share"] == pytest.approx(t["learning_s"] / t["iteration_s"])
        assert t["env_steps_per_s"] == pytest.approx(24 * r["num_envs"] / t["iteration_s"])


def test_bad_flag_one_line(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "bench.py"), "--num-envs", "0", "--json", str(tmp_path / "x")],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == "bench.py: error: --num-envs must be >= 1, got 0"
