"""Measuring commanded jumps: apex, flight and falls per jump window (play.py --jump)."""
from __future__ import annotations


class JumpLog:
    """Per jump command: the apex base height in its window, its flight, and falls during or after it.

    The window is jump_reward_steps control steps after the command; a fall within it counts as
    during the jump, a fall in the following window as after it. A jump whose window an episode's
    time-out cuts short is not counted. Flight is the longest run of control steps in the window with
    no foot in contact (all four gaps of mjx_env.feet.FootProbe > 0); it is sampled at the control
    rate, so a flight shorter than one control step can be missed. The lowest foot's peak is the
    highest the lowest of the four feet got in the window (its gap): how far the whole robot left the
    floor (NaN for a jump that ended in a fall before any gap was measured).
    """

    def __init__(self, n: int, window: int):
        import numpy as np
        self.np, self.window = np, window
        self.since = np.full(n, -1)          # steps since the env's last command (-1: none)
        self.start, self.apex, self.target = np.zeros(n), np.zeros(n), np.zeros(n)
        self.run, self.flight = np.zeros(n, int), np.zeros(n, int)    # airborne steps: current run, longest
        self.lift = np.full(n, np.nan)       # the lowest foot's highest gap in the window (NaN: none yet)
        self.jumps = []                      # (target, height at the command, apex, fell, longest flight, lift)
        self.falls_during = self.falls_after = 0

    def command(self, mask, heights, target: float) -> None:
        """Jump commands where mask, given in states of base height `heights`."""
        self.since[mask] = 0
        self.start[mask] = self.apex[mask] = heights[mask]
        self.target[mask] = target
        self.run[mask] = self.flight[mask] = 0
        self.lift[mask] = self.np.nan

    def watching(self):
        """Envs whose next step falls inside a jump window (only these need the flight check)."""
        return (self.since >= 0) & (self.since < self.window)

    def step(self, heights, done, fell, gaps=None) -> None:
        """After a step: base heights of the states reached (before auto-reset), who ended, who fell, and
        the (n, 4) foot gaps of those states (FootProbe; NaN where not computed, None: flight not checked)."""
        np = self.np
        tracked = self.since >= 0
        self.since[tracked] += 1
        inside = tracked & (self.since <= self.window)
        self.apex[inside] = np.maximum(self.apex[inside], heights[inside])
        if gaps is not None:
            lowest = gaps.min(axis=1)
            self.run = np.where(inside & (lowest > 0), self.run + 1, 0)
            self.flight = np.maximum(self.flight, self.run)
            self.lift[inside] = np.fmax(self.lift[inside], lowest[inside])
        self.falls_during += int(np.sum(fell & inside))
        self.falls_after += int(np.sum(fell & tracked & ~inside & (self.since <= 2 * self.window)))
        for i in np.flatnonzero(inside & ((self.since == self.window) | fell)):
            self.jumps.append((self.target[i], self.start[i], self.apex[i], bool(fell[i]), self.flight[i],
                               self.lift[i]))
        self.since[done] = -1

    def summary(self, tolerance: float, dt: float) -> dict:
        np = self.np
        j = np.array(self.jumps, float).reshape(-1, 6)
        target, start, apex, flight, lift = j[:, 0], j[:, 1], j[:, 2], j[:, 4], j[:, 5]
        stat = (lambda x: float(x.mean()) if len(x) else float("nan"))
        spread = (lambda x: float(x.std()) if len(x) else float("nan"))
        peak = (lambda x: float(x.max()) if len(x) else float("nan"))
        lift = lift[~np.isnan(lift)]
        return {"jumps": len(j), "jump_target": stat(target),
                "apex_height_mean": stat(apex), "apex_height_std": spread(apex),
                "apex_rise_mean": stat(apex - start), "apex_rise_std": spread(apex - start),
                "apex_within_tolerance": stat(np.abs(apex - target) < tolerance), "tolerance": tolerance,
                "with_flight": stat(flight > 0), "flight_time_mean": stat(flight * dt),
                "flight_time_max": peak(flight * dt),
                "lowest_foot_peak_mean": stat(lift), "lowest_foot_peak_max": peak(lift),
                "falls_during_jump": self.falls_during, "falls_after_jump": self.falls_after}
