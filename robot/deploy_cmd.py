"""go2-deploy: walk a Go2 with an exported ONNX policy over Unitree's DDS topics.

    go2-deploy go2_walk.onnx --interface eth0                  # the real robot: domain 0 (read docs/robot.md first)
    go2-deploy go2_walk.onnx --interface lo --domain 1         # the simulated robot (go2-sim-robot)
    go2-deploy go2_walk.onnx --interface lo --domain 1 --replay demos.npz   # open-loop actions

Starts in Passive (damping). Keys: 1 Stand, 2 Walk, 0 or space e-stop, w/s a/d q/e the command;
the wireless remote: A Stand, start Walk, B or select e-stop, sticks the command.
"""
from __future__ import annotations

import dataclasses
import sys

from mjx_env.errors import OneLineParser, UserError, run

PROG = "go2-deploy"


def parser():
    from robot.controller import KEYS_HELP
    p = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0],
                      epilog=f"In Passive at start. {KEYS_HELP}. Before a real robot: docs/robot.md's checklist.")
    p.add_argument("policy", help="ONNX policy with deploy metadata (python -m bridge.policy CKPT out.onnx)")
    p.add_argument("--interface", default=None,
                   help="network interface wired to the robot (e.g. eth0), or lo for go2-sim-robot (required)")
    p.add_argument("--domain", type=int, default=0, help="DDS domain id (default 0: the robot; go2-sim-robot uses 1)")
    p.add_argument("--vx", type=float, default=0.0, help="initial forward command (m/s, default 0)")
    p.add_argument("--vy", type=float, default=0.0, help="initial lateral command (m/s, default 0)")
    p.add_argument("--yaw", type=float, default=0.0, help="initial yaw-rate command (rad/s, default 0)")
    p.add_argument("--xml", default=None, help="MJCF whose joint ranges clamp every target (default Unitree_go2/go2_mjx_gym.xml)")
    p.add_argument("--replay", default=None, metavar="NPZ",
                   help="in Walk, send this file's `actions` open loop instead of the policy's (DynaFlow NPZ or one (T, 12) array)")
    p.add_argument("--episode", type=int, default=0, help="which episode of --replay's file (default 0)")
    p.add_argument("--duration", type=float, default=None, metavar="S",
                   help="go Passive and exit after S seconds (default: run until Ctrl-C)")
    p.add_argument("--watchdog-ms", type=float, default=None, metavar="MS",
                   help="Passive when no valid LowState_ came for MS ms (default 20: 10 cycles)")
    p.add_argument("--stand-time", type=float, default=None, metavar="S",
                   help="seconds of the interpolation to the default pose (default 2)")
    p.add_argument("--no-crc-check", action="store_true",
                   help="accept LowState_ whatever its CRC (unitree_mujoco's Python bridge signs none); default: drop and count")
    p.add_argument("--no-keyboard", action="store_true", help="ignore stdin (the remote and the signals still act)")
    p.add_argument("--log", default=None, metavar="FILE.jsonl",
                   help="append events as JSON lines (state changes, each Passive with its trigger and damping times, counters)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    return run(PROG, lambda: _main(args))


def _main(args) -> int:
    from mjx_env.files import check_folder
    from mjx_env.model import DEFAULT_XML
    from robot import sdk
    from robot.controller import Controller, ControllerConfig, Policy, joint_ranges, load_replay
    from robot.dds import Bus, check_domain, check_interface
    if args.interface is None:
        raise UserError("--interface is required: the network interface wired to the robot (e.g. eth0), "
                        "or lo for go2-sim-robot")
    check_interface(args.interface)
    check_domain(args.domain)
    if args.duration is not None and args.duration <= 0:
        raise UserError(f"--duration must be > 0 s, got {args.duration}")
    cfg = ControllerConfig()
    if args.watchdog_ms is not None:
        if not 2 < args.watchdog_ms <= 1000:
            raise UserError(f"--watchdog-ms must lie in (2, 1000], got {args.watchdog_ms}")
        cfg = dataclasses.replace(cfg, watchdog_s=args.watchdog_ms / 1000)
    if args.stand_time is not None:
        if not 0.5 <= args.stand_time <= 20:
            raise UserError(f"--stand-time must lie in [0.5, 20] s, got {args.stand_time}")
        cfg = dataclasses.replace(cfg, stand_time_s=args.stand_time)
    if args.log is not None:
        check_folder(args.log)
    sdk.message_types()
    policy = Policy(args.policy)
    replay = load_replay(args.replay, args.episode) if args.replay is not None else None
    ranges = joint_ranges(args.xml or DEFAULT_XML, policy.meta["joint_names"])
    bus = Bus(args.domain, args.interface)
    ctl = Controller(policy, bus, ranges, cfg, command=(args.vx, args.vy, args.yaw), log_path=args.log,
                     replay=replay, prog=PROG, check_crc=not args.no_crc_check)
    ctl.connect()
    stats = ctl.run(args.duration, keyboard=not args.no_keyboard)
    print(f"{PROG}: stopped ({ctl.stop_reason}) after {stats['seconds']:.1f} s: {stats['ticks']} commands, "
          f"{stats['policy_steps']} policy steps, {stats['states']} LowState_ ({stats['bad_crc']} dropped for a bad CRC), "
          f"{stats['late_ticks']} late cycles (worst {stats['max_late_ms']:.1f} ms)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
