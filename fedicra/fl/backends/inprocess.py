"""In-process backend: every client lives in this process and is called in turn (deterministic, no Ray).

Messages are still real Flower records, encoded and decoded as in the other backends, so the
conformance suite can inspect exactly what would leave each client.
"""
from __future__ import annotations

import concurrent.futures
from pathlib import Path
from typing import Any

from flwr.app import RecordDict

from fedicra.fl import protocol
from fedicra.fl.client import Client


class InProcessTransport:
    def __init__(self, clients: dict[int, Client], timeout: float | None = None):
        self.clients = clients
        self.timeout = timeout
        self.sent: list[tuple[int, int, RecordDict]] = []      # (round, site, request), for inspection
        self.received: list[tuple[int, int, RecordDict]] = []  # (round, site, reply)
        self.record = False
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1) if timeout else None

    def _call(self, site: int, content: RecordDict) -> RecordDict:
        if self._pool is None:
            return protocol.handle(self.clients[site], content)
        # A hung client cannot be killed in-process; it is abandoned after the timeout and the run stops
        # (or drops the site) as configured.
        future = self._pool.submit(protocol.handle, self.clients[site], content)
        try:
            return future.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
            raise TimeoutError(f"no reply within {self.timeout:g} s") from None

    def send(self, round_: int, requests: dict[int, RecordDict]) -> dict[int, Any]:
        replies: dict[int, Any] = {}
        for site, content in requests.items():
            try:
                replies[site] = self._call(site, content)
            except Exception as err:  # reported by the server loop with the site and round
                replies[site] = err
            if self.record:
                self.sent.append((round_, site, content))
                if not isinstance(replies[site], BaseException):
                    self.received.append((round_, site, replies[site]))
        return replies

    def snapshot(self) -> dict[int, dict]:
        return {site: client.snapshot() for site, client in self.clients.items()}

    def restore(self, snap: dict[int, dict]) -> None:
        for site, state in snap.items():
            self.clients[site].restore(state)


def run(experiment, run_dir) -> dict[str, Any]:
    """Every client of `experiment` in this process; a site's own folder for its qualitative sample
    is the run directory."""
    from fedicra.fl.setup import make_client

    clients = {key: make_client(experiment.config, experiment.method, key, experiment.manifest)
               for key in experiment.keys}
    for client in clients.values():
        client.samples_dir = Path(run_dir)
    return experiment.federation(InProcessTransport(clients, timeout=experiment.config["client_timeout"]),
                                 run_dir).run()

