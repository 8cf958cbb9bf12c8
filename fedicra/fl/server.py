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

from fedicra.atomic import remove_stale_temporaries
from fedicra.errors import UserError
from fedicra import record
from fedicra.fl import holdout, outputs, protocol, schedule
from fedicra.fl.cadence import CheckpointCadence
from fedicra.fl.method import Method
from fedicra.fl.run_lock import locked_run_dir

# Keys that may differ between the run that wrote a checkpoint and the run that resumes it.
RESUMABLE_CHANGES = ("progress", "device", "resume_moved")
DERIVED_KEYS = ("resolved",)   # written into config.json from the configuration (schedule values)
CHECKPOINT_KEYS = ("round", "global_state", "state", "rows", "elapsed", "clients", "config")


class RunError(UserError):
    """A site failed and the configuration does not allow failures."""


@dataclass
class Reply:
    site: int
    arrays: dict[str, torch.Tensor]
    extras: dict[str, torch.Tensor]
    metrics: dict[str, float]
    weight: float
    report: dict[str, Any] = field(default_factory=dict)             # validation rows / final cases


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
        self.rows: dict[tuple[int, int], dict[str, Any]] = {}   # (round, site) -> rounds.csv row; site -1 = server
        self.traffic: dict[int, dict[str, int]] = {}
        self.elapsed = 0.0       # compute + communication time of all exchanges
        self.rounds_wall = 0.0   # wall time of the round loop in this process, checkpoints included
        self.checkpoint_path = self.run_dir / record.CHECKPOINT
        self.cadence = CheckpointCadence(config["checkpoint_every"])

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> None:
        outputs.atomic_torch_save({
            "round": self.server.round, "global_state": self.server.global_state, "state": self.server.state,
            "rows": self.rows, "elapsed": self.elapsed, "clients": self.transport.snapshot(),
            "config": self.config, "origin": checkpoint_origin(self.run_dir)}, self.checkpoint_path)

    def try_resume(self) -> bool:
        if not self.checkpoint_path.is_file():
            return False
        snap = load_checkpoint(self.checkpoint_path)
        if not same_run(snap["config"], self.config):
            raise UserError(f"{self.checkpoint_path}: checkpoint belongs to a different configuration; "
                            "use another --out or delete the folder")
        check_origin(self.checkpoint_path, snap.get("origin"), self.run_dir, self.config.get("resume_moved", False))
        self.server.round, self.server.global_state = snap["round"], snap["global_state"]
        self.server.state, self.rows, self.elapsed = snap["state"], snap["rows"], snap["elapsed"]
        self.transport.restore(snap["clients"])
        return True

    # ------------------------------------------------------------------ one exchange
    def exchange(self, round_: int, final: bool) -> dict[int, Reply]:
        """Send every site its request, collect and decode the replies (once), apply the failure policy."""
        evaluate = final or (round_ > 1 and (round_ - 1) % self.config["eval_every"] == 0)
        config = {"round": round_ if not final else self.config["rounds"] + 1,
                  "local_steps": self.config["local_steps"], "evaluate": evaluate, "final": final}
        requests, sent, encoded = {}, {}, {}
        for site in self.server.sites:
            arrays = self.method.payload(self.server, site)
            # Sites that get the very same tensors (FedAvg & co.) share one encoded record.
            key = tuple((k, id(v)) for k, v in arrays.items())
            if key not in encoded:
                encoded[key] = protocol.to_record(arrays)
            sent[site] = protocol.count_bytes(arrays)
            requests[site] = protocol.request_from_record(encoded[key], config)
        replies = self.transport.send(round_, requests)
        ok: dict[int, Reply] = {}
        for site in self.server.sites:
            reply = replies.get(site, TimeoutError("no reply"))
            if isinstance(reply, BaseException):
                message = f"site {site} failed in round {round_}: {type(reply).__name__}: {reply}"
                if final or not self.config["allow_failures"]:
                    raise RunError(message) from (reply if isinstance(reply, Exception) else None)
                print(f"warning: {message}; dropped for this round", flush=True)
                continue
            metrics = dict(reply["metrics"])
            ok[site] = Reply(site=site, arrays=protocol.from_record(reply.get("arrays")),
                             extras=protocol.from_record(reply.get("extras")), metrics=metrics,
                             weight=_weight(metrics, self.config["aggregation_weight"]),
                             report=json.loads(reply["report"]["json"]))
            up = protocol.count_bytes(ok[site].arrays) + protocol.count_bytes(ok[site].extras)
            self.traffic[site] = {"bytes_down": sent[site], "bytes_up": up}
        if not ok:
            raise RunError(f"every site failed in round {round_}")
        return ok

    def row(self, round_: int, site: int) -> dict[str, Any]:
        return self.rows.setdefault((round_, site), {"round": round_, "site": site})

    def record(self, replies: dict[int, Reply], round_: int, final: bool) -> None:
        """Training loss, traffic and time of this exchange, and the validation scores it carried."""
        for site, reply in replies.items():
            for row in reply.report.get("validation", []):
                self.row(row["round"], row["site"]).update(row)
            # A pooled client's key 0 is not site 0 (which may even be held out): its training loss,
            # traffic and time are the server row's (site -1) alone.
            if not final and self.method.topology != "pooled":
                self.row(round_, site).update(train_loss=reply.metrics.get("loss"),
                                              seconds=reply.metrics.get("seconds"), **self.traffic.get(site, {}))

    def write_rounds(self) -> None:
        record.write_rounds(self.run_dir, [self.rows[k] for k in sorted(self.rows)])

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict[str, Any]:
        with locked_run_dir(self.run_dir):
            remove_stale_temporaries(self.run_dir)   # a killed writer's; no writer can be active now
            done = completed_summary(self.config, self.run_dir)
            if done is not None:
                print(f"{self.run_dir}: this run is already complete (summary.json); nothing to do", flush=True)
                return done
            resumed = self.try_resume()
            # only now: a refused resume must leave the record of the earlier run untouched
            resolved = schedule.resolved_values(self.config, self.method, self.manifest)
            record.write_config(self.run_dir, {**self.config, "resolved": resolved})
            return self._rounds(resumed)

    def _rounds(self, resumed: bool) -> dict[str, Any]:
        from tqdm import tqdm

        start = self.server.round + 1
        total = self.config["rounds"]
        bar = tqdm(total=total, initial=start - 1, desc=f"{self.config['method']}", unit="round",
                   disable=not self.config["progress"], dynamic_ncols=True, leave=True)
        if resumed:
            bar.write(f"resuming {self.run_dir} after round {start - 1}")
        for round_ in range(start, total + 1):
            began = time.perf_counter()
            replies = self.exchange(round_, final=False)
            self.record(replies, round_, final=False)
            parsed = [replies[s] for s in sorted(replies)]
            self.method.aggregate(self.server, parsed)
            self.server.round = round_
            loss = sum(r.metrics.get("loss", math.nan) for r in parsed) / len(parsed)
            self.row(round_, -1).update(train_loss=loss,
                                        bytes_up=sum(self.traffic[s]["bytes_up"] for s in replies),
                                        bytes_down=sum(self.traffic[s]["bytes_down"] for s in replies),
                                        seconds=time.perf_counter() - began)
            self.elapsed += time.perf_counter() - began
            if self.cadence.due(round_, total):
                self.cadence.write(self.save_checkpoint)
            self.write_rounds()
            self.rounds_wall += time.perf_counter() - began
            val = [r["mean_dice"] for (rnd, site), r in self.rows.items() if rnd == round_ - 1 and site >= 0
                   and "mean_dice" in r]
            bar.set_postfix(loss=f"{loss:.4f}", **({"val_dice": f"{sum(val) / len(val):.3f}"} if val else {}))
            bar.update(1)
        bar.close()
        return self.finish()

    def finish(self) -> dict[str, Any]:
        began = time.perf_counter()
        replies = self.exchange(self.config["rounds"] + 1, final=True)
        self.record(replies, self.config["rounds"] + 1, final=True)
        cases = []
        for site, reply in sorted(replies.items()):
            cases.extend(reply.report["cases"])
        cases.extend(holdout.new_site_cases(self.config, self.method, self.manifest, self.server))
        if not cases:
            raise RunError("no test cases were scored")
        self.elapsed += time.perf_counter() - began
        self.write_rounds()
        num_cases = record.write_cases(self.run_dir, cases)
        traffic_rows = [r for (_, site), r in sorted(self.rows.items()) if site == -1]
        summary = {
            "wall_clock_s": self.elapsed,
            "rounds_wall_clock_s": self.rounds_wall,
            "checkpoint_wall_clock_s": self.cadence.total_cost,
            "peak_rss_mb": outputs.peak_rss_mb(),
            "peak_gpu_mb": outputs.peak_gpu_mb(),
            "rounds": self.config["rounds"],
            "gradient_steps": {str(site): int(reply.metrics.get("gradient_steps", 0)) for site, reply in sorted(replies.items())},
            "bytes_up": int(sum(r["bytes_up"] for r in traffic_rows)),
            "bytes_down": int(sum(r["bytes_down"] for r in traffic_rows)),
            "bytes_per_round": (sum(r["bytes_up"] + r["bytes_down"] for r in traffic_rows) / max(1, len(traffic_rows))),
            "num_cases": num_cases,
            "protocol": protocol_statement(self.config, self.method),
            "environment": outputs.environment_record(self.config),
        }
        record.write_summary(self.run_dir, summary)
        return summary


