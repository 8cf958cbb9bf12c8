"""When the round loop writes its checkpoint.

A checkpoint is insurance: it costs a write of every client's state, and it pays only when a run
dies. `checkpoint_every: N` writes after every N-th round; `auto` (the default) is time-based and
keeps the writes under BUDGET of the round loop's wall time: after a write that took c seconds the
next one waits until the rounds since have taken at least max(MIN_INTERVAL_S, c / BUDGET)
seconds, the last round included: a run that dies loses at most that much of its rounds, and a run
shorter than MIN_INTERVAL_S writes none (a forced final write cost a 6 s run 2.6 %, measured by
benchmarks/bench_engine_overhead.py). A fixed N writes every N-th round and the last. A resumed run
is bit-identical whichever round its checkpoint holds, because every random draw is keyed by
(seed, site, step) and the checkpoint holds the full state of that round.
"""
from __future__ import annotations

import time
from typing import Callable

BUDGET = 0.01          # share of the round loop that mid-run checkpoints may take (plus the final one)
MIN_INTERVAL_S = 60.0  # at most a minute of rounds is lost when a run dies


class CheckpointCadence:
    def __init__(self, every: int | str, clock: Callable[[], float] = time.perf_counter):
        self.every, self.clock = every, clock
        self.since = clock()       # start of the rounds not yet in a checkpoint
        self.last_cost = 0.0       # seconds the previous write took
        self.total_cost = 0.0      # seconds spent writing checkpoints in this process
        self.writes = 0

    def due(self, round_: int, total: int) -> bool:
        if self.every != "auto":
            return round_ % int(self.every) == 0 or round_ == total
        return self.clock() - self.since >= max(MIN_INTERVAL_S, self.last_cost / BUDGET)

    def write(self, save: Callable[[], None]) -> None:
        """Run `save` and account for its cost."""
        began = self.clock()
        save()
        now = self.clock()
        self.last_cost = now - began
        self.total_cost += self.last_cost
        self.writes += 1
        self.since = now
