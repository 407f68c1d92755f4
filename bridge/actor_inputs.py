"""What an actor reads, recorded in every checkpoint and exported actor (key 'actor_inputs')."""
from __future__ import annotations

from dataclasses import dataclass

from mjx_env.errors import UserError


@dataclass(frozen=True)
class ActorInputs:
    """What an actor reads: history_length frames of policy observations (48 values, 51 with the
    measured base velocity), and whether it estimates its velocity from them. Recorded in every
    checkpoint and exported actor (key 'actor_inputs'); play and collect take it from there."""
    history_length: int = 1
    actor_lin_vel: bool = False
    estimator: bool = False

    @property
    def frame(self) -> int:
        return 48 + 3 * self.actor_lin_vel

    @property
    def size(self) -> int:
        return self.history_length * self.frame

    def __str__(self) -> str:
        parts = [f"{self.history_length} frame{'s' * (self.history_length > 1)} of {self.frame}"]
        parts += ["the measured base velocity"] * self.actor_lin_vel + ["a velocity estimator"] * self.estimator
        return ", ".join(parts)

    @classmethod
    def of(cls, ckpt: dict) -> "ActorInputs":
        """The recorded inputs, or for files from before the options, the seed's one frame of 48."""
        rec = ckpt.get("actor_inputs")
        if rec is not None:
            return cls(**rec)
        return cls(estimator=any(k.startswith("estimator.") for k in ckpt["actor_state_dict"]))

    @classmethod
    def from_flags(cls, args) -> "ActorInputs":
        return cls(int(args.history), bool(args.actor_lin_vel), bool(args.estimator))

    def check(self, given: "ActorInputs", path, what: str = "checkpoint") -> None:
        """One-line refusal when a file's inputs are not the ones a run is set up for."""
        if given != self:
            raise UserError(f"{what} {path} reads {self}, but this run is set up for {given}: "
                            "use the --history/--actor-lin-vel/--estimator flags it was trained with")
