"""The method plugin API.

A method is one class in `methods/<name>.py`, decorated with `@register`. The base class is plain
FedAvg: every hook below has FedAvg's behaviour, so a method overrides only where it really differs.

Class attributes (declarative):
    name              registry key, used in configs (`method: fedbn`)
    model             model factory name (`unet`, `unet_lc`, `unet_lc_multihead`)
    hyperparameters   {name: default}; values given in a config are checked against the default's type
    personal          module paths whose parameters AND buffers never leave the client
                      (e.g. `("decoder.out_conv",)`)
    personal_types    module types whose every instance stays local (e.g. BatchNorm for FedBN);
                      override `is_personal` for any other predicate
    topology          "sites": one client per site (federated or local);
                      "pooled": one client trains on the union of all sites (centralized baselines)
    labels            None = the run's annotation assignment; "mask" = full masks (upper bounds)
    has_global_model  whether the server holds one global model worth scoring on every site

Client hooks (run on the site, with `client` = `fedicra.fl.client.Client`):
    init_client(client)                   create per-client method state in `client.state`
    receive(client, arrays)               merge what the server sent into the client's model
    train_round(client, config)           the local work of one round (default: `client.train_steps`)
    trainable(client, step_in_round)      predicate on parameter names, or None for all
    make_optimizer(client, model)         optimizer, re-created every round as upstream does
    loss(client, batch, output)           (loss tensor, {name: float}) for one batch
    upload(client)                        the arrays that leave the client (default: non-personal state)
    client_extras(client)                 statistics for the server (not parameters), e.g. BN moments
    personalized_model(client)            the model scored for this site (default: `client.model`)

Server hooks (run on the server, with `server` = `fedicra.fl.server.ServerState`):
    init_server(server)                   create server-side method state in `server.state`
    payload(server, site)                 the arrays sent to one site this round (default: global model)
    aggregate(server, replies)            update `server.global_state` / `server.state` from replies
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, ClassVar

import torch

from fedicra.errors import UserError

if TYPE_CHECKING:
    from fedicra.fl.client import Client
    from fedicra.fl.server import Reply, ServerState

Arrays = dict[str, torch.Tensor]


class Method:
    name: ClassVar[str] = ""
    model: ClassVar[str] = "unet"
    hyperparameters: ClassVar[dict[str, Any]] = {}
    personal: ClassVar[tuple[str, ...]] = ()
    personal_types: ClassVar[tuple[type, ...]] = ()
    topology: ClassVar[str] = "sites"
    labels: ClassVar[str | None] = None
    has_global_model: ClassVar[bool | None] = None   # None: True exactly when no state entry is personal
    description: ClassVar[str] = ""

    def __init__(self, params: dict[str, Any] | None = None, faithful: bool = False):
        self.faithful = faithful
        self.hp = self.validate_params(params or {})

    # ------------------------------------------------------------------ hyper-parameters
    @classmethod
    def validate_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(params) - set(cls.hyperparameters))
        if unknown:
            known = ", ".join(sorted(cls.hyperparameters)) or "none"
            raise UserError(f"method_params: {cls.name} has no parameter {unknown[0]!r} (known: {known})")
        values = dict(cls.hyperparameters)
        for key, value in params.items():
            default = cls.hyperparameters[key]
            if isinstance(default, bool) != isinstance(value, bool) or (
                default is not None and not isinstance(value, type(default))
                and not (isinstance(default, float) and isinstance(value, int))
            ):
                raise UserError(f"method_params.{key}: expected {type(default).__name__} for {cls.name}, got {value!r}")
            values[key] = float(value) if isinstance(default, float) else value
        return values

    # ------------------------------------------------------------------ what leaves the client
    def bind(self, model: torch.nn.Module) -> None:
        """Called once with the model architecture before any hook: resolves `personal_types`."""
        typed = tuple(n for n, m in model.named_modules() if self.personal_types and isinstance(m, self.personal_types))
        self._prefixes = tuple(self.personal) + typed
        self._has_personal = any(self.is_personal(name) for name in model.state_dict())

    def is_personal(self, name: str) -> bool:
        """True when the state-dict entry `name` must stay on the client."""
        prefixes = getattr(self, "_prefixes", self.personal)
        return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)

    def shared_names(self, model: torch.nn.Module) -> list[str]:
        return [n for n in model.state_dict() if not self.is_personal(n)]

    def global_model_available(self) -> bool:
        """Whether the server's model is worth scoring: declared, or else exactly when nothing is personal."""
        if self.has_global_model is not None:
            return self.has_global_model
        return not getattr(self, "_has_personal", bool(self.personal))

    # ------------------------------------------------------------------ client hooks
    def init_client(self, client: Client) -> None:
        pass

    def receive(self, client: Client, arrays: Arrays) -> None:
        """Default: load every received non-personal entry (FedAvg, FedBN, FedRep, ...)."""
        load_shared(client.model, arrays, self.is_personal)

    def train_round(self, client: Client, config: dict[str, Any]) -> dict[str, float]:
        return client.train_steps(client.model, config["local_steps"])

    def trainable(self, client: Client, step_in_round: int) -> Callable[[str], bool] | None:
        return None

    def make_optimizer(self, client: Client, model: torch.nn.Module) -> torch.optim.Optimizer:
        # Upstream: AdamW(betas 0.9/0.999, eps 1e-8, wd 1e-2), re-created at the start of every round.
        return torch.optim.AdamW(model.parameters(), lr=client.lr(), betas=(0.9, 0.999), eps=1e-8,
                                 weight_decay=client.config["weight_decay"])

    def loss(self, client: Client, batch: dict[str, torch.Tensor], output: dict[str, Any]):
        return client.objective(batch, output)

    def upload(self, client: Client) -> Arrays:
        return {k: v for k, v in client.model.state_dict().items() if not self.is_personal(k)}

    def client_extras(self, client: Client) -> Arrays:
        return {}

    def personalized_model(self, client: Client) -> torch.nn.Module:
        return client.model

    # ------------------------------------------------------------------ server hooks
    def init_server(self, server: ServerState) -> None:
        pass

    def payload(self, server: ServerState, site: int) -> Arrays:
        return {k: v for k, v in server.global_state.items() if not self.is_personal(k)}

    def aggregate(self, server: ServerState, replies: list[Reply]) -> None:
        server.global_state.update(weighted_average([r.arrays for r in replies], [r.weight for r in replies]))


