"""go2-sim-robot: a simulated Go2 on Unitree's DDS topics (rt/lowcmd in, rt/lowstate out), on loopback.

    go2-sim-robot                                   # Menagerie's Go2, domain 1, interface lo, until Ctrl-C
    go2-deploy policy.onnx --interface lo --domain 1   # in another terminal: drive it

Headless MuJoCo at the model's own physics step; each motor applies the PD law of the latest LowCmd_
every step; LowState_ at 500 Hz. --viewer opens MuJoCo's viewer (needs a display).
"""
from __future__ import annotations

import dataclasses
import os
import sys

from mjx_env.errors import OneLineParser, UserError, run

PROG = "go2-sim-robot"


def parser():
    p = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--xml", default=None,
                   help="Go2 MJCF (default: MuJoCo Menagerie's scene.xml, see GO2_MENAGERIE; the project's "
                        "Unitree_go2/go2_mjx_gym.xml has feet-only contacts, so use it with --start standing)")
    p.add_argument("--domain", type=int, default=1, help="DDS domain id (default 1; the real robot uses 0)")
    p.add_argument("--interface", default="lo", help="network interface (default lo; the simulator never needs another)")
    p.add_argument("--duration", type=float, default=None, metavar="S",
                   help="stop after S seconds (default: run until Ctrl-C or SIGTERM)")
    p.add_argument("--start", choices=("lying", "standing"), default="lying",
                   help="initial pose: lying on its belly, legs folded (default), or the training's standing reset pose")
    p.add_argument("--push", type=float, default=0.0, metavar="M",
                   help="kick the base by M m/s horizontally, in a random direction, every --push-every s (default 0: never)")
    p.add_argument("--push-every", type=float, default=4.0, metavar="S", help="seconds between pushes (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the push directions (default 0)")
    p.add_argument("--corrupt-crc-every", type=int, default=0, metavar="N",
                   help="send every Nth LowState_ with a wrong CRC, to test a controller's check (default 0: never)")
    p.add_argument("--log", default=None, metavar="FILE.npz",
                   help="write the ground truth (wall-clock and simulated time, base position, roll pitch yaw, body velocities) and counters at exit")
    p.add_argument("--viewer", action="store_true", help="show MuJoCo's live viewer (needs a display)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    return run(PROG, lambda: _main(args))


def _main(args) -> int:
    from mjx_env.files import check_folder
    from robot.dds import Bus
    from robot.sim import SimConfig, SimProcess, SimRobot
    from robot import sdk
    sdk.message_types()
    if args.duration is not None and args.duration <= 0:
        raise UserError(f"--duration must be > 0 s, got {args.duration}")
    if args.push < 0 or args.push_every <= 0:
        raise UserError("--push must be >= 0 m/s and --push-every > 0 s")
    if args.corrupt_crc_every < 0:
        raise UserError(f"--corrupt-crc-every must be >= 0, got {args.corrupt_crc_every}")
    if args.log is not None:
        check_folder(args.log)
    xml = args.xml
    if xml is None:
        from mjx_env.model import menagerie_scene
        xml = menagerie_scene()
    cfg = dataclasses.replace(SimConfig(), start=args.start, push_velocity=args.push, push_every_s=args.push_every,
                              corrupt_crc_every=args.corrupt_crc_every)
    robot = SimRobot(xml, cfg, seed=args.seed)
    viewer = None
    if args.viewer:
        if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
            raise UserError("--viewer needs a display (DISPLAY is not set); run headless without it")
        import mujoco.viewer
        viewer = mujoco.viewer.launch_passive(robot.m, robot.d)
    bus = Bus(args.domain, args.interface)
    proc = SimProcess(robot, bus, args.duration, log_path=args.log, viewer=viewer)
    print(f"{PROG}: {os.path.basename(str(xml))} at {robot.dt * 1000:g} ms physics, LowState_ at 500 Hz on "
          f"domain {args.domain}, {args.interface}", flush=True)
    try:
        counts = proc.run()
    finally:
        if viewer is not None:
            viewer.close()
    print(f"{PROG}: stopped after {counts['seconds']:.1f} s ({counts['sim_seconds']:.1f} s simulated): "
          f"{counts['states']} LowState_ sent, {counts['commands']} LowCmd_ applied, "
          f"{counts['bad_crc']} dropped for a bad CRC, {counts['bad_header']} for a bad header, "
          f"{counts['lag_skips']} lag skips", flush=True)
    if viewer is not None:
        # mujoco 3.17's passive viewer closes asynchronously: an interpreter exiting under its render
        # thread crashed (SIGSEGV) in 1 of 2 runs here (Xvfb). Everything is written and flushed by
        # now, so the process ends without the interpreter's teardown.
        sys.stderr.flush()
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
