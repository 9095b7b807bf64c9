"""Helpers for running flowgraphs from Python many times in one process."""

from __future__ import annotations

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
