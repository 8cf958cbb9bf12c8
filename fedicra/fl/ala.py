"""Adaptive Local Aggregation (ALA, Zhang et al. AAAI 2023; reference 4.7), a reusable client-side merge.

When a client receives the global model, ALA loads it and then mixes a chosen parameter set P (by
default the decoder `up1..up4` + `out_conv`) element-wise between the client's previous local values
and the received global values. The mixing weights W (one tensor per parameter, values in [0, 1]) are
learned by gradient descent on the client's partial cross-entropy, on its own training batches:

    intended (FedALA):  T = L + (G - L) * W,  W <- clip(W - eta * dLoss/dT * (G - L), 0, 1)
                        W starts at ones (pure global) and persists across rounds in `client.state`.
    faithful (upstream FedICRA): T = G + (L - G) * W (roles swapped: W = 1 means local) and W is reset
                        to ones at every call (upstream's persistence check never fires, quirk 3/4).

The first non-skipped call is a "start phase": whole epochs until more than `window` epochs ran and the
standard deviation of the last `window` epoch-final losses is below `threshold`, capped at
`max_start_epochs` (upstream has no cap; the cap keeps CPU runs bounded). Later calls run one epoch.
ALA is skipped (pure global model kept) while `round_iter <= skip_iters` (upstream: `iter_global <= 50`;
intended: the same fraction of the run, see `resolve_ala`) or when the local and global values of P are identical (nothing to mix, e.g. the first round).

ALA's batches come from `client.batch` on an epoch counter far from the training counter, so they are
seeded and repeatable but drawn independently of the training batches, and they do not advance the
client's step (the learning-rate schedule).
"""
from __future__ import annotations

import copy
from typing import Any, Callable

import numpy as np
import torch

from fedicra.errors import UserError
from fedicra.fl import schedule
from fedicra.fl.hyperparameters import Param
from fedicra.fl.method import load_shared
from fedicra.seeding import Stream  # ALA epochs draw their batches from their own stream
from fedicra.models.groups import is_decoder
STATE_KEY = "ala"


# Default mixed set P: parameters of decoder.up1..4 and decoder.out_conv (aux heads excluded).
decoder_mixed = is_decoder

# The hyper-parameters of every method that merges with ALA (FedALA, FedICRA).
ALA_PARAMS = {
    "eta": Param(1.0, "ALA learning rate of the mixing weights", low=0, low_open=True),
    "threshold": Param(0.1, "start phase ends when the std of the last `window` epoch losses is below this", low=0),
    "window": Param(10, "epochs in the start phase's convergence window", low=1),
    "skip_iters": Param(None, "no ALA while the round's iteration count is <= this (upstream 50 of 30,000; "
                              "null = the same fraction of the run)", kind=int, low=0),
    "max_start_epochs": Param(50, "cap on the start phase's epochs (upstream has none)", low=1),
}


def resolve_ala(config: dict) -> dict:
    """Upstream's warm-up (iter_global <= 50 of 30,000) as the same fraction of this run's iterations."""
    return {"skip_iters": schedule.iterations(50, config)}


