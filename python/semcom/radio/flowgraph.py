"""Helpers for running flowgraphs from Python many times in one process."""

from __future__ import annotations

import time
from typing import Callable

from gnuradio import gr


class releasable_hier_block2(gr.hier_block2):
    """A hier block that remembers its message connections, so that release() can undo them.

    disconnect_all() leaves message connections in place (GNU Radio 3.10.5, cf. gnuradio#7706), and a
    Python block's message connection to a stream block keeps that block and its buffers alive: a
    released packet loopback of the receiver of every MCS kept 34 shared-memory segments, 0 once
    its message connections are undone."""

    def msg_connect(self, *args):
        super().msg_connect(*args)
        if not any(end is self for end in args):  # the hier's own ports go with disconnect_all()
            self.__dict__.setdefault("_message_edges", []).append(args)

    def disconnect_messages(self) -> None:
        for edge in self.__dict__.pop("_message_edges", []):
            self.msg_disconnect(*edge)


def release(*blocks: gr.hier_block2) -> None:
    """Disconnect stopped flowgraphs/hier blocks and every hier block they hold as attributes, recursively.

    A hier block that connects its own message ports keeps a reference to itself, so without this
    its buffers (shared-memory segments, a limited system resource: about 46 per packet loopback)
    outlive the run, and a process that runs a few dozen flowgraphs runs out of them.
    """
    seen: set[int] = set()

    def visit(hier: gr.hier_block2) -> None:
        if id(hier) in seen:
            return
        seen.add(id(hier))
        for value in vars(hier).values():
            if isinstance(value, gr.hier_block2):
                visit(value)
        if isinstance(hier, releasable_hier_block2):
            hier.disconnect_messages()
        hier.disconnect_all()

    for block in blocks:
        visit(block)


def run_until_delivered(tb: gr.top_block, delivered: Callable[[], int], expected: int,
                        progress: Callable[[], tuple], timeout_s: float, drain_s: float) -> None:
    """Run ``tb`` until ``delivered()`` reaches ``expected``, or ``progress()`` stays the same for ``drain_s``
    (what was lost will not come), or ``timeout_s`` passes; then stop it. It polls, because a loopback
    of bursts never ends by itself: its channel model keeps producing noise."""
    started = time.monotonic()
    tb.start()
    try:
        last, last_change = None, started
        while time.monotonic() - started < timeout_s and delivered() < expected:
            state = progress()
            now = time.monotonic()
            if state != last:
                last, last_change = state, now
            elif now - last_change > drain_s:
                break
            time.sleep(0.02)
    finally:
        tb.stop()
        tb.wait()
