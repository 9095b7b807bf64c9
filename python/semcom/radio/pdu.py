"""The one place where PMT PDUs and Python bytes meet."""

from __future__ import annotations

import numpy as np
import pmt


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