def same_run(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two configurations describe the same run (they may differ in RESUMABLE_CHANGES)."""
    def canonical(config):
        return json.dumps({k: v for k, v in config.items() if k not in RESUMABLE_CHANGES + DERIVED_KEYS}, sort_keys=True,
                          default=str)
    return canonical(a) == canonical(b)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A federation checkpoint: tensors and plain containers only (`weights_only`), so a crafted or
    downloaded file cannot run code; an unreadable or foreign file is one line naming it."""
    import pickle
    import zipfile

    try:
        snap = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        # UnpicklingError: garbage, or a pickle that asks for anything but tensors (it is never run)
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:120]
        raise UserError(f"{path}: cannot resume from this file: not a readable checkpoint of tensors and plain "
                        f"values ({type(err).__name__}: {reason}); delete it to start over") from None
    if not isinstance(snap, dict) or any(k not in snap for k in CHECKPOINT_KEYS) or not isinstance(snap["config"], dict):
        raise UserError(f"{path}: not a fedicra federation checkpoint; delete it to start over")
    return snap


def checkpoint_origin(run_dir: Path) -> dict[str, str]:
    """Where a checkpoint is written: the run directory's absolute path and the host."""
    import socket

    return {"run_dir": str(Path(run_dir).resolve()), "host": socket.gethostname()}


