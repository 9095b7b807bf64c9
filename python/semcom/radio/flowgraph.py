"""Helpers for running flowgraphs from Python many times in one process."""

from __future__ import annotations

from gnuradio import gr


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
        hier.disconnect_all()

    for block in blocks:
        visit(block)
