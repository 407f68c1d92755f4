"""Every number of the Go2 locomotion task, in one place.

Values follow the reference environment (quadrupeds_locomotion go2_env.py / go2_train.py, see
docs in ../shared/docs/reference_env.md) except where the seed README decides otherwise
(action_scale 0.3). Configs are frozen dataclasses: they are hashed into the jit cache and
pickled into cfgs.pkl next to every checkpoint.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

# Policy action order (and joint observation order): FR, FL, RR, RL legs; hip, thigh, calf each.
LEGS = ("FR", "FL", "RR", "RL")
JOINT_NAMES = tuple(f"{leg}_{part}_joint" for leg in LEGS for part in ("hip", "thigh", "calf"))


@dataclass(frozen=True)
class EnvConfig:
    num_actions: int = 12
    dt: float = 0.02                 # control period (s)
    sim_dt: float = 0.005            # physics step (s); must divide dt
    episode_length_s: float = 20.0   # 1000 control steps
    action_scale: float = 0.3        # seed README (the reference code has 0.25)
    clip_actions: float = 100.0
    simulate_action_latency: bool = True   # PD targets of step t come from action t-1
    kp: float = 20.0
    kd: float = 0.5
    torque_limit_hip: float = 23.7   # N m, hip and thigh motors
    torque_limit_knee: float = 45.43  # N m, calf (knee) motors
    # default joint angles (rad), by joint name
    default_joint_angles: tuple = (
        ("FR_hip_joint", 0.0), ("FR_thigh_joint", 0.8), ("FR_calf_joint", -1.5),
        ("FL_hip_joint", 0.0), ("FL_thigh_joint", 0.8), ("FL_calf_joint", -1.5),
        ("RR_hip_joint", 0.0), ("RR_thigh_joint", 1.0), ("RR_calf_joint", -1.5),
        ("RL_hip_joint", 0.0), ("RL_thigh_joint", 1.0), ("RL_calf_joint", -1.5),
    )
    base_init_pos: tuple = (0.0, 0.0, 0.42)
    base_init_quat: tuple = (1.0, 0.0, 0.0, 0.0)   # w, x, y, z
    termination_roll_deg: float = 10.0
    termination_pitch_deg: float = 10.0
    # A state is "diverged" (reset on its own, counted) past these bounds or when non-finite.
    max_abs_qvel: float = 1000.0
    max_abs_base_xy: float = 1000.0

    @property
    def substeps(self) -> int:
        return int(round(self.dt / self.sim_dt))

    @property
    def max_episode_length(self) -> int:
        return int(math.ceil(self.episode_length_s / self.dt))

    def default_angles(self) -> tuple:
        """Default joint angles in action order."""
        table = dict(self.default_joint_angles)
        return tuple(float(table[name]) for name in JOINT_NAMES)


@dataclass(frozen=True)
class ObsConfig:
    num_obs: int = 48
    num_privileged_obs: int = 52     # policy obs + base linear velocity (3) + base height (1)
    lin_vel_scale: float = 2.0
    ang_vel_scale: float = 0.25
    dof_pos_scale: float = 1.0
    dof_vel_scale: float = 0.05
    # commands [lin_vel_x, lin_vel_y, ang_vel, height, jump]
    commands_scale: tuple = (2.0, 2.0, 0.25, 2.0, 2.0)
    # Opt-in actor inputs (train.py --history, --actor-lin-vel); off, the env is the seed's.
    # The actor sees its last history_length policy observations, oldest first (one frame at 1).
    history_length: int = 1
    # The measured base linear velocity as the first policy term, with uniform noise of this many
    # m/s (times lin_vel_scale), as MuJoCo Playground and legged_gym give it. num_obs is then 51.
    actor_lin_vel: bool = False
    lin_vel_noise: float = 0.1

    def policy_layout(self, num_actions: int = 12) -> tuple:
        """The policy observation, term by term: (name, size, per-element scale), in the order
        Go2Task.observe concatenates them. Exported with a deployed policy."""
        n = num_actions
        lin_vel = (("base_lin_vel", 3, (self.lin_vel_scale,) * 3),) if self.actor_lin_vel else ()
        return lin_vel + (("base_ang_vel", 3, (self.ang_vel_scale,) * 3),
                ("projected_gravity", 3, (1.0,) * 3),
                ("commands", len(self.commands_scale), tuple(self.commands_scale)),
                ("joint_pos", n, (self.dof_pos_scale,) * n),
                ("joint_vel", n, (self.dof_vel_scale,) * n),
                ("last_action", n, (1.0,) * n),
                ("jump_phase", 1, (1.0,)))

    @property
    def actor_obs_size(self) -> int:
        """What the actor reads: history_length frames of num_obs values."""
        return self.history_length * self.num_obs

    def with_actor_inputs(self, history_length: int = 1, actor_lin_vel: bool = False) -> "ObsConfig":
        """This config with the opt-in actor inputs; the sizes follow (the critic sees the frame it
        always saw, plus the base velocity and height)."""
        num_obs = 48 + 3 * bool(actor_lin_vel)
        return dataclasses.replace(self, history_length=int(history_length), actor_lin_vel=bool(actor_lin_vel),
                                   num_obs=num_obs, num_privileged_obs=num_obs + 4)


@dataclass(frozen=True)
class RewardConfig:
    tracking_sigma: float = 0.25
    # The yaw-rate term's own width; None: tracking_sigma, as the seed (one width for both terms).
    tracking_sigma_yaw: float | None = None
    base_height_target: float = 0.3  # nominal height: the height command at reset
    # Scales as in the seed README; each is multiplied by dt before use.
    scales: tuple = (
        ("tracking_lin_vel", 1.0),
        ("tracking_ang_vel", 0.2),
        ("lin_vel_z", -1.0),
        ("base_height", -50.0),
        ("action_rate", -0.005),
        ("similar_to_default", -0.1),
    )
    # The reference's jump terms (mjx_env/rewards.py); they count only with command.jumps_enabled.
    jump_scales: tuple = (
        ("jump_height_tracking", 0.5),
        ("jump_height_achievement", 10.0),
        ("jump_speed", 1.0),
        ("jump_landing", 0.08),
    )
    jump_peak_window: tuple = (0.3, 0.6)   # peak terms: lo N <= counter < hi N; landing: counter >= hi N
    jump_height_tolerance: float = 0.2     # achievement: |z - target| below this (m)
    jump_speed_gain: float = 0.2           # jump_speed = gain exp(v_z)
    jump_speed_vz_cap: float = 10.0        # v_z above this (m/s) counts as this (keeps exp finite)

    @property
    def yaw_sigma(self) -> float:
        return self.tracking_sigma if self.tracking_sigma_yaw is None else self.tracking_sigma_yaw


@dataclass(frozen=True)
class CommandConfig:
    num_commands: int = 5
    lin_vel_x_range: tuple = (-1.0, 2.0)
    lin_vel_y_range: tuple = (-0.5, 0.5)
    ang_vel_range: tuple = (-0.6, 0.6)
    height_range: tuple = (0.2, 0.4)
    jump_range: tuple = (0.5, 1.5)
    nominal_height: float = 0.3
    resampling_time_s: float = 4.0   # every 200 control steps
    # Each control step a random share of envs gets fresh commands (reference: 5%).
    random_resample_prob: float = 0.05
    # Jump commands are off by default: the seed lists only the six locomotion rewards.
    # When on (train.py --jumps), a random share of envs gets a jump command each step, the
    # penalty terms pause while the jump window is open and the four jump rewards count (as in
    # the reference; mjx_env/rewards.py).
    jumps_enabled: bool = False
    jump_prob: float = 0.05
    jump_reward_steps: int = 50
    # When set, commands are held at this value (play / evaluation / data collection).
    fixed: tuple | None = None
    # Training shapes commands as the reference does; evaluation turns these off to sample
    # exactly the ranges it asks for.
    height_scales_velocity: bool = True    # velocity commands x (0.5 + 0.5 |h - nominal| / span)
    reset_height_to_nominal: bool = True   # the height command at reset is the nominal height

    def resample_every(self, dt: float) -> int:
        return int(round(self.resampling_time_s / dt))

    def velocity_scale(self, height):
        """The factor on the drawn velocity commands at this height command (height_scales_velocity):
        0.5 at the nominal height, 1 at the height range's top. Floats or JAX arrays."""
        span = max(self.height_range[1] - self.nominal_height, 1e-6)
        return 0.5 + 0.5 * abs(height - self.nominal_height) / span

    def ranges(self) -> tuple:
        """(field, (low, high)) of each command, in the command vector's order."""
        return tuple((f, getattr(self, f)) for f in
                     ("lin_vel_x_range", "lin_vel_y_range", "ang_vel_range", "height_range", "jump_range"))


