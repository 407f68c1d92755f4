"""DynaFlow (arXiv 2509.19804) on this project's demonstrations, in torch, with Φ the demos' own physics.

    python collect_trajectories.py --episodes 16 --num_envs 16 --duration 4 --vx 0.3 1.0 --out walk.npz
    python examples/train_dynaflow.py walk.npz --steps 300 --horizon 16 --batch 32 --json dynaflow.json

A flow model over state windows whose network outputs ACTIONS: given a noisy window x_t of H+1
states (row 0 replaced by the clean x0, which is known), the flow time t and the conditioning
(the NPZ's row of x0: gravity, velocities, joints, command), the network predicts the H applied
actions U; the window it proposes is X̂ = Φ(x0, U) (TorchDynamics.phi: the env's physics, gradients
through the JAX VJP). The loss is the conditional matching loss on states, |X̂ - X_demo|² in
normalised units (the endpoint-predicting form of flow matching, x_t = (1 - t) ε + t X_demo). Sampling
is the one-step ODE: from ε at t = 0, one Euler step to t = 1 lands on the predicted endpoint, Φ(x0, U).
So every sample is a physically consistent window by construction.

The network's output is bounded (tanh) and mapped onto the range of the applied actions the NPZ
records (applied_action_min/max, widened by --action-margin): U = mid + half · tanh(y).

Windows are split into train and held-out sets by episode (every --heldout-every-th episode is
held out). Reported, on held-out windows, in normalised state units (each of the 37 state entries
divided by its spread over the training windows; RMS over the H predicted states):
  heldout_state_rms     DynaFlow: one-step samples through Φ
  hold_x0               baseline: every state of the window equals x0
  direct                baseline: the same network and budget, predicting the states themselves
  direct_physical_residual  how far the nearest action sequence through Φ (Adam on U, from the mean
                        action) gets from the direct baseline's states: 0 would be physically consistent
  floor                 Φ driven by the recorded applied actions (what Φ itself costs)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # run from anywhere in the checkout


# ---- data ----------------------------------------------------------------------------------------
def load_windows(path, horizon: int, heldout_every: int):
    """Windows (x: (N, H+1, 37) states, u: (N, H, 12) applied actions, c: (N, 36) conditioning of x0),
    split by episode into train and held-out sets; and the NPZ itself."""
    from mjx_env.errors import UserError
    path = Path(path)
    if not path.is_file() or path.suffix != ".npz":
        raise UserError(f"{path}: need an NPZ dataset (python collect_trajectories.py --out demos.npz)")
    z = np.load(path, allow_pickle=True)
    if "applied_action_min" not in z.files:
        raise UserError(f"{path} has no applied-action statistics: collect or convert it again with this checkout")
    # An NpzFile reads (and unpickles) a key's whole array on every access: read each one once.
    states, actions, conds = z["states"], z["applied_actions"], z["conditionings"]
    if states[0].shape[1] != 37:
        raise UserError(f"{path}: states must have 37 entries (qpos then qvel of the Go2)")
    sets = {"train": ([], [], []), "heldout": ([], [], [])}
    for e, T in enumerate(z["episode_lengths"]):
        key = "heldout" if e % heldout_every == heldout_every - 1 else "train"
        for t in range(int(T) - horizon):                 # states t..t+H, applied actions t..t+H-1
            sets[key][0].append(states[e][t:t + horizon + 1])
            sets[key][1].append(actions[e][t:t + horizon])
            sets[key][2].append(conds[e][t])
    for key, (x, _, _) in sets.items():
        if not x:
            raise UserError(f"{path}: no {key} windows of H = {horizon} (episodes: {len(states)}, lengths "
                            f"{z['episode_lengths'].tolist()}); use more or longer episodes, or a shorter --horizon")
    out = {k: tuple(np.stack(a).astype(np.float32) for a in v) for k, v in sets.items()}
    return z, out["train"], out["heldout"]


# ---- the network -----------------------------------------------------------------------------------
def optimizer(params, args):
    """Adam at --lr; with --lr-schedule cosine, a scheduler that decays it to 0 over --steps (the late,
    small steps average out the minibatch noise). Returns (optimizer, scheduler or None)."""
    import torch
    opt = torch.optim.Adam(params, lr=args.lr)
    if args.lr_schedule == "constant":
        return opt, None
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(args.steps, 1))


def mlp(n_in, n_out, width, depth=3):
    import torch.nn as nn
    layers, n = [], n_in
    for _ in range(depth):
        layers += [nn.Linear(n, width), nn.SiLU()]
        n = width
    layers.append(nn.Linear(n, n_out))
    return nn.Sequential(*layers)


class FlowNet:
    """f(x_t, t, c) -> y, with x_t the noisy normalised window (row 0 the clean x0)."""

    def __init__(self, H, n_out, width, device, seed):
        import torch
        torch.manual_seed(seed)
        self.net = mlp((H + 1) * 37 + 1 + 36, n_out, width).to(device)

    def __call__(self, xt, t, c):
        import torch
        return self.net(torch.cat([xt.flatten(1), t[:, None], c], dim=1))


class Trainer:
    def __init__(self, args, z, train, heldout):
        import torch

        from bridge.dynamics import TorchDynamics
        from mjx_env.config import TaskConfig
        from demos.npz import env_config
        from mjx_env.dynamics import Go2Dynamics

        self.args, self.dev, H, B = args, torch.device(args.device), args.horizon, args.batch
        t = lambda a: torch.as_tensor(a, device=self.dev)                                  # noqa: E731
        self.train = [t(a) for a in train]
        self.heldout = [t(a) for a in heldout]
        flat = self.train[0].reshape(-1, 37)
        self.mean, self.std = flat.mean(0), flat.std(0).clamp_min(1e-3)
        self.cmean, self.cstd = self.train[2].mean(0), self.train[2].std(0).clamp_min(1e-3)
        lo, hi = t(z["applied_action_min"]).float(), t(z["applied_action_max"]).float()
        self.mid = (hi + lo) / 2
        self.half = (hi - lo) / 2 * (1 + args.action_margin) + 1e-3
        xml = args.xml_path or str(z["model_path"])
        self.dyn = Go2Dynamics(xml, TaskConfig(env=env_config(z)))
        self.phi = TorchDynamics(self.dyn).phi
        self.B, self.H = B, H
        self.gen = torch.Generator(device=self.dev).manual_seed(args.seed)

    def norm(self, x):
        return (x - self.mean) / self.std

    def actions(self, y):
        """A bounded output onto the recorded range of the applied actions (README)."""
        import torch
        return self.mid + self.half * torch.tanh(y.view(-1, self.H, 12))

    def propose(self, net, xt, t, c, x0, direct: bool):
        """The window a network proposes, normalised, rows 1..H (row 0 is x0 for both)."""
        y = net(xt, t, (c - self.cmean) / self.cstd)
        if direct:
            return y.view(-1, self.H, 37)
        X = self.phi(x0, self.actions(y))
        return self.norm(X[:, 1:])

    def noisy(self, x, t, eps):
        """x_t = (1 - t) ε + t x in normalised units, row 0 replaced by the clean x0."""
        xn = self.norm(x)
        xt = (1 - t[:, None, None]) * eps + t[:, None, None] * xn
        return xt.clone().index_copy_(1, _zero_index(xt), xn[:, :1])

    def batch(self, data, idx, t=None, eps=None):
        import torch
        x, _, c = (a[idx] for a in data)
        n = len(idx)
        t = torch.rand(n, generator=self.gen, device=self.dev) if t is None else t
        eps = torch.randn(x.shape, generator=self.gen, device=self.dev) if eps is None else eps
        return x, c, self.noisy(x, t, eps), t

    def loss(self, net, direct, x, c, xt, t):
        pred = self.propose(net, xt, t, c, x[:, 0], direct)
        return ((pred - self.norm(x[:, 1:])) ** 2).mean()

    def fit(self, direct: bool):
        """Train one network for --steps; its per-step losses and its loss on a fixed train batch before
        and after (same noise, same t: the loss falls iff the network learnt)."""
        import torch
        a = self.args
        net = FlowNet(self.H, self.H * (37 if direct else 12), a.width, self.dev, a.seed)
        opt, sched = optimizer(net.net.parameters(), a)
        n = len(self.train[0])
        fixed = self.batch(self.train, torch.arange(self.B, device=self.dev) % n)     # B long: one Φ shape
        with torch.no_grad():
            before = float(self.loss(net, direct, *fixed))
        losses, t0 = [], time.perf_counter()
        for step in range(a.steps):
            idx = torch.randint(0, n, (self.B,), generator=self.gen, device=self.dev)
            loss = self.loss(net, direct, *self.batch(self.train, idx))
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            losses.append(loss.item())
            if a.print_every and (step % a.print_every == 0 or step == a.steps - 1):
                print(f"[{'direct' if direct else 'dynaflow'}] step {step:5d} loss {losses[-1]:.4f} "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)
        with torch.no_grad():
            after = float(self.loss(net, direct, *fixed))
        return net, {"losses": losses, "fixed_batch_loss": [before, after], "seconds": time.perf_counter() - t0}

    def heldout_batches(self):
        """Held-out windows in batches of exactly B (the last one wraps around), so that Φ keeps one shape."""
        import torch
        n = len(self.heldout[0])
        idx = torch.arange(n, device=self.dev)
        for s in range(0, n, self.B):
            take = (idx[s:s + self.B].tolist() + list(range(self.B)))[:self.B]
            yield torch.tensor([i % n for i in take], device=self.dev), min(self.B, n - s)

    def evaluate(self, dynaflow, direct):
        """Held-out normalised state RMS of the one-step samples, the baselines, and Φ's floor."""
        import torch
        sq = {"dynaflow": 0.0, "direct": 0.0, "hold_x0": 0.0, "floor": 0.0}
        count, first_direct = 0, None
        gen = torch.Generator(device=self.dev).manual_seed(self.args.seed + 1)
        with torch.no_grad():
            for idx, keep in self.heldout_batches():
                x, u, c = (a[idx] for a in self.heldout)
                eps = torch.randn(x.shape, generator=gen, device=self.dev)
                xt = self.noisy(x, torch.zeros(len(idx), device=self.dev), eps)   # t = 0: pure noise
                t0 = torch.zeros(len(idx), device=self.dev)
                target = self.norm(x[:, 1:])
                preds = {"dynaflow": self.propose(dynaflow, xt, t0, c, x[:, 0], False),
                         "direct": self.propose(direct, xt, t0, c, x[:, 0], True),
                         "hold_x0": self.norm(x[:, :1]).expand_as(target),
                         "floor": self.norm(self.phi(x[:, 0], u)[:, 1:])}
                for k, p in preds.items():
                    sq[k] += float(((p[:keep] - target[:keep]) ** 2).sum())
                if first_direct is None:
                    first_direct = (x[:, 0], preds["direct"], keep)
                count += keep * self.H * 37
        rms = {k: (v / count) ** 0.5 for k, v in sq.items()}
        rms["direct_physical_residual"], rms["residual_windows"] = self.physical_residual(*first_direct)
        return rms

    def physical_residual(self, x0, states_n, keep):
        """RMS (normalised) between the direct baseline's states and Φ(x0, U*), U* fitted by Adam."""
        import torch
        U = self.mid.expand(len(x0), self.H, 12).clone().requires_grad_()
        opt = torch.optim.Adam([U], lr=self.args.residual_lr)
        target = states_n.detach()
        for _ in range(self.args.residual_iters):
            err = ((self.norm(self.phi(x0, U)[:, 1:]) - target)[:keep] ** 2).mean()
            opt.zero_grad()
            err.backward()
            opt.step()
        with torch.no_grad():
            err = ((self.norm(self.phi(x0, U)[:, 1:]) - target)[:keep] ** 2).mean()
        return float(err) ** 0.5, keep