class AdaptiveAggregation:
    """Element-wise adaptive mixing of the received global model into the local one.

    `mixed(name)` selects the parameters in P. `merge(client, global_arrays, round_iter)` loads the
    received arrays into `client.model` (entries the client's method marks personal are kept) and then
    replaces P by the learned mix. Method state lives in `client.state[state_key]` (torch-saveable).
    """

    @classmethod
    def from_params(cls, hp: dict, faithful: bool) -> "AdaptiveAggregation":
        return cls(eta=hp["eta"], threshold=hp["threshold"], window=hp["window"], skip_iters=hp["skip_iters"],
                   max_start_epochs=hp["max_start_epochs"], faithful=faithful)

    def __init__(self, mixed: Callable[[str], bool] = decoder_mixed, eta: float = 1.0, threshold: float = 0.1,
                 window: int = 10, skip_iters: int = 50, max_start_epochs: int = 50, faithful: bool = False,
                 state_key: str = STATE_KEY):
        for option, value in (("window", window), ("max_start_epochs", max_start_epochs)):
            if value < 1:
                raise UserError(f"method_params.{option}: must be at least 1 for adaptive aggregation, got {value}")
        if eta <= 0:
            raise UserError(f"method_params.eta: must be positive for adaptive aggregation, got {eta}")
        self.mixed, self.eta, self.threshold, self.window = mixed, float(eta), float(threshold), int(window)
        self.skip_iters, self.max_start_epochs = int(skip_iters), int(max_start_epochs)
        self.faithful, self.state_key = faithful, state_key

    # ------------------------------------------------------------------ state
    def state(self, client) -> dict[str, Any]:
        return client.state.setdefault(self.state_key, {"weights": None, "started": False, "epochs": 0,
                                                        "calls": 0})

    # ------------------------------------------------------------------ the merge
    def merge(self, client, global_arrays: dict[str, torch.Tensor], round_iter: int) -> dict[str, Any]:
        """Load `global_arrays` and mix P adaptively.

        Returns {"skipped": reason or "", "epochs": epochs run, "loss": last ALA batch loss,
        "weight_start"/"weight_end": mean of W before and after this call, "gap_to_global": mean
        |merged - received| over P (the last two only when not skipped)}.
        """
        model = client.model
        params = dict(model.named_parameters())
        names = [n for n in params if self.mixed(n)]
        local = {n: params[n].detach().clone() for n in names}
        load_shared(model, global_arrays, client.method.is_personal)
        glob = {n: params[n].detach().clone() for n in names}
        st = self.state(client)
        if round_iter <= self.skip_iters:
            return {"skipped": "warm-up", "epochs": 0, "loss": float("nan")}
        if all(torch.equal(local[n], glob[n]) for n in names):
            return {"skipped": "identical", "epochs": 0, "loss": float("nan")}

        if self.faithful or st["weights"] is None:
            weights = {n: torch.ones_like(glob[n]) for n in names}
        else:
            weights = {n: st["weights"][n].to(glob[n].device).clone() for n in names}
        start_mean = _mean(weights)
        # base + delta * W: intended base = local, delta = global - local; faithful the roles are swapped.
        base, other = (glob, local) if self.faithful else (local, glob)
        delta = {n: other[n] - base[n] for n in names}

        temp = copy.deepcopy(model)   # BatchNorm statistics the ALA passes update stay in the copy
        temp.train()
        temp_params = dict(temp.named_parameters())
        for name, param in temp_params.items():
            param.requires_grad_(name in delta)

        def write_mix():
            with torch.no_grad():
                for n in names:
                    temp_params[n].copy_(base[n] + delta[n] * weights[n])

        write_mix()
        start_phase = not st["started"]
        epoch_losses: list[float] = []
        with client.random_state():
            while True:
                last = self._epoch(client, temp, temp_params, names, weights, delta, write_mix, st)
                epoch_losses.append(last)
                if not start_phase:
                    break
                converged = (len(epoch_losses) > self.window
                             and float(np.std(epoch_losses[-self.window:])) < self.threshold)
                if converged or len(epoch_losses) >= self.max_start_epochs:
                    break
        st["started"] = True
        st["calls"] += 1
        if not self.faithful:
            st["weights"] = {n: w.detach().cpu().clone() for n, w in weights.items()}
        with torch.no_grad():
            for n in names:
                params[n].copy_(temp_params[n])
        gap = sum(float((params[n].detach() - glob[n]).abs().sum()) for n in names) / sum(glob[n].numel() for n in names)
        return {"skipped": "", "epochs": len(epoch_losses), "loss": epoch_losses[-1],
                "weight_start": start_mean, "weight_end": _mean(weights), "gap_to_global": gap}

    def _epoch(self, client, temp, temp_params, names, weights, delta, write_mix, st) -> float:
        """One pass over the client's training batches; returns the last batch's loss."""
        from fedicra.losses import partial_cross_entropy

        per_epoch = client.batches_per_epoch
        loss_value = float("nan")
        for position in range(per_epoch):
            batch = client.batch(st["epochs"] * per_epoch + position, phase=Stream.ALA)
            for n in names:
                temp_params[n].grad = None
            output = temp(batch["image"], aux=False)
            loss = partial_cross_entropy(output["logits"], batch["label"],
                                         ignore_index=client.manifest.num_classes)
            loss.backward()
            with torch.no_grad():
                for n in names:
                    grad = temp_params[n].grad
                    if grad is not None:
                        weights[n].sub_(self.eta * grad * delta[n]).clamp_(0.0, 1.0)
            write_mix()
            loss_value = float(loss.detach())
        st["epochs"] += 1
        return loss_value


def round_metrics(info: dict[str, Any] | None) -> dict[str, float]:
    """The last merge as training metrics (so a run's replies show whether ALA ran and moved)."""
    info = info or {}
    metrics = {"ala_epochs": float(info.get("epochs", 0))}
    for key in ("weight_start", "weight_end", "gap_to_global"):
        if key in info:
            metrics[f"ala_{key}"] = float(info[key])
    return metrics


def _mean(weights: dict[str, torch.Tensor]) -> float:
    total = sum(float(w.sum()) for w in weights.values())
    return total / max(1, sum(w.numel() for w in weights.values()))
