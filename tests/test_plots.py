"""play.py --plot and bench.py --plot write PNGs; the progress bar shows on a terminal only."""
import io
import json
import sys

import numpy as np
import pytest

from tools.plots import TrackingTrace

PNG = b"\x89PNG\r\n\x1a\n"


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_tracking_trace_records_first_episodes_and_counted_errors():
    tr = TrackingTrace(num_envs=3, dt=0.02, shown=2)
    cmd = np.array([[0.5, 0.0, 0.2, 0.3, 0.0]] * 3)
    lin = np.array([[0.4, 0.1, 0.0]] * 3)
    ang = np.array([[0.0, 0.0, 0.5]] * 3)
    tr.add(cmd, lin, ang, counting=np.array([True, True, False]), done=np.array([True, False, False]))
    tr.add(cmd, lin, ang, counting=np.array([True, True, True]), done=np.array([False, False, False]))
    assert np.isnan(tr.measured[1][0]).all() and tr.measured[1][1] == pytest.approx([0.4, 0.1, 0.5])
    errors = np.concatenate(tr.errors)
    assert errors.shape == (5, 3) and errors[0] == pytest.approx([0.1, 0.1, 0.3])


def test_play_plot_and_progress_bar(tmp_path, monkeypatch):
    import play
    out = tmp_path / "tracking.png"
    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    assert play.main(["--num_envs", "3", "--duration", "0.5", "--plot", str(out)]) == 0
    data = out.read_bytes()
    assert data.startswith(PNG) and len(data) > 10_000
    assert "play:" in term.getvalue() and "0/25 [" in term.getvalue()     # the bar's first frame: 0.5 s / 0.02 s

    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    assert play.main(["--num_envs", "2", "--duration", "0.1", "--no-progress"]) == 0
    assert term.getvalue() == ""

    term = Terminal()             # a command outside the trained ranges: said once, and the run goes on
    monkeypatch.setattr(sys, "stderr", term)
    assert play.main(["--num_envs", "2", "--duration", "0.1", "--no-progress", "--vx", "2.5"]) == 0
    assert term.getvalue().splitlines() == [
        "note: --vx 2.5 lies outside the -1 to 2 m/s the policies are trained on "
        "(CommandConfig.lin_vel_x_range): expect poorer tracking there"]


@pytest.mark.parametrize("flag, name", [("--plot", "t.png"), ("--json", "m.json")])
def test_play_output_in_a_missing_folder_fails_before_the_run(tmp_path, capsys, monkeypatch, flag, name):
    import play
    import tools.rollout

    def no_run(*args, **kwargs):
        raise AssertionError("the rollout started")
    monkeypatch.setattr(tools.rollout, "PolicyLoop", no_run)
    assert play.main([flag, str(tmp_path / "no" / name)]) == 2
    assert capsys.readouterr().err.strip() == (f"play.py: error: cannot write {tmp_path / 'no' / name}: "
                                                f"folder {tmp_path / 'no'} does not exist")


def small_report():
    results = []
    for n, k in ((1, 1.0), (64, 20.0), (512, 30.0)):
        layers = {name: {"env_steps_per_s": base * k, "env_steps_per_s_min": 0.9 * base * k,
                         "env_steps_per_s_max": 1.1 * base * k}
                  for name, base in (("rollout_1t", 1000.0), ("rollout_mt", 1800.0), ("env_mujoco", 1500.0),
                                     ("bridge_mujoco", 1400.0), ("mjx_physics", 300.0), ("env_mjx", 290.0))}
        results.append({"num_envs": n, "layers": layers, "train": {"mujoco": {"env_steps_per_s": 200.0 * k}}})
    return {"machine": {"cpu": "test CPU"}, "threads": 2, "device": "cpu", "results": results}


def test_bench_plot_from_a_report(tmp_path, capsys):
    import bench
    src, out = tmp_path / "bench.json", tmp_path / "bench.png"
    src.write_text(json.dumps(small_report()))
    assert bench.main(["--plot", str(out), "--from", str(src)]) == 0
    data = out.read_bytes()
    assert data.startswith(PNG) and len(data) > 10_000
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    # the README's picture comes from the figures in docs/bench.json
    from conftest import REPO
    assert bench.main(["--plot", str(tmp_path / "readme.png"), "--from", str(REPO / "docs" / "bench.json")]) == 0
    assert (tmp_path / "readme.png").read_bytes().startswith(PNG)


def test_bench_plot_bad_input_one_line(tmp_path, capsys):
    import bench
    assert bench.main(["--from", str(tmp_path / "none.json")]) == 2
    assert capsys.readouterr().err.strip() == "bench.py: error: --from needs --plot OUT.png"
    assert bench.main(["--plot", str(tmp_path / "b.png"), "--from", str(tmp_path / "none.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"bench.py: error: cannot read benchmark report {tmp_path / 'none.json'}")
