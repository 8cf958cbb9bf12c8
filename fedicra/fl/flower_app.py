"""The engine as one Flower app: a generic ClientApp and a ServerApp that runs the same round loop
(`fedicra.fl.server.Federation`) as the in-process backend, over Flower's Grid.

Who knows what:
- The server gets the engine configuration from the run config (`config-json`, `run-dir`; see
  `fedicra.fl.backends.deployment`) or, in simulation, from `make_server_app(config, run_dir)`.
- Every request carries the configuration as JSON in its ConfigRecord (`run_config`), so a node
  needs nothing but its site: `site=<k>` in its node config (deployment) or its `partition-id`
  (simulation: node i serves the i-th client key). A node may also set `dataset=<path>` and
  `device=<name>` in its node config when its copy of the data or its accelerator differ.
- Personal state (model, method state, best snapshots, random stream) lives on the node's own disk
  between rounds (`fedicra.fl.backends.node_state`: one atomic file per round, under the node
  config's `state-dir`) and is never sent; only `protocol.handle`'s reply leaves the node. The
  server says which of its checkpoints is the latest (`keep_from`), so a killed server or node
  resumes from matching states on both sides. `context.state` keeps only a marker (site, round).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from fedicra.errors import UserError
from fedicra.seeding import apply_threads

RUN_CONFIG = "run_config"     # request ConfigRecord key: the engine configuration as JSON
SITE = "site"                 # request ConfigRecord key: the client key the server addresses
STATE = "fedicra"             # context.state key of the node's marker (site, last round served)
KEEP_FROM = "keep_from"       # request ConfigRecord key: round of the server's latest checkpoint
ERROR_FILE = "flower_error.txt"  # written into the run directory when the ServerApp fails
NODE_WAIT_S = 120.0           # how long the ServerApp waits for every site's node to connect
REPLY_POLL_S = 0.1            # between pulls for replies (Grid.send_and_receive waits 3 s in flwr 1.42)
LAUNCHER_PID = "FEDICRA_LAUNCHER_PID"  # env var set by the local launcher for its whole process tree


def exit_with_launcher() -> None:
    """In a process started (through Flower) by the local launcher: exit at once when the launcher
    is gone, e.g. killed with SIGKILL. Flower's own parent watch sends SIGINT, on which a ServerApp
    blocked on a dead SuperLink can linger and keep writing the run directory; this hard exit cannot."""
    import os
    import threading

    pid = int(os.environ.get(LAUNCHER_PID, "0") or 0)
    if pid <= 0 or getattr(exit_with_launcher, "started", False):
        return
    exit_with_launcher.started = True

    def watch() -> None:
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:   # a pid reused by another user's process: the launcher is gone
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch, name="fedicra-launcher-watch", daemon=True).start()


# ---------------------------------------------------------------------------------------------- client
def node_config_for(config: dict[str, Any], node_config: dict[str, Any]) -> dict[str, Any]:
    """The engine configuration as this node sees it (node-local dataset path and device)."""
    local = dict(config)
    for key in ("dataset", "device", "node_samples_dir"):
        if key in node_config and str(node_config[key]):
            local[key] = str(node_config[key])
    return local


def node_key(config: dict[str, Any], node_config: dict[str, Any]) -> int:
    """The client key this node serves: `site` from the node config, else the `partition-id`-th key."""
    from fedicra.fl.registry import build_method
    from fedicra.fl.setup import client_keys, load_manifest

    keys = client_keys(config, load_manifest(config), build_method(config))
    if SITE in node_config:
        try:
            key = int(node_config[SITE])
        except (TypeError, ValueError):
            raise UserError(f"node config site={node_config[SITE]!r}: expected a site index") from None
        if key not in keys:
            raise UserError(f"node config site={key}: this run uses client keys {keys}")
        return key
    if "partition-id" in node_config:
        index = int(node_config["partition-id"])
        if not 0 <= index < len(keys):
            raise UserError(f"node config partition-id={index}: this run has {len(keys)} clients")
        return keys[index]
    raise UserError("node config: set site=<k> (e.g. flower-supernode --node-config 'site=0')")


def handle_train(content: RecordDict, context: Context) -> RecordDict:
    """Client side of one request: rebuild the client, restore its state from disk, run the protocol, save."""
    from fedicra.fl import protocol
    from fedicra.fl.backends.node_state import NodeState
    from fedicra.fl.registry import build_method
    from fedicra.fl.setup import make_client

    exit_with_launcher()
    settings = dict(content["config"])
    run_config = json.loads(settings.pop(RUN_CONFIG))
    keep_from = int(settings.pop(KEEP_FROM, 0))
    node_config = dict(context.node_config)
    config = node_config_for(run_config, node_config)
    apply_threads(config)
    key = node_key(config, node_config)
    addressed = settings.pop(SITE, key)
    if int(addressed) != key:
        raise RuntimeError(f"request for site {addressed} reached the node of site {key}")
    # Rebuilding is cheap next to Flower's process start, and keeps no hidden state in the process:
    # everything personal comes from this node's disk.
    client = make_client(config, build_method(config), key)
    client.samples_dir = config["node_samples_dir"]   # opt-in: the sample stays on this node
    store = NodeState.for_node(run_config, node_config, key)
    round_ = int(settings["round"])
    loaded = store.load(round_ - 1)
    if loaded is not None:
        client.restore(loaded[1])
    request = RecordDict({"config": ConfigRecord(settings)})
    if "arrays" in content:
        request["arrays"] = content["arrays"]
    reply = protocol.handle(client, request)
    if settings.get("final", False):
        store.prune(keep_from)
    else:
        store.save(round_, client.snapshot(), keep_from)
    context.state[STATE] = ConfigRecord({"key": key, "round": round_})
    return reply


def handle_query(content: RecordDict, context: Context) -> RecordDict:
    """Tell the server which client this node serves. Cheap on purpose (no torch import): in a
    deployment every message starts a fresh ClientApp process. The server checks the answer."""
    node_config = dict(context.node_config)
    if SITE in node_config:
        return RecordDict({"config": ConfigRecord({SITE: str(node_config[SITE])})})
    if "partition-id" in node_config:
        return RecordDict({"config": ConfigRecord({"partition-id": int(node_config["partition-id"])})})
    raise UserError("node config: set site=<k> (e.g. flower-supernode --node-config 'site=0')")


client_app = ClientApp()


@client_app.train()
def _train(message: Message, context: Context) -> Message:
    return Message(content=handle_train(message.content, context), reply_to=message)


@client_app.query()
def _query(message: Message, context: Context) -> Message:
    return Message(content=handle_query(message.content, context), reply_to=message)


# ---------------------------------------------------------------------------------------------- server
class GridTransport:
    """`fedicra.fl.server.Transport` over a Flower Grid: one message per site and round."""

    def __init__(self, grid: Grid, config: dict[str, Any], keys: list[int], node_wait_s: float = NODE_WAIT_S):
        self.grid, self.config, self.keys = grid, config, list(keys)
        self.node_wait_s = node_wait_s
        self.config_json = json.dumps(config, sort_keys=True)
        self.nodes: dict[int, int] = {}   # client key -> node id
        self.last_round = 0     # the last training round sent
        self.checkpointed = 0   # the round of the server's latest checkpoint (nodes keep its states)

    def _config(self, extra: dict[str, Any]) -> ConfigRecord:
        return ConfigRecord({**extra, RUN_CONFIG: self.config_json})

    def connect(self) -> dict[int, int]:
        """Ask every connected node which site it serves until each client key has its node."""
        deadline = time.monotonic() + self.node_wait_s
        asked: set[int] = set()
        while True:
            fresh = [n for n in self.grid.get_node_ids() if n not in asked]
            if fresh:
                messages = [Message(content=RecordDict({"config": self._config({})}), dst_node_id=n,
                                    message_type="query", group_id="connect") for n in fresh]
                for reply in exchange(self.grid, messages, timeout=max(1.0, deadline - time.monotonic())):
                    node = reply.metadata.src_node_id
                    asked.add(node)
                    if reply.has_error():
                        raise UserError(f"node {node} cannot join the run: {_reason(reply)}")
                    key = self._key(node, dict(reply.content["config"]))
                    if key in self.nodes and self.nodes[key] != node:
                        raise UserError(f"two nodes ({self.nodes[key]} and {node}) serve site {key}; "
                                        "give each SuperNode its own --node-config site=<k>")
                    self.nodes[key] = node
            missing = [k for k in self.keys if k not in self.nodes]
            if not missing:
                return dict(self.nodes)
            if time.monotonic() > deadline:
                raise UserError(f"no node serves site(s) {missing} after {self.node_wait_s:g} s "
                                f"(connected: {sorted(self.nodes)}); start one SuperNode per site "
                                "with --node-config site=<k>")
            time.sleep(0.5)

    def _key(self, node: int, answer: dict[str, Any]) -> int:
        if SITE in answer:
            try:
                key = int(answer[SITE])
            except ValueError:
                raise UserError(f"node {node}: node config site={answer[SITE]!r} is not a site index") from None
        else:
            index = int(answer["partition-id"])
            key = self.keys[index] if 0 <= index < len(self.keys) else -1
        if key not in self.keys:
            raise UserError(f"node {node} serves site {answer.get(SITE, key)}, which is not in this run "
                            f"(client keys {self.keys}); fix its --node-config site=<k>")
        return key

    def send(self, round_: int, requests: dict[int, RecordDict]) -> dict[int, Any]:
        if not self.nodes:
            self.connect()
        by_node: dict[int, int] = {}
        messages = []
        if not any(bool(dict(c["config"]).get("final", False)) for c in requests.values()):
            self.last_round = round_
        for key, content in requests.items():
            body = RecordDict({"config": self._config({**dict(content["config"]), SITE: key,
                                                       KEEP_FROM: self.checkpointed})})
            if "arrays" in content:
                body["arrays"] = content["arrays"]
            by_node[self.nodes[key]] = key
            messages.append(Message(content=body, dst_node_id=self.nodes[key], message_type="train",
                                    group_id=str(round_)))
        timeout = self.config.get("client_timeout")
        replies: dict[int, Any] = {}
        for reply in exchange(self.grid, messages, timeout=timeout):
            key = by_node.get(reply.metadata.src_node_id)
            if key is None:
                continue
            replies[key] = RuntimeError(_reason(reply)) if reply.has_error() else reply.content
        for key in requests:
            if key not in replies:
                replies[key] = TimeoutError(f"no reply within {timeout:g} s" if timeout else "no reply")
        return replies

    def snapshot(self) -> dict[str, Any]:
        # Called when the server checkpoints: personal state stays on the nodes, each of which keeps
        # its state of this round until a later checkpoint supersedes it.
        self.checkpointed = self.last_round
        return {"backend": "flower", "nodes_hold_state": True, "round": self.last_round}

    def restore(self, snap: Any) -> None:
        if not isinstance(snap, dict) or "round" not in snap:
            raise UserError("resume: this checkpoint comes from a backend that cannot resume Flower nodes; "
                            "delete the run directory's checkpoints/ folder to start over")
        self.last_round = self.checkpointed = int(snap["round"])


def exchange(grid: Grid, messages: list[Message], timeout: float | None) -> list[Message]:
    """Push `messages` and pull their replies every REPLY_POLL_S until all came or `timeout` passed;
    the replies in the order of the messages.

    What `Grid.send_and_receive` does, but it sleeps 3 s between pulls: a round whose replies are all
    in after 0.2 s would wait the full 3 s. A pull is one small request to the SuperLink.
    """
    ids = [i for i in grid.push_messages(messages) if i]
    deadline = None if timeout is None else time.monotonic() + timeout
    replies: dict[str, Message] = {}
    while len(replies) < len(ids):
        for reply in grid.pull_messages([i for i in ids if i not in replies]):
            if reply.metadata.reply_to_message_id in ids:
                replies.setdefault(reply.metadata.reply_to_message_id, reply)
        if len(replies) == len(ids) or (deadline is not None and time.monotonic() >= deadline):
            break
        time.sleep(REPLY_POLL_S)
    return [replies[i] for i in ids if i in replies]


def _reason(reply: Message) -> str:
    error = reply.error
    return " ".join(f"{error.reason} (Flower error code {error.code})".split())


def serve(grid: Grid, config: dict[str, Any], run_dir: Path, experiment=None) -> dict[str, Any]:
    """The ServerApp's body: the same Federation loop as the in-process backend, over the Grid.
    `experiment` is `assemble(config)` when the launcher shares this process (simulation)."""
    from fedicra.fl import outputs
    from fedicra.fl.setup import assemble

    exit_with_launcher()
    run_dir = Path(run_dir)
    error_file = run_dir / ERROR_FILE
    error_file.unlink(missing_ok=True)
    try:
        experiment = experiment or assemble(config)
        transport = GridTransport(grid, config, experiment.keys)
        transport.connect()
        return experiment.federation(transport, run_dir).run()
    except BaseException as err:
        # The launcher of a deployment waits for summary.json or this file (one line).
        outputs.atomic_write(error_file, f"{type(err).__name__}: {' '.join(str(err).split())}\n")
        raise


def make_server_app(config: dict[str, Any] | None = None, run_dir: str | Path | None = None,
                    experiment=None) -> ServerApp:
    """A ServerApp bound to `config`/`run_dir` (and its assembled `experiment`, if given), or (all None)
    reading them from the run config."""
    app = ServerApp()

    @app.main()
    def _main(grid: Grid, context: Context) -> None:
        cfg, out = config, run_dir
        if cfg is None:
            if "config-json" not in context.run_config or "run-dir" not in context.run_config:
                raise UserError("run config: the fedicra ServerApp needs config-json and run-dir "
                                "(see docs/deployment.md)")
            cfg, out = json.loads(str(context.run_config["config-json"])), str(context.run_config["run-dir"])
        serve(grid, cfg, Path(out), experiment)

    return app


server_app = make_server_app()