def _zero_index(xt):
    import torch
    return torch.zeros(1, dtype=torch.long, device=xt.device)


def run(args) -> dict:
    from mjx_env.errors import UserError
    for name in ("steps", "horizon", "batch", "width", "heldout_every"):
        if getattr(args, name) < (0 if name == "steps" else 1):
            raise UserError(f"--{name.replace('_', '-')} must be >= {0 if name == 'steps' else 1}, "
                            f"got {getattr(args, name)}")
    if args.heldout_every < 2:
        raise UserError(f"--heldout-every must be >= 2 (one episode in N is held out), got {args.heldout_every}")
    if args.json:
        from mjx_env.files import check_folder
        check_folder(args.json)               # before the minutes of training, not after them
    import torch
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {args.device}: torch sees no CUDA device; use --device cpu")
    z, train, heldout = load_windows(args.data, args.horizon, args.heldout_every)
    tr = Trainer(args, z, train, heldout)
    t0 = time.perf_counter()
    dynaflow, log_flow = tr.fit(direct=False)
    direct, log_direct = tr.fit(direct=True)
    rms = tr.evaluate(dynaflow, direct)
    out = {"data": str(args.data), "horizon": args.horizon, "batch": args.batch, "steps": args.steps,
           "lr": args.lr, "lr_schedule": args.lr_schedule,
           "train_windows": len(train[0]), "heldout_windows": len(heldout[0]),
           "heldout_state_rms": rms["dynaflow"],
           "baselines": {"hold_x0": rms["hold_x0"], "direct": rms["direct"],
                         "direct_physical_residual": rms["direct_physical_residual"],
                         "residual_windows": rms["residual_windows"], "residual_iters": args.residual_iters},
           "floor_recorded_actions": rms["floor"],
           "dynaflow": log_flow, "direct": log_direct, "seconds": time.perf_counter() - t0}
    return out