@dataclass(frozen=True)
class RandomizationConfig:
    """Per-env physics drawn at every episode reset, pushes, and observation noise. All off by default
    (the seed's env). Each draw is uniform in its (low, high) range. Sources of the ranges:
      friction: legged_gym [0.5, 1.25], Playground Go1 [0.4, 1.0]; here [0.4, 1.25]. Written on the foot
        geoms and the floor alike, so that the pair's friction is the draw whatever their priorities;
      added base mass: Isaac Lab's Go2 velocity task [-1, 3] kg (legged_gym [-1, 1]);
      base centre-of-mass offset: Playground Go1 +-5 cm on each axis (Isaac Lab +-5 cm in x, y);
      link masses x[0.9, 1.1]: Playground Go1 (inertias scale with them here);
      kp, kd x[0.9, 1.1] per joint: motor strength as in walk-these-ways (legged_gym family);
      joint friction loss [0, 0.3] N m: around Menagerie's 0.2 (Playground scales it x[0.9, 1.1]);
      joint damping, armature x[0.9, 1.1]: Playground Go1 randomizes armature x[1.0, 1.05].
      feet's torsional and rolling friction: off (0, 0) unless asked for; Menagerie's Go2 feet have
        0.02 and 0.01 in condim-6 contacts, which slow a walker trained without them.
      drift: a steady horizontal acceleration of the whole robot per episode, each axis drawn in
        drift_accel_range (m/s^2; off (0, 0) unless asked for; --dr-range drift_accel_range=-1,1
        pulls as a slope of up to 6 degrees along each axis), so that walking at the commanded
        speed needs feedback on the robot's own velocity. drift_yaw_accel_range (rad/s^2, opt-in
        too) is its turning twin: a steady angular acceleration about the vertical.
      pushes: legged_gym kicks the base to up to 1 m/s every 15 s; here every U[5, 10] s, a kick of
        up to 1 m/s in a random horizontal direction, added to the base velocity.
      observation noise: legged_gym's noise scales and its uniform noise x noise_level x obs scale.
    MJX has no set_const: derived constants (body_invweight0, dof_invweight0) keep their nominal
    values on both backends (C MuJoCo's mj_setConst is not called either), so the two agree.
    """
    enabled: bool = False                      # the per-env physical parameters below
    friction_range: tuple = (0.4, 1.25)
    added_base_mass_range: tuple = (-1.0, 3.0)           # kg
    base_com_offset_range: tuple = (-0.05, 0.05)         # m, each axis
    link_mass_scale_range: tuple = (0.9, 1.1)
    kp_scale_range: tuple = (0.9, 1.1)
    kd_scale_range: tuple = (0.9, 1.1)
    joint_frictionloss_range: tuple = (0.0, 0.3)         # N m
    joint_damping_scale_range: tuple = (0.9, 1.1)
    joint_armature_scale_range: tuple = (0.9, 1.1)
    foot_torsional_friction_range: tuple = (0.0, 0.0)    # opt-in (train.py --rolling-friction)
    foot_rolling_friction_range: tuple = (0.0, 0.0)
    drift_accel_range: tuple = (0.0, 0.0)                # m/s^2, each horizontal axis (opt-in)
    drift_yaw_accel_range: tuple = (0.0, 0.0)            # rad/s^2, about the vertical (opt-in)
    push: bool = False
    push_interval_range_s: tuple = (5.0, 10.0)
    push_velocity_range: tuple = (0.0, 1.0)              # kick magnitude (m/s)
    obs_noise: bool = False
    noise_level: float = 1.0
    noise_ang_vel: float = 0.2
    noise_gravity: float = 0.05
    noise_dof_pos: float = 0.01
    noise_dof_vel: float = 1.5

    # The ranges checked besides the draws' (those, and which must stay >= 0, are in the table
    # mjx_env/randomize.py DRAWS: a new draw is one row there plus its range field here).
    PUSH_RANGES = ("push_interval_range_s", "push_velocity_range")

    def ranges(self) -> tuple:
        """(every (low, high) field, those that must not go below 0)."""
        from mjx_env.randomize import DRAWS
        return (tuple(d.range for d in DRAWS) + self.PUSH_RANGES,
                tuple(d.range for d in DRAWS if d.nonnegative) + ("push_velocity_range",))

    def validate(self) -> None:
        from mjx_env.errors import ConfigError

        ranges, nonnegative = self.ranges()
        for name in ranges:
            lo_hi = getattr(self, name)
            if len(lo_hi) != 2 or not all(math.isfinite(v) for v in lo_hi) or lo_hi[0] > lo_hi[1]:
                raise ConfigError(f"randomization.{name} must be a finite (low, high) with low <= high, got {lo_hi}")
            if name in nonnegative and lo_hi[0] < 0:
                raise ConfigError(f"randomization.{name} must not go below 0, got {lo_hi}")
        if self.push_interval_range_s[0] <= 0:
            raise ConfigError(f"randomization.push_interval_range_s must be > 0 s, got {self.push_interval_range_s}")
        for name in ("noise_level", "noise_ang_vel", "noise_gravity", "noise_dof_pos", "noise_dof_vel"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ConfigError(f"randomization.{name} must be >= 0 and finite, got {v}")


@dataclass(frozen=True)
class WarpConfig:
    """MJX's Warp implementation (--mjx-impl warp): its own solver cap and buffer sizes.

    Caps at which the solve converges, so that Warp agrees with C MuJoCo run at the same caps: at
    the model's iterations=4 C, MJX-JAX and Warp each stop short at hard landings, each at another
    point (qpos 1e-2 to 5e-2 apart); with joint friction loss (Menagerie's, or --randomize's draw)
    8 line-search iterations stop short too (C itself 3.4e-4 from its converged answer over 40
    control steps). Both solvers stop at their tolerance first (1-2 Newton iterations per step
    standing, up to 6 with friction loss), so a cap costs only where it binds. The JAX
    implementation keeps the model's 4 and 8, as C MuJoCo does: trained policies and digests depend
    on them. README, "MJX's Warp implementation", has the parity measured.
    """
    iterations: int = 20
    ls_iterations: int = 20
    # naconmax and njmax are the JAX implementation's per-world sizes (every possible contact and
    # constraint row) times this margin; naconmax is per world times num_envs.
    buffer_margin: float = 1.0
    # The env reads Warp's overflow bits on the host every this many control steps.
    overflow_check_every: int = 50

    def set_caps(self, m) -> None:
        """Give an MjModel these solver caps (Warp's model, or C MuJoCo's reference in parity checks)."""
        m.opt.iterations, m.opt.ls_iterations = self.iterations, self.ls_iterations


@dataclass(frozen=True)
class TaskConfig:
    env: EnvConfig = field(default_factory=EnvConfig)
    obs: ObsConfig = field(default_factory=ObsConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    command: CommandConfig = field(default_factory=CommandConfig)
    randomization: RandomizationConfig = field(default_factory=RandomizationConfig)

    def validate(self) -> None:
        """Raise ConfigError naming the first insane value."""
        from mjx_env.errors import ConfigError

        e, c, r = self.env, self.command, self.reward
        for name, lo_hi in c.ranges():
            lo, hi = lo_hi
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise ConfigError(f"command.{name} must be a finite (low, high) with low <= high, got {lo_hi}")
        for name, v in (("tracking_sigma", r.tracking_sigma), ("tracking_sigma_yaw", r.yaw_sigma)):
            if not (math.isfinite(v) and v > 0):
                raise ConfigError(f"reward.{name} must be a positive finite number, got {v}")
        for name, v in r.scales + r.jump_scales:
            if not math.isfinite(v):
                raise ConfigError(f"reward scale {name} must be finite, got {v}")
        for name in ("dt", "sim_dt", "action_scale", "kp", "clip_actions", "episode_length_s"):
            v = getattr(e, name)
            if not (math.isfinite(v) and v > 0):
                raise ConfigError(f"env.{name} must be a positive finite number, got {v}")
        if e.kd < 0 or not math.isfinite(e.kd):
            raise ConfigError(f"env.kd must be >= 0 and finite, got {e.kd}")
        if abs(e.substeps * e.sim_dt - e.dt) > 1e-9:
            raise ConfigError(f"env.sim_dt ({e.sim_dt}) must divide the control period dt ({e.dt})")
        if set(dict(e.default_joint_angles)) != set(JOINT_NAMES):
            raise ConfigError(f"env.default_joint_angles must name exactly the 12 joints {JOINT_NAMES}")
        if not 0.0 <= c.random_resample_prob <= 1.0 or not 0.0 <= c.jump_prob <= 1.0:
            raise ConfigError("command resample and jump probabilities must lie in [0, 1]")
        if c.jump_reward_steps < 1:
            raise ConfigError(f"command.jump_reward_steps must be >= 1, got {c.jump_reward_steps}")
        lo, hi = r.jump_peak_window
        if not 0.0 <= lo <= hi <= 1.0:
            raise ConfigError(f"reward.jump_peak_window must be (lo, hi) with 0 <= lo <= hi <= 1, got {(lo, hi)}")
        if c.fixed is not None and len(c.fixed) != c.num_commands:
            raise ConfigError(f"command.fixed needs {c.num_commands} values, got {len(c.fixed)}")
        o = self.obs
        if isinstance(o.history_length, bool) or not isinstance(o.history_length, int) or o.history_length < 1:
            raise ConfigError(f"obs.history_length must be an integer >= 1, got {o.history_length!r}")
        frame = sum(size for _, size, _ in o.policy_layout(e.num_actions))
        if o.num_obs != frame or o.num_privileged_obs != frame + 4:
            raise ConfigError(f"obs.num_obs ({o.num_obs}) and num_privileged_obs ({o.num_privileged_obs}) must be "
                              f"{frame} and {frame + 4} for this layout (ObsConfig.with_actor_inputs sets them)")
        if not (math.isfinite(o.lin_vel_noise) and o.lin_vel_noise >= 0):
            raise ConfigError(f"obs.lin_vel_noise must be >= 0 and finite, got {o.lin_vel_noise}")
        self.randomization.validate()

    def replace(self, **sections) -> "TaskConfig":
        return dataclasses.replace(self, **sections)

    def to_dict(self) -> dict:
        """Plain values for JSON (train.py --print-config); from_dict gives the same config back."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TaskConfig":
        """The config of a to_dict (or of its JSON: lists become the tuples the dataclasses hold)."""
        def tuples(v):
            return tuple(tuples(x) for x in v) if isinstance(v, (list, tuple)) else v

        sections = {}
        for f in dataclasses.fields(cls):
            section = f.default_factory
            names = {g.name for g in dataclasses.fields(section)}
            unknown = set(d[f.name]) - names
            if unknown:
                from mjx_env.errors import ConfigError
                raise ConfigError(f"{f.name} has no field {sorted(unknown)[0]!r}: a config of another version")
            sections[f.name] = section(**{k: tuples(v) for k, v in d[f.name].items()})
        return cls(**sections)
