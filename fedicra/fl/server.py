"""The server side of a run: the round loop, failure policy, checkpoints and run outputs.

The loop talks to clients only through a transport (`send(round, requests) -> replies`), so the
same loop drives the in-process backend, Flower's simulation and a Flower deployment.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from flwr.app import RecordDict

from fedicra.errors import UserError
from fedicra.fl import outputs, protocol
from fedicra.fl.method import Method


class RunError(UserError):
    """A site failed and the configuration does not allow failures."""


@dataclass
class Reply:
    site: int
    arrays: dict[str, torch.Tensor]
    extras: dict[str, torch.Tensor]
    metrics: dict[str, float]
    weight: float


@dataclass
class ServerState:
    config: dict[str, Any]
    sites: list[int]
    global_state: dict[str, torch.Tensor]
    round: int = 0
    state: dict[str, Any] = field(default_factory=dict)   # method-private server state


class Transport(Protocol):
    def send(self, round_: int, requests: dict[int, RecordDict]) -> dict[int, RecordDict | BaseException]: ...

    def snapshot(self) -> Any: ...

    def restore(self, snap: Any) -> None: ...


def initial_state(config: dict[str, Any], method: Method, manifest) -> dict[str, torch.Tensor]:
    from fedicra.models import build_model

    torch.manual_seed(config["seed"])  # the same seed every client uses, so all start identical
    model = build_model(method.model, manifest.in_channels, manifest.num_classes,
                        num_sites=len(manifest.sites), site=0, faithful=config["faithful"])
    method.bind(model)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class Federation:
    """Runs the rounds of one experiment and writes its run directory."""

    def __init__(self, config: dict[str, Any], method: Method, manifest, keys: list[int],
                 transport: Transport, run_dir: Path):
        self.config, self.method, self.manifest = config, method, manifest
        self.transport, self.run_dir = transport, Path(run_dir)
        self.server = ServerState(config=config, sites=keys, global_state=initial_state(config, method, manifest))
        method.init_server(self.server)
        self.round_rows: list[dict[str, Any]] = []
        self.traffic: dict[int, dict[str, int]] = {}
        self.elapsed = 0.0
        self.checkpoint_path = self.run_dir / "checkpoints" / "federation.pt"

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> None:
        outputs.atomic_torch_save({
            "round": self.server.round, "global_state": self.server.global_state, "state": self.server.state,
            "round_rows": self.round_rows, "elapsed": self.elapsed, "clients": self.transport.snapshot(),
            "config": self.config}, self.checkpoint_path)

    def try_resume(self) -> bool:
        if not self.checkpoint_path.is_file():
            return False
        snap = torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)
        if {k: v for k, v in snap["config"].items() if k not in ("progress", "device")} != \
                {k: v for k, v in self.config.items() if k not in ("progress", "device")}:
            raise UserError(f"{self.checkpoint_path}: checkpoint belongs to a different configuration; "
                            "use another --out or delete the folder")
        self.server.round, self.server.global_state = snap["round"], snap["global_state"]
        self.server.state, self.round_rows, self.elapsed = snap["state"], snap["round_rows"], snap["elapsed"]
        self.transport.restore(snap["clients"])
        return True

    # ------------------------------------------------------------------ one exchange
    def exchange(self, round_: int, final: bool) -> dict[int, RecordDict]:
        evaluate = final or (round_ > 1 and (round_ - 1) % self.config["eval_every"] == 0)
        requests, sent = {}, {}
        for site in self.server.sites:
            arrays = self.method.payload(self.server, site)
            sent[site] = protocol.count_bytes(arrays)
            requests[site] = protocol.request(arrays, {
                "round": round_ if not final else self.config["rounds"] + 1,
                "local_steps": self.config["local_steps"], "evaluate": evaluate, "final": final})
        replies = self.transport.send(round_, requests)
        ok: dict[int, RecordDict] = {}
        for site in self.server.sites:
            reply = replies.get(site, TimeoutError("no reply"))
            if isinstance(reply, BaseException):
                message = f"site {site} failed in round {round_}: {type(reply).__name__}: {reply}"
                if final or not self.config["allow_failures"]:
                    raise RunError(message) from (reply if isinstance(reply, Exception) else None)
                print(f"warning: {message}; dropped for this round", flush=True)
                continue
            ok[site] = reply
            up = protocol.count_bytes(protocol.from_record(reply.get("arrays"))) + \
                protocol.count_bytes(protocol.from_record(reply.get("extras")))
            self.traffic[site] = {"bytes_down": sent[site], "bytes_up": up}
        if not ok:
            raise RunError(f"every site failed in round {round_}")
        return ok

    def record_validation(self, replies: dict[int, RecordDict], round_: int) -> None:
        for site, reply in replies.items():
            report = json.loads(reply["report"]["json"])
            metrics = dict(reply["metrics"])
            for row in report.get("validation", []):
                self.round_rows.append({**row, "train_round": round_, **self.traffic.get(site, {}),
                                        "seconds": metrics.get("seconds")})

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict[str, Any]:
        from tqdm import tqdm

        outputs.write_json(self.run_dir / "config.json", self.config)
        resumed = self.try_resume()
        start = self.server.round + 1
        total = self.config["rounds"]
        bar = tqdm(total=total, initial=start - 1, desc=f"{self.config['method']}", unit="round",
                   disable=not self.config["progress"], dynamic_ncols=True, leave=True)
        if resumed:
            bar.write(f"resuming {self.run_dir} after round {start - 1}")
        losses: list[float] = []
        bytes_per_round: list[int] = []
        for round_ in range(start, total + 1):
            began = time.perf_counter()
            replies = self.exchange(round_, final=False)
            self.record_validation(replies, round_ - 1)
            parsed = [Reply(site=s, arrays=protocol.from_record(r.get("arrays")),
                            extras=protocol.from_record(r.get("extras")), metrics=dict(r["metrics"]),
                            weight=_weight(dict(r["metrics"]), self.config["aggregation_weight"]))
                      for s, r in sorted(replies.items())]
            self.method.aggregate(self.server, parsed)
            self.server.round = round_
            self.elapsed += time.perf_counter() - began
            loss = sum(r.metrics.get("loss", math.nan) for r in parsed) / len(parsed)
            losses.append(loss)
            bytes_per_round.append(sum(t["bytes_up"] + t["bytes_down"] for t in self.traffic.values()))
            self.round_rows.append({"round": round_, "site": -1, "train_loss": loss,
                                    "bytes_up": sum(t["bytes_up"] for t in self.traffic.values()),
                                    "bytes_down": sum(t["bytes_down"] for t in self.traffic.values()),
                                    "seconds": time.perf_counter() - began})
            if round_ % self.config["checkpoint_every"] == 0 or round_ == total:
                self.save_checkpoint()
            outputs.write_csv(self.run_dir / "rounds.csv", self.round_rows)
            bar.set_postfix(loss=f"{loss:.4f}")
            bar.update(1)
        bar.close()
        return self.finish()

    def finish(self) -> dict[str, Any]:
        began = time.perf_counter()
        replies = self.exchange(self.config["rounds"] + 1, final=True)
        self.record_validation(replies, self.config["rounds"])
        cases, samples = [], {}
        for site, reply in sorted(replies.items()):
            cases.extend(json.loads(reply["report"]["json"])["cases"])
            samples.update({k: v.numpy() for k, v in protocol.from_record(reply.get("samples")).items()})
        if not cases:
            raise RunError("no test cases were scored")
        self.elapsed += time.perf_counter() - began
        outputs.write_csv(self.run_dir / "rounds.csv", self.round_rows)
        outputs.write_csv(self.run_dir / "cases.csv", cases)
        if samples:
            outputs.write_npz(self.run_dir / "predictions.npz", samples)
        traffic_rows = [r for r in self.round_rows if r.get("site") == -1]
        summary = {
            "wall_clock_s": self.elapsed,
            "peak_rss_mb": outputs.peak_rss_mb(),
            "peak_gpu_mb": outputs.peak_gpu_mb(),
            "rounds": self.config["rounds"],
            "bytes_up": int(sum(r["bytes_up"] for r in traffic_rows)),
            "bytes_down": int(sum(r["bytes_down"] for r in traffic_rows)),
            "bytes_per_round": (sum(r["bytes_up"] + r["bytes_down"] for r in traffic_rows) / max(1, len(traffic_rows))),
            "protocol": protocol_statement(self.config, self.method),
            "environment": outputs.environment_record(self.config["device"]),
        }
        outputs.write_json(self.run_dir / "summary.json", summary)
        return summary


def _weight(metrics: dict[str, float], rule: str) -> float:
    # Upstream weights FedAvg by the number of training batches (quirk 9); "cases" weights by images.
    return metrics["num_batches"] if rule == "batches" else metrics["num_cases"]


def protocol_statement(config: dict[str, Any], method: Method) -> dict[str, Any]:
    return {
        "method": method.name,
        "models": ["personalized"] + (["global"] if method.global_model_available() else []),
        "selection": ["last", "best_val"] + (["best_test"] if config["select_on_test"] else []),
        "validation": f"{config['val_fraction']:.0%} of each site's training cases, full masks, seeded",
        "faithful": config["faithful"],
        "metric_policy": config["metric_policy"],
        "aggregation_weight": config["aggregation_weight"],
        "backend": config["backend"],
    }
