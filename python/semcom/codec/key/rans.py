"""A compact range-ANS (rANS) entropy coder in pure Python + numpy, with static frequency tables.

rANS is the range variant of asymmetric numeral systems: an arithmetic coder whose state is one
integer, which makes an exact, short implementation possible without carry handling.

- state ``x`` lives in [2**16, 2**32); the coder emits/consumes 16-bit words;
- every symbol ``s`` of table ``t`` has ``freq[t][s] >= 1`` out of ``2**PRECISION_BITS``;
- the encoder runs over the symbols in reverse and starts from ``x = 2**16``, so a decoder that has
  read exactly ``n`` symbols must end in that same state with every word consumed: a free integrity
  check that catches almost every corrupt or truncated stream.

Decoding is bounded by the expected symbol count and by the stream length, so a forged stream can
neither hang the decoder nor make it allocate.
"""

from __future__ import annotations

from bisect import bisect_right

import numpy as np

PRECISION_BITS = 16
_TOTAL = 1 << PRECISION_BITS
_MASK = _TOTAL - 1
_LOWER = 1 << 16                   # lower bound of the normalised state
_WORD_BITS = 16
_WORD_MASK = (1 << _WORD_BITS) - 1


def quantize_frequencies(counts: np.ndarray) -> np.ndarray:
    """(..., n) non-negative counts -> int64 frequencies, each >= 1, summing to 2**PRECISION_BITS per row."""
    counts = np.asarray(counts, np.float64)
    n = counts.shape[-1]
    if n > _TOTAL // 2:
        raise ValueError(f"alphabet of {n} symbols is too large for {PRECISION_BITS}-bit frequencies")
    flat = counts.reshape(-1, n)
    out = np.empty(flat.shape, np.int64)
    for row, c in enumerate(flat):
        p = c / c.sum() if c.sum() > 0 else np.full(n, 1.0 / n)
        f = np.maximum(1, np.floor(p * (_TOTAL - n)).astype(np.int64) + 1)
        # Put the rounding remainder on the most probable symbols (never below 1 anywhere).
        diff = _TOTAL - int(f.sum())
        order = np.argsort(-p)
        i = 0
        while diff != 0:
            j = order[i % n]
            step = 1 if diff > 0 else -1
            if f[j] + step >= 1:
                f[j] += step
                diff -= step
            i += 1
        out[row] = f
    return out.reshape(counts.shape)


class FrequencyTables:
    """A set of static tables; table ``t`` codes symbols 0..sizes[t]-1.

    ``freqs``: (T, n_max) int, each row's first ``sizes[t]`` entries >= 1 and summing to 2**16.
    """

    def __init__(self, freqs: np.ndarray, sizes: np.ndarray):
        freqs = np.asarray(freqs, np.int64)
        sizes = np.asarray(sizes, np.int64)
        if freqs.ndim != 2 or sizes.shape != (freqs.shape[0],) or (sizes > freqs.shape[1]).any():
            raise ValueError("freqs must be (T, n) and sizes (T,) with sizes <= n")
        self._init_rows([freqs[t, : sizes[t]] for t in range(freqs.shape[0])])

    @classmethod
    def from_flat(cls, flat: np.ndarray, sizes: np.ndarray) -> FrequencyTables:
        """Tables stored back to back: ``flat`` holds sizes[0] entries of table 0, then table 1, ..."""
        flat = np.asarray(flat, np.int64).ravel()
        sizes = np.asarray(sizes, np.int64).ravel()
        if (sizes < 1).any() or int(sizes.sum()) != flat.size:
            raise ValueError(f"{flat.size} flat frequencies do not match table sizes summing to {int(sizes.sum())}")
        self = cls.__new__(cls)
        self._init_rows(np.split(flat, np.cumsum(sizes)[:-1]))
        return self

    def _init_rows(self, rows: list[np.ndarray]) -> None:
        self.freq = []
        self.start = []
        for t, f in enumerate(rows):
            if f.size < 1 or (f < 1).any() or int(f.sum()) != _TOTAL:
                raise ValueError(f"table {t}: frequencies must be >= 1 and sum to {_TOTAL}")
            self.freq.append([int(v) for v in f])
            self.start.append([int(v) for v in np.concatenate([[0], np.cumsum(f)[:-1]])])
        self.sizes = np.array([len(f) for f in rows], np.int64)

    def encode(self, symbols: np.ndarray, tables: np.ndarray) -> bytes:
        """symbols[i] coded with table tables[i]; both 1-D int arrays of equal length."""
        symbols = np.asarray(symbols, np.int64).ravel()
        tables = np.asarray(tables, np.int64).ravel()
        if symbols.shape != tables.shape:
            raise ValueError("symbols and tables differ in length")
        if symbols.size and ((symbols < 0).any() or (symbols >= self.sizes[tables]).any()):
            raise ValueError("symbol outside its table's alphabet")
        words: list[int] = []
        x = _LOWER
        freq, start = self.freq, self.start
        for s, t in zip(symbols[::-1].tolist(), tables[::-1].tolist()):
            f = freq[t][s]
            x_max = f << (32 - PRECISION_BITS)          # ((_LOWER >> PRECISION) << WORD_BITS) * f
            while x >= x_max:
                words.append(x & _WORD_MASK)
                x >>= _WORD_BITS
            x = ((x // f) << PRECISION_BITS) + (x % f) + start[t][s]
        words.append(x & _WORD_MASK)
        words.append(x >> _WORD_BITS)
        return np.array(words[::-1], dtype="<u2").tobytes()

    def decode(self, data: bytes, tables: np.ndarray) -> np.ndarray:
        """Inverse of encode for the same ``tables`` sequence; ValueError on corrupt or truncated data."""
        tables = np.asarray(tables, np.int64).ravel()
        if len(data) % 2 or len(data) < 4:
            raise ValueError(f"rANS stream of {len(data)} bytes: must be an even number >= 4")
        words = np.frombuffer(data, dtype="<u2").tolist()
        n_words = len(words)
        x = (words[0] << _WORD_BITS) | words[1]
        pos = 2
        if x < _LOWER:
            raise ValueError("corrupt rANS stream: initial state out of range")
        out = [0] * tables.size
        freq, start = self.freq, self.start
        for i, t in enumerate(tables.tolist()):
            slot = x & _MASK
            st = start[t]
            s = bisect_right(st, slot) - 1
            x = freq[t][s] * (x >> PRECISION_BITS) + slot - st[s]
            while x < _LOWER:
                if pos >= n_words:
                    raise ValueError("truncated rANS stream")
                x = (x << _WORD_BITS) | words[pos]
                pos += 1
            out[i] = s
        if x != _LOWER or pos != n_words:
            raise ValueError("corrupt rANS stream: final state or length mismatch")
        return np.array(out, np.int64)