def parse_args(argv=None):
    from mjx_env.errors import OneLineParser
    p = OneLineParser(prog="train_dynaflow.py", description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="NPZ dataset of collect_trajectories.py")
    p.add_argument("--steps", type=int, default=300, help="Adam steps for each of the two networks")
    p.add_argument("--horizon", type=int, default=16, help="H: states per window after x0")
    p.add_argument("--batch", type=int, default=32, help="windows per step (also Φ's batch in evaluation)")
    p.add_argument("--device", default="cpu", help="torch device of the networks (Φ follows the tensors)")
    p.add_argument("--json", default=None, metavar="OUT", help="write the figures (key heldout_state_rms) here")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate at the first step")
    p.add_argument("--lr-schedule", dest="lr_schedule", choices=("cosine", "constant"), default="cosine",
                   help="cosine: decay to 0 over --steps (default); constant: --lr throughout")
    p.add_argument("--width", type=int, default=256, help="hidden units of the MLP")
    p.add_argument("--heldout-every", dest="heldout_every", type=int, default=4,
                   help="hold out every N-th episode")
    p.add_argument("--action-margin", dest="action_margin", type=float, default=0.05,
                   help="widen the recorded action range by this fraction for the tanh output")
    p.add_argument("--residual-iters", dest="residual_iters", type=int, default=100,
                   help="Adam steps fitting actions to the direct baseline's states")
    p.add_argument("--residual-lr", dest="residual_lr", type=float, default=0.05,
                   help="Adam step size of that fit (default 0.05)")
    p.add_argument("--xml-path", dest="xml_path", default=None, help="model file (default: the NPZ's model_path)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the model's weights and of the flow's noise (default 0)")
    p.add_argument("--print-every", dest="print_every", type=int, default=25, help="steps between printed losses")
    return p, p.parse_args(argv)


def main(argv=None) -> int:
    from mjx_env.errors import UserError
    p, args = parse_args(argv)
    try:
        out = run(args)
    except UserError as exc:
        print(f"{p.prog}: error: {exc}", file=sys.stderr)
        return 2
    b = out["baselines"]
    print(f"held-out normalised state RMS over {out['heldout_windows']} windows (H = {out['horizon']}): "
          f"DynaFlow {out['heldout_state_rms']:.4f} | hold x0 {b['hold_x0']:.4f} | direct {b['direct']:.4f} "
          f"(its physical residual {b['direct_physical_residual']:.4f} over {b['residual_windows']} windows) | "
          f"recorded actions through Φ {out['floor_recorded_actions']:.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