def check_origin(path: Path, origin: dict[str, str] | None, run_dir: Path, resume_moved: bool) -> None:
    """A run directory copied or moved from elsewhere (another checkout or machine) is not resumed
    silently: its rounds so far were computed there, and the record would credit this environment.
    Another path is refused unless `resume_moved` is set; the same path on another host (a shared
    filesystem, a job rescheduled on another cluster node) only warns. Checkpoints older than this
    record have no origin and resume as before."""
    import sys

    if not origin:
        return
    here = checkpoint_origin(run_dir)
    if origin.get("run_dir") != here["run_dir"] and not resume_moved:
        raise UserError(f"{path}: this checkpoint was written in {origin.get('run_dir')} on host "
                        f"{origin.get('host')}, not in {here['run_dir']}: a copied or moved run is not resumed "
                        "silently; set resume_moved=true to continue it here, or delete the folder to start over")
    if origin != here:
        print(f"warning: {path}: resuming a checkpoint written in {origin.get('run_dir')} on host "
              f"{origin.get('host')}; the rounds so far ran there", file=sys.stderr, flush=True)


def completed_summary(config: dict[str, Any], run_dir: Path) -> dict[str, Any] | None:
    """The summary of a finished run of this configuration in `run_dir`, None when it is not finished;
    a finished run of another configuration is refused (its record is not overwritten)."""
    summary, written = Path(run_dir) / record.SUMMARY, Path(run_dir) / record.CONFIG
    if not summary.is_file():
        return None
    try:
        done, earlier = json.loads(summary.read_text()), json.loads(written.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{run_dir}: holds a summary.json but its record is unreadable ({err}); "
                        "use another --out or delete the folder") from None
    if not same_run(earlier, config):
        raise UserError(f"{run_dir}: holds a finished run of a different configuration; "
                        "use another --out or delete the folder")
    return done


def _weight(metrics: dict[str, float], rule: str) -> float:
    # Upstream weights FedAvg by the number of training batches (quirk 9); "cases" weights by images.
    return metrics["num_batches"] if rule == "batches" else metrics["num_cases"]


def protocol_statement(config: dict[str, Any], method: Method) -> dict[str, Any]:
    return {
        "method": method.name,
        "models": ["personalized"] + (["global"] if method.global_model_available() else []),
        "selection": ["last"] + (["best_val"] if config["val_fraction"] > 0 else [])
                     + (["best_test"] if config["select_on_test"] else []),
        "validation": (f"{config['val_fraction']:.0%} of each site's training cases, full masks, seeded "
                       "(a site with one training case has none: `last` only)") if config["val_fraction"] > 0
                      else "none (val_fraction 0): the last round is the only selection",
        "shared_objective": "+".join(method.objective_terms),
        "faithful": config["faithful"],
        "precision": config.get("precision", "fp32"),
        "metric_policy": config["metric_policy"],
        "aggregation_weight": config["aggregation_weight"],
        "backend": config["backend"],
        "holdout_site": config.get("holdout_site"),
    }
