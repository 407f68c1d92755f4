"""The benchmark runs end to end at tiny sizes and writes a complete, consistent JSON report.

No time is asserted: only the report's structure, its arithmetic and the measuring order."""
import json
import statistics
from pathlib import Path
import subprocess
import sys

import pytest

from conftest import MJX_BATCH, REPO
from phi_report import check_phi_report, run_bench_phi

REPEATS = 3


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    r = subprocess.run([sys.executable, str(REPO / "bench.py"), "--device", "cpu", "--num-envs", str(MJX_BATCH), "--seconds", "0.02",
                        "--repeats", str(REPEATS), "--json", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "rollout_mt" in r.stdout and "ratio to the layer beneath" in r.stdout
    return json.loads(out.read_text())


def test_report_header(report):
    assert report["device"] == "cpu" and report["threads"] >= 1 and report["substeps"] == 4
    assert report["repeats"] == REPEATS
    for pkg in ("mujoco", "mujoco-mjx", "jax", "torch", "rsl-rl-lib"):
        assert report["versions"][pkg]
    # one batch: each batch size is a compile of every MJX layer, and the loops below are per batch;
    # conftest's MJX_BATCH, so that the env layer's MJX step is the program other tests compile too
    assert [r["num_envs"] for r in report["results"]] == [MJX_BATCH]


def test_every_layer_measured_with_consistent_units(report):
    layers = {"rollout_1t", "rollout_mt", "mjx_physics", "env_mujoco", "env_mjx", "bridge_mujoco", "bridge_mjx"}
    for r in report["results"]:
        n = r["num_envs"]
        assert set(r["layers"]) == layers
        for v in r["layers"].values():
            xs = v["env_steps_per_s_samples"]
            assert len(xs) == REPEATS and v["s_per_step"] > 0
            assert v["env_steps_per_s"] == pytest.approx(n / v["s_per_step"])
            assert v["env_steps_per_s"] == pytest.approx(statistics.median(xs))
            assert v["env_steps_per_s_min"] == min(xs) and v["env_steps_per_s_max"] == max(xs)
            assert v["spread"] == pytest.approx((max(xs) - min(xs)) / statistics.median(xs))
            assert v["physics_steps_per_s"] == pytest.approx(4 * v["env_steps_per_s"])
        assert r["compile_s"]["env_mjx"] > 0 and r["compile_s"]["mjx_physics"] > 0


def test_ratios_are_taken_within_each_round(report):
    for r in report["results"]:
        S = {k: v["env_steps_per_s_samples"] for k, v in r["layers"].items()}
        for key, (a, b) in {"env_mujoco / rollout_mt": ("env_mujoco", "rollout_mt"),
                            "bridge_mjx / env_mjx": ("bridge_mjx", "env_mjx"),
                            "rollout_mt / rollout_1t": ("rollout_mt", "rollout_1t")}.items():
            per_round = [x / y for x, y in zip(S[a], S[b])]
            spread = r["ratio_spread"][key]
            assert spread["samples"] == pytest.approx(per_round)
            assert r["ratios"][key] == pytest.approx(statistics.median(per_round))
            assert spread["min"] == pytest.approx(min(per_round)) and spread["max"] == pytest.approx(max(per_round))


def test_layers_are_interleaved(report):
    for r in report["results"]:
        order, names = r["order"], list(r["layers"])
        k = len(names)
        assert len(order) == REPEATS * k
        rounds = [order[i * k:(i + 1) * k] for i in range(REPEATS)]
        assert all(sorted(x) == sorted(names) for x in rounds)       # every round measures every layer
        assert len({x[0] for x in rounds}) == REPEATS                 # a different layer opens each round


def test_schedule():
    from bench import schedule
    assert schedule(["a", "b", "c"], 2) == ["a", "b", "c", "b", "c", "a"]
    assert schedule([], 3) == []


def test_training_iteration_split(report):
    for r in report["results"]:
        t = r["train"]["mujoco"]          # on CPU, train.py's backend
        assert set(r["train"]) == {"mujoco"} and len(t["samples"]) == REPEATS
        assert t["collection_s"] > 0 and t["learning_s"] > 0
        assert t["iteration_s"] == pytest.approx(statistics.median(s["iteration_s"] for s in t["samples"]))
        assert t["collection_s"] + t["learning_s"] == pytest.approx(t["iteration_s"])
        assert t["learning_share"] == pytest.approx(t["learning_s"] / t["iteration_s"])
        assert t["env_steps_per_s"] == pytest.approx(24 * r["num_envs"] / t["iteration_s"])


@pytest.mark.parametrize("flags, message", [
    (["--num-envs", "0"], "bench.py: error: --num-envs must be >= 1, got 0"),
    (["--repeats", "0"], "bench.py: error: --repeats and --train-iterations must be >= 1, got 0 and 1"),
    (["--seconds", "-1"], "bench.py: error: --seconds must be >= 0, got -1"),
    (["--threads", "0"], "bench.py: error: --threads must be >= 1, got 0"),
    (["--json", "/nonexistent-folder/b.json"],
     "bench.py: error: cannot write /nonexistent-folder/b.json: folder /nonexistent-folder does not exist"),
    (["--phi", "--phi-horizon", "0"], "bench.py: error: --phi-batch and --phi-horizon must be >= 1"),
    (["--mjx-impl", "cuda"], "bench.py: error: unknown --mjx-impl 'cuda': choose jax or warp"),
    (["--train-backends", "warp"],
     "bench.py: error: --train-backends warp needs its env layer: --backends mjx --mjx-impl warp"),
    (["--warp-caps", "20", "8"],
     "bench.py: error: --warp-caps takes two iteration caps >= 1 for --mjx-impl warp, got 20 8 with --mjx-impl jax"),
])
def test_bad_flag_one_line(tmp_path, flags, message):
    r = subprocess.run([sys.executable, str(REPO / "bench.py"), "--json", str(tmp_path / "x"), *flags],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == message


def test_training_layer_runs_what_train_py_runs(monkeypatch, tmp_path):
    """With a log dir: rsl_rl's logger step and writer run, as in train.py; the temp dir is removed."""
    import bench
    from bridge.runner import DeviceLogger
    loggers, log = [], DeviceLogger.log

    def recorded(self, *a, **kw):
        loggers.append(self)
        return log(self, *a, **kw)
    monkeypatch.setattr(DeviceLogger, "log", recorded)
    assert bench.main(["--device", "cpu", "--backends", "mujoco", "--num-envs", "2", "--seconds", "0.01",
                       "--repeats", "1", "--train-iterations", "1", "--json", str(tmp_path / "b.json")]) == 0
    assert len(loggers) == 2 and loggers[0] is loggers[1]       # the warm-up and the timed iteration
    logger = loggers[0]
    assert logger.writer is not None and logger.tot_timesteps == 2 * 24 * 2
    assert not Path(logger.log_dir).exists()


@pytest.mark.slow
def test_randomize_adds_the_cost_attribution_layers(tmp_path):
    """--randomize: the randomized env step, without friction loss, and the machinery at nominal draws,
    each with its ratio to the nominal env step taken within each round."""
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, str(REPO / "bench.py"), "--device", "cpu", "--num-envs", "4",
                        "--backends", "mujoco", "--randomize", "--seconds", "0.02", "--repeats", "2",
                        "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())["results"][0]
    S = {k: v["env_steps_per_s_samples"] for k, v in res["layers"].items()}
    for tag in ("dr", "dr_nofl", "dr_nominal"):
        key = f"env_mujoco_{tag} / env_mujoco"
        assert res["ratio_spread"][key]["samples"] == pytest.approx(
            [x / y for x, y in zip(S[f"env_mujoco_{tag}"], S["env_mujoco"])])


@pytest.mark.slow
def test_phi_report_cold_has_every_figure_finite(tmp_path):
    """bench.py --phi at the smallest window (B = 1, H = 1) from a cold cache: Φ's forward and
    forward+backward programs compiled into a fresh cache, then from it, timed in interleaved rounds;
    every figure there and finite, the cached programs' values and gradients equal to the cold ones.
    (Two cold compiles of Φ, minutes on a 2-core CPU: the default group runs bench.py --phi warm, on
    the programs test_dynamics.py compiled.)"""
    check_phi_report(run_bench_phi(tmp_path / "phi.json", 1, 1, "cold"), 1, 1, "cold")