def load_shared(model: torch.nn.Module, arrays: Arrays, is_personal: Callable[[str], bool]) -> None:
    """Copy received entries into `model` in place, skipping personal ones; unknown keys are an error."""
    state = model.state_dict()
    with torch.no_grad():
        for key, value in arrays.items():
            if is_personal(key):
                continue
            if key not in state:
                raise KeyError(f"received array {key!r} is not in the model")
            state[key].copy_(value.to(state[key].device, state[key].dtype))


def weighted_average(states: list[Arrays], weights: list[float]) -> Arrays:
    """Weighted mean of state dicts, key by key (integer buffers are rounded back to their dtype)."""
    if not states:
        return {}
    total = float(sum(weights))
    if total <= 0:
        raise ValueError("aggregation weights sum to zero")
    result: Arrays = {}
    for key, reference in states[0].items():
        if reference.is_floating_point():
            acc = reference * (weights[0] / total)
            for state, weight in zip(states[1:], weights[1:]):
                acc.add_(state[key], alpha=weight / total)
            result[key] = acc
        else:
            acc = sum(s[key].double() * (w / total) for s, w in zip(states, weights))
            result[key] = acc.round().to(reference.dtype)
    return result


class NoExchange(Method):
    """Base for baselines where nothing leaves the client (local and centralized training)."""

    has_global_model = False

    def is_personal(self, name: str) -> bool:
        return True

    def aggregate(self, server: ServerState, replies: list[Reply]) -> None:
        pass
