"""bench.py --phi's report, checked the same way wherever a test runs it (cold in test_bench.py,
warm in test_dynamics.py): the keys, every figure finite, and the median and ratio arithmetic."""
import json
import math
import statistics
import subprocess
import sys

import pytest

from conftest import REPO


def run_bench_phi(out, B, H, cache):
    r = subprocess.run([sys.executable, str(REPO / "bench.py"), "--device", "cpu", "--phi", "--phi-batch", str(B),
                        "--phi-horizon", str(H), "--phi-cache", cache, "--seconds", "0", "--repeats", "2",
                        "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"phi B={B:<5} H={H:<3}" in r.stdout and f"s {cache}, " in r.stdout, r.stdout
    assert "(values and gradients equal)" in r.stdout, r.stdout
    return json.loads(out.read_text())


def check_phi_report(report, B, H, cache):
    assert "results" not in report or report["results"] == []        # --phi measures Φ alone
    [phi] = report["phi"]
    assert (phi["B"], phi["H"], phi["remat"], phi["phi_cache"]) == (B, H, False, cache)
    assert phi["cached_values_and_gradients_equal"] is True
    for name in ("forward", "forward_backward"):
        f = phi[name]
        assert len(f["samples"]) == 2 and all(s > 0 and math.isfinite(s) for s in f["samples"])
        assert f["s"] == pytest.approx(statistics.median(f["samples"]))
        assert f["windows_per_s"] == pytest.approx(B / f["s"])
        assert f["control_steps_per_s"] == pytest.approx(B * H / f["s"])
        assert phi["compile_s"][name] > 0 and phi["compile_cached_s"][name] > 0
    ratios = [b / f for f, b in zip(phi["forward"]["samples"], phi["forward_backward"]["samples"])]
    assert phi["ratio_fwd_bwd_to_fwd"] == pytest.approx(statistics.median(ratios))
    assert (phi["ratio_min"], phi["ratio_max"]) == pytest.approx((min(ratios), max(ratios)))
    assert all(v is None or v > 0 for v in phi["memory_bytes"].values()) and phi["peak_rss_mb_so_far"] > 0
