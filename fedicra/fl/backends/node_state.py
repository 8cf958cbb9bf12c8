"""A Flower node's personal state on the node's own disk, one file per round, so a run can resume.

In a Flower deployment every message runs in a fresh `flwr-clientapp` process, and a SuperNode that
dies loses its `context.state`. So after each training round the node writes its client's snapshot
(model, method state, best snapshots, random stream) to `<state-dir>/<run>/site<k>/round<r>.pt`
(atomically: temp file + rename), and each request is served from the newest state at or before the
round the server continues from. That makes three cases one rule:
- a normal round: the state of the previous round;
- a server resumed from its checkpoint of round R while the node went on to R+1: the state of R;
- a site dropped for a round (`allow_failures`): its state from before the dropped round.
The server says which of its checkpoints is the latest (`keep_from`); older states are pruned.
Nothing here is ever sent: the files stay on the node.

`<state-dir>` comes from the node config (`state-dir=/var/lib/fedicra`), else `$XDG_STATE_HOME/fedicra`
(default `~/.local/state/fedicra`). `<run>` is a fingerprint of the run configuration, so runs never
mix and a node restarted with the same run resumes.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
from pathlib import Path
from typing import Any

from fedicra.errors import UserError
from fedicra.fl.server import RESUMABLE_CHANGES

STATE_DIR = "state-dir"   # node config key
_FILE = re.compile(r"^round(\d+)\.pt$")


def run_fingerprint(config: dict[str, Any]) -> str:
    # keys a resume may change are not part of the run's identity (as for the server's checkpoint)
    identity = {k: v for k, v in config.items() if k not in RESUMABLE_CHANGES}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "fedicra"


class NodeState:
    """The saved rounds of one site of one run on this node."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    @classmethod
    def for_node(cls, config: dict[str, Any], node_config: dict[str, Any], key: int) -> "NodeState":
        root = Path(str(node_config[STATE_DIR])) if str(node_config.get(STATE_DIR, "")) else default_state_dir()
        return cls(root / run_fingerprint(config) / f"site{key}")

    def rounds(self) -> list[int]:
        if not self.folder.is_dir():
            return []
        return sorted(int(m[1]) for p in self.folder.iterdir() if (m := _FILE.match(p.name)))

    def load(self, upto: int) -> tuple[int, dict[str, Any]] | None:
        """(round, snapshot) of the newest saved state at or before round `upto`; None if there is none."""
        import torch

        saved = [r for r in self.rounds() if r <= upto]
        if not saved:
            if upto > 0 and not self.folder.is_dir():
                raise UserError(f"{self.folder}: no personal state of this site on this node, so it cannot "
                                f"continue after round {upto} (was the node's {STATE_DIR} lost or changed?)")
            return None
        path = self.folder / f"round{saved[-1]}.pt"
        try:
            return saved[-1], torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated, foreign or crafted file: refuse it, do not unpickle code
            raise UserError(f"{path}: unreadable node state ({type(err).__name__}: "
                            f"{' '.join(str(err).split())[:200]})") from None

    def start(self) -> None:
        """Mark that this node serves the run (a missing folder later means lost state)."""
        self.folder.mkdir(parents=True, exist_ok=True)

    def save(self, round_: int, snapshot: dict[str, Any], keep_from: int) -> None:
        """Write the state after `round_`; drop states the server can no longer ask for."""
        import torch

        self.start()
        buffer = io.BytesIO()
        torch.save(snapshot, buffer)
        path = self.folder / f"round{round_}.pt"
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as handle:
            handle.write(buffer.getbuffer())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        self.prune(keep_from)

    def prune(self, keep_from: int) -> None:
        """Delete the states older than the one the server's checkpoint of round `keep_from` continues from."""
        kept = [r for r in self.rounds() if r <= keep_from]
        oldest_needed = kept[-1] if kept else 0   # the state the server's latest checkpoint continues from
        for r in self.rounds():
            if r < oldest_needed:
                (self.folder / f"round{r}.pt").unlink(missing_ok=True)
        for stale in self.folder.glob(".round*.pt.tmp-*"):   # left by a node killed mid-write
            stale.unlink(missing_ok=True)
