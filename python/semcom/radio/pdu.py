"""The one place where PMT PDUs and Python bytes meet."""

from __future__ import annotations

import numpy as np
import pmt
from gnuradio import gr


def to_pdu(payload: bytes, meta: dict | None = None) -> pmt.pmt_t:
    """bytes (+ metadata dict of plain values) -> pmt.cons(meta_dict, u8vector)."""
    meta_pmt = pmt.make_dict()
    for key, value in (meta or {}).items():
        meta_pmt = pmt.dict_add(meta_pmt, pmt.intern(key), pmt.to_pmt(value))
    return pmt.cons(meta_pmt, pmt.to_pmt(np.frombuffer(payload, np.uint8)))


def from_pdu(msg: pmt.pmt_t) -> tuple[dict, bytes]:
    """pmt.cons(meta, u8vector) -> (meta as dict, payload bytes); ValueError for anything else."""
    if not pmt.is_pair(msg) or not pmt.is_u8vector(pmt.cdr(msg)):
        raise ValueError("message is not a PDU (pair of metadata and u8vector)")
    meta = pmt.car(msg)
    meta_dict = pmt.to_python(meta) if pmt.is_dict(meta) else {}
    return (meta_dict or {}), bytes(pmt.u8vector_elements(pmt.cdr(msg)))


class pdu_list_source(gr.basic_block):
    """Publishes a fixed list of messages (PDUs) on ``out`` when the flowgraph starts.

    For runs with a known set of packets (PER measurement, analog frames, tests); items that are
    bytes become PDUs, PMTs are sent as they are.
    """

    def __init__(self, messages: list):
        gr.basic_block.__init__(self, "semcom_pdu_list_source", None, None)
        self.messages = [to_pdu(m) if isinstance(m, (bytes, bytearray)) else m for m in messages]
        self.message_port_register_out(pmt.intern("out"))

    def start(self):
        for message in self.messages:
            self.message_port_pub(pmt.intern("out"), message)
        return True
