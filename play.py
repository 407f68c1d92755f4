"""Evaluate a policy: N envs for M episodes with fixed seeds, print tracking metrics, optional video.

    python play.py                                   # the shipped policy, the acceptance protocol
    python play.py --checkpoint logs/go2-cpu/model_299.pt --vx 0.5 --episodes 2
    python play.py --xml-path ../shared/reference/unitree_go2/scene.xml       # sim-to-sim
    python play.py --protocol omni --model menagerie --json omni.json        # a README table's protocol
    python play.py --num-envs 1 --duration 10 --video go2.mp4                # MP4, camera follows
    python play.py --checkpoint policies/go2_jump.pt --jump 0.6 --jump-every 2   # jump on command
    python play.py --viewer                          # watch and steer it live: http://127.0.0.1:8080

Commands are sampled once per episode, uniformly in the given ranges (a single value fixes one),
and held for the whole episode. Metrics are means over all steps of all episodes. --protocol NAME
sets the flags of one of the README's accuracy tables (tools/evaluate.py PROTOCOLS); the keys --json
writes are listed in tools/evaluate.py KEYS.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import mjx_env  # noqa: F401
from mjx_env.errors import OneLineParser, command_name
from tools.cli import add_commands, add_device, add_model, add_perturbations, run
from tools.evaluate import add_protocol, evaluate, parse_with_protocol  # evaluate: play.evaluate, as before


def parse_args(argv=None):
    p = OneLineParser(prog=command_name("play.py"), description="Evaluate a Go2 policy.")
    p.add_argument("--checkpoint", default=None, help="rsl_rl checkpoint or exported actor (default: shipped policy)")
    p.add_argument("--num-envs", "--num_envs", "-B", dest="num_envs", type=int, default=64,
                   help="envs stepped at once (default 64)")
    p.add_argument("--episodes", type=int, default=1, help="episodes per env (default 1)")
    p.add_argument("--duration", type=float, default=20.0, help="episode length in seconds (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the resets and commands (default 0)")
    add_commands(p)
    add_model(p)
    add_protocol(p)
    add_device(p)
    p.add_argument("--video", default=None, metavar="OUT.mp4", help="render env --video-env to an MP4")
    p.add_argument("--video-env", type=int, default=0, help="which env --video films (default 0)")
    p.add_argument("--width", type=int, default=640, help="--video's width in pixels (default 640)")
    p.add_argument("--height-px", type=int, default=480, help="--video's height in pixels (default 480)")
    p.add_argument("--json", default=None,
                   help="also write the metrics as JSON here (its keys: tools/evaluate.py KEYS)")
    p.add_argument("--plot", default=None, metavar="OUT.png",
                   help="commanded vs measured velocities of a few envs, and the error distribution")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it is off when not on a terminal)")
    add_perturbations(p)
    p.add_argument("--viewer", action="store_true",
                   help="watch and steer the run live in a browser (viser; runs until Ctrl-C, then prints the metrics)")
    p.add_argument("--port", type=int, default=8080, help="--viewer's port (default 8080)")
    p.add_argument("--host", default="127.0.0.1",
                   help="--viewer's address (default 127.0.0.1: this machine only; reach it through an SSH tunnel)")
    return parse_with_protocol(p, argv)


def main(argv=None) -> int:
    args = parse_args(argv)

    def play():
        if args.video:
            from tools.video import check_gl, choose_gl
            choose_gl()
            check_gl()
        return report(evaluate(args), args)
    return run(command_name("play.py"), play)


def report(res: dict, args) -> int:
    head = (f"model {res['model']} ({res['backend']}), {res['num_envs']} envs, {res['episodes']} episodes, "
            f"seed {res['seed']}, commands {res['commands']}")
    if res["protocol"]:
        changed = " ".join(f"--{k.replace('_', '-')} " + (" ".join(f"{x:g}" for x in v) if isinstance(v, list) else f"{v:g}")
                           for k, v in res["protocol_overrides"].items())
        head += f", protocol {res['protocol']}" + (f" (changed: {changed})" if changed else "")
    if res["task"]:
        head += f", task {res['task']}"
    print(head)
    for k in ("mean_abs_vx_error", "mean_abs_vy_error", "mean_abs_yaw_rate_error", "mean_abs_height_error",
              "fall_rate", "mean_episode_length_s"):
        print(f"  {k:<26} {res[k]:.4f}")
    if res["vx_bias_by_command"]:              # v_x - command, by commanded v_x, after each command's first second
        print("  signed v_x bias by command " + ", ".join(f"{b}: {v:+.3f}" for b, v in res["vx_bias_by_command"].items())
              + f" (all: {res['vx_bias']:+.3f})")
    if res["yaw_sway_rms_at_zero_yaw_cmd"] is not None:      # split after each command's first second
        print(f"  at yaw command 0           |yaw rate| {res['mean_abs_yaw_rate_error_at_zero_yaw_cmd']:.4f}, "
              f"steady turn {res['yaw_steady_turn_at_zero_yaw_cmd']:.4f}, "
              f"sway (RMS) {res['yaw_sway_rms_at_zero_yaw_cmd']:.4f} rad/s")
    if "estimator_abs_error_m_s" in res:
        e = res["estimator_abs_error_m_s"]
        print(f"  velocity estimator error   x {e['x']:.4f}, y {e['y']:.4f}, z {e['z']:.4f} m/s "
              f"(signed x {res['estimator_bias_m_s']['x']:+.4f})")
    if res["protocol"]:                        # the columns of the README's accuracy tables
        row = [f"v_x {res['mean_abs_vx_error']:.3f}", f"yaw {res['mean_abs_yaw_rate_error']:.3f}",
               "bias " + ", ".join(f"{v:+.3f}" for v in res["vx_bias_by_command"].values()),
               f"falls {res['falls']} of {res['episodes']}"]
        if "estimator_abs_error_m_s" in res:
            row.append(f"est. {res['estimator_abs_error_m_s']['x']:.3f}")
        print(f"{res['protocol']}: " + " | ".join(row))
    if "jump" in res:
        j = res["jump"]
        print(f"jumps to {args.jump} m every {args.jump_every} s: {j['jumps']} jumps")
        print(f"  apex base height           {j['apex_height_mean']:.3f} +- {j['apex_height_std']:.3f} m")
        print(f"  apex rise above the start  {j['apex_rise_mean']:.3f} +- {j['apex_rise_std']:.3f} m")
        print(f"  apex within {j['tolerance']} m of target {j['apex_within_tolerance']:.3f}")
        print(f"  with a flight phase        {j['with_flight']:.3f} (no foot in contact; longest "
              f"{j['flight_time_mean']:.3f} s mean, {j['flight_time_max']:.3f} s max)")
        print(f"  lowest foot's peak gap     {j['lowest_foot_peak_mean']:.3f} m mean, "
              f"{j['lowest_foot_peak_max']:.3f} m max")
        print(f"  falls during / after a jump {j['falls_during_jump']} / {j['falls_after_jump']}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    if args.video:
        print(f"wrote {args.video}")
    if args.plot:
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
