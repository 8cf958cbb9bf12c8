"""The method plugin API.

A method is one class in `methods/<name>.py`, decorated with `@register`. The base class is plain
FedAvg: every hook below has FedAvg's behaviour, so a method overrides only where it really differs.

Class attributes (declarative):
    name              registry key, used in configs (`method: fedbn`)
    model             model factory name (`unet`, `unet_lc`, `unet_lc_multihead`)
    hyperparameters   {name: Param(default, help, low=, high=, choices=)} (`fedicra.fl.hyperparameters`);
                      shared code checks type, range and finiteness; a plain default is accepted too
    objective         the weak-supervision objective the method trains with unless the run's
                      `objective` option says otherwise: "pce", "pce+gcrf" or "pce+gcrf+mtel"
    budget            gradient steps per site as a multiple of rounds x local_steps (1; Ditto 2);
                      the conformance suite fails a method that takes more than it declares
    personal          module paths whose parameters AND buffers never leave the client
                      (e.g. `("decoder.out_conv",)`)
    personal_types    module types whose every instance stays local (e.g. BatchNorm for FedBN);
                      override `is_personal` for any other predicate
    topology          "sites": one client per site (federated or local);
                      "pooled": one client trains on the union of all sites (centralized baselines)
    labels            None = the run's annotation assignment; "mask" = full masks (upper bounds)
    has_global_model  whether the server holds one global model worth scoring on every site
    new_site          whether a site that never trained gets a model from this method (leave-one-site-out,
                      `fedicra.fl.holdout`); False for methods that share nothing with a new site

Run hooks:
    resolve(config)                       values of hyper-parameters left at None (run-relative
                                          schedule constants, `fedicra.fl.schedule`), or {}

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
    new_site_model(client)                leave-one-site-out: the model a site that never trained is
                                          scored with after `receive` (default: `personalized_model`)

Server hooks (run on the server, with `server` = `fedicra.fl.server.ServerState`):
    init_server(server)                   create server-side method state in `server.state`
    payload(server, site)                 the arrays sent to one site this round (default: global model)
    aggregate(server, replies)            update `server.global_state` / `server.state` from replies
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, ClassVar

import torch

from fedicra.errors import UserError
from fedicra.fl import hyperparameters as hyper

if TYPE_CHECKING:
    from fedicra.fl.client import Client
    from fedicra.fl.server import Reply, ServerState

Arrays = dict[str, torch.Tensor]


class Method:
    name: ClassVar[str] = ""
    model: ClassVar[str] = "unet"
    hyperparameters: ClassVar[dict[str, Any]] = {}
    objective: ClassVar[str] = "pce"
    budget: ClassVar[float] = 1.0
    personal: ClassVar[tuple[str, ...]] = ()
    personal_types: ClassVar[tuple[type, ...]] = ()
    topology: ClassVar[str] = "sites"
    labels: ClassVar[str | None] = None
    has_global_model: ClassVar[bool | None] = None   # None: True exactly when no state entry is personal
    new_site: ClassVar[bool] = True
    description: ClassVar[str] = ""

    def __init__(self, params: dict[str, Any] | None = None, faithful: bool = False):
        self.faithful = faithful
        self.hp = self.validate_params(params or {})
        self.resolved: dict[str, Any] = {}
        self.objective_terms = parse_objective(type(self).objective)
        self.objective_settings = self.objective_weights({})
        self.model = type(self).model

    # ------------------------------------------------------------------ hyper-parameters
    @classmethod
    def validate_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        return hyper.validate(cls.hyperparameters, params, cls.name)

    def resolve(self, config: dict[str, Any]) -> dict[str, Any]:
        """Values for hyper-parameters declared with default None, from this run's length."""
        return {}

    def configure(self, config: dict[str, Any]) -> None:
        """Fix what depends on the run: run-relative schedule values, the objective and the model."""
        for key, value in self.resolve(config).items():
            if self.hp.get(key) is None:
                self.hp[key] = value
            self.resolved[key] = self.hp[key]
        missing = [k for k, v in self.hp.items() if v is None]
        if missing:
            raise UserError(f"method_params.{missing[0]}: {self.name} could not resolve it from the run")
        self.objective_terms = self.choose_objective(config)
        self.objective_settings = self.objective_weights(config)
        self.model = with_aux_heads(type(self).model) if "mtel" in self.objective_terms else type(self).model

    def objective_weights(self, config: dict[str, Any]) -> dict[str, Any]:
        """Weights of the objective's terms: the run's `gated_crf` weight (upstream v4's 0.1 when unset),
        the tree energy at FedICRA's 0.1 with upstream's recursive cascade."""
        return {"gcrf": config.get("gated_crf") or 0.1, "mtel": 0.1, "tree_mode": "recursive"}

    def gradient_budget(self, config: dict[str, Any]) -> int:
        """Gradient steps each site may take in this run: `budget` x rounds x local steps."""
        return int(round(self.budget * config["rounds"] * config["local_steps"]))

    def choose_objective(self, config: dict[str, Any]) -> tuple[str, ...]:
        """The run's `objective` when set, else the method's own (pCE + gated CRF when the legacy
        `gated_crf` weight is set for a method whose own objective is pCE)."""
        if config.get("objective"):
            return parse_objective(config["objective"])
        terms = parse_objective(type(self).objective)
        if config.get("gated_crf", 0) > 0 and "gcrf" not in terms:
            terms = (*terms, "gcrf")
        return terms

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

    def new_site_model(self, client: Client) -> torch.nn.Module:
        """The best available model of a new site after `receive`, with no local training
        (`fedicra.fl.holdout`): by default what the method scores as a site's personalized model."""
        return self.personalized_model(client)

    # ------------------------------------------------------------------ server hooks
    def init_server(self, server: ServerState) -> None:
        pass

    def payload(self, server: ServerState, site: int) -> Arrays:
        return {k: v for k, v in server.global_state.items() if not self.is_personal(k)}

    def aggregate(self, server: ServerState, replies: list[Reply]) -> None:
        server.global_state.update(weighted_average([r.arrays for r in replies], [r.weight for r in replies]))


OBJECTIVES = ("pce", "pce+gcrf", "pce+gcrf+mtel")
_WITH_AUX_HEADS = {"unet": "unet_multihead", "unet_head": "unet_multihead", "unet_lc": "unet_lc_multihead"}


def parse_objective(text: str) -> tuple[str, ...]:
    if text not in OBJECTIVES:
        raise UserError(f"option objective: expected one of {', '.join(OBJECTIVES)}, got {text!r}")
    return tuple(text.split("+"))


def with_aux_heads(model: str) -> str:
    """The model with the three auxiliary heads the tree energy needs (same network otherwise)."""
    return _WITH_AUX_HEADS.get(model, model)


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
