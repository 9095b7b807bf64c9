"""Transmission schemes compared by ``semcom eval``, each at a budget of channel symbols per image.

A scheme is one small class registered by name:

    prepare(image, budget_symbols, key_mask) -> Payload        pick a rate that fits, make the PDUs
    transmit(payload, channel, snr_db, rng)  -> Delivery       through the channel (PDUs by default)
    reconstruct(payload, delivery)           -> Outcome        what the receiver shows

The analog scheme (``deepjscc``: the image as complex channel symbols) overrides ``transmit``: its
symbols cross the channel themselves (the torch AWGN/Rayleigh model in fast mode, the analog GNU Radio
flowgraph in flowgraph mode; the two agree within 1 dB, tests/test_jscc.py).

Channel symbols of a PDU: ``semcom.radio.packet.channel_symbols_for`` (ramps, header, FEC-coded
payload+CRC) with the PHY's modulation and code; a frame's symbols are the sum over its PDUs.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from PIL import Image

from semcom.codec import registry
from semcom.codec.frame import FrameAssembler
from semcom.codec.pipeline import PipelineConfig, SemanticDecoder, SemanticEncoder
from semcom.constants import DEFAULT_KEY_FRACTION
from semcom.eval.baselines import largest_fitting

# A lost frame (nothing decodable came out) is scored as this uniform image: the receiver shows grey.
LOST_FRAME_GREY = 128
# ``semcom``: when the lowest key quality does not fit the budget, the key fraction is halved, down to this.
MIN_KEY_FRACTION = 0.02
# Separation baselines: whole-image chunks carry ``index u16 | count u16`` so the receiver can reassemble.
CHUNK_HEADER = struct.Struct(">HH")
SEPARATION_SCALES = (1, 2, 4)       # downscale the image when even the lowest quality does not fit

SCHEMES: dict[str, type[Scheme]] = {}


def register_scheme(name: str) -> Callable[[type], type]:
    def decorate(cls: type) -> type:
        cls.name = name
        SCHEMES[name] = cls
        return cls
    return decorate


@dataclass
class Payload:
    """What a scheme sends for one image. ``rate`` records the knobs it chose (quality, key fraction, ...)."""

    pdus: list[bytes]
    channel_symbols: int
    rate: dict[str, Any] = field(default_factory=dict)
    state: Any = None           # whatever ``reconstruct`` needs

    @property
    def bytes(self) -> int:
        return sum(map(len, self.pdus))


@dataclass
class Outcome:
    image: np.ndarray           # (H, W, 3) uint8, what the receiver shows
    frame_lost: bool
    info: dict[str, Any] = field(default_factory=dict)


def grey_like(image: np.ndarray) -> np.ndarray:
    return np.full_like(image, LOST_FRAME_GREY)


class Scheme:
    """Base: PDUs through the channel. ``phy`` has ``modulation``, ``fec_code`` and ``mtu_bytes``."""

    name = ""

    def __init__(self, phy, config: PipelineConfig | None = None):
        self.phy = phy
        self.config = config or PipelineConfig()

    def symbols(self, pdus: list[bytes]) -> int:
        from semcom.radio.packet import channel_symbols_for

        return sum(channel_symbols_for(len(p), self.phy.modulation, self.phy.fec_code) for p in pdus)

    def prepare(self, image: np.ndarray, budget_symbols: int, key_mask: np.ndarray) -> Payload:
        raise NotImplementedError

    def transmit(self, payload: Payload, channel, snr_db: float, rng: np.random.Generator):
        return channel.transmit(payload.pdus, snr_db, rng)

    def reconstruct(self, payload: Payload, delivery) -> Outcome:
        raise NotImplementedError

    def outcome_key(self, payload: Payload, delivery) -> Any:
        """Equal keys mean equal reconstructions (lets the sweep score each distinct outcome once)."""
        return tuple(delivery.delivered)


class _SemanticBase(Scheme):
    def __init__(self, phy, config: PipelineConfig | None = None):
        super().__init__(phy, config)
        self.encoder = SemanticEncoder(self.config)
        self.decoder = SemanticDecoder(self.config)

    def _encode(self, image: np.ndarray, key_mask: np.ndarray):
        encoded = self.encoder.encode(image, key_mask=key_mask)
        return encoded, encoded.to_pdus(self.config.pdu_bytes)

    def reconstruct(self, payload: Payload, delivery) -> Outcome:
        image = payload.state
        assembler = FrameAssembler()
        frames = [f for p in delivery.delivered for f in assembler.push(p)] + assembler.flush_all()
        if not frames:                    # both header copies lost: nothing can be drawn
            return Outcome(grey_like(image), True, {})
        recon = self.decoder.decode(frames[0], seed=0)
        return Outcome(recon.image, False, {"generated_key_share": round(recon.generated_share, 4),
                                            "text_lost": int(recon.text_lost)})


@register_scheme("semcom")
class SemcomScheme(_SemanticBase):
    """Ours, the configured pipeline. Rate rule: the largest key-codec quality (bisection over
    1..``max_quality``; a codec without a quality knob is used as configured) whose frame fits the
    budget; if quality 1 does not fit, the key fraction is halved (saliency splitter re-run) until it
    fits or falls under MIN_KEY_FRACTION; then the key region is dropped (text only)."""

    def __init__(self, phy, config: PipelineConfig | None = None):
        super().__init__(phy, config)
        self._configured_key_codec = self.encoder.key_codec

    def prepare(self, image: np.ndarray, budget_symbols: int, key_mask: np.ndarray) -> Payload:
        c = self.config
        configured = self._configured_key_codec
        max_quality = getattr(configured, "max_quality", None)
        fraction, mask = DEFAULT_KEY_FRACTION, key_mask
        while True:
            def fits(quality: int | None, mask=mask):
                self.encoder.key_codec = configured if quality is None else \
                    registry.create("key", c.key, **{**c.key_options, "quality": quality})
                encoded, pdus = self._encode(image, mask)
                return (encoded, pdus) if self.symbols(pdus) <= budget_symbols else None

            if not mask.any():
                found = None
            elif max_quality is None:
                result = fits(None)
                found = None if result is None else (0, result)
            else:
                found = largest_fitting(1, max_quality, fits)
            if found is not None:
                quality, (encoded, pdus) = found
                return Payload(pdus, self.symbols(pdus),
                               {"quality": quality, "key_fraction": round(float(encoded.key_mask.mean()), 4)}, image)
            if not mask.any() or fraction / 2 < MIN_KEY_FRACTION or c.regions != "saliency":
                break
            fraction /= 2
            mask = registry.create("regions", "saliency", **{**c.regions_options, "key_fraction": fraction}).split(image)
        encoded, pdus = self._encode(image, np.zeros(image.shape[:2], bool))
        return Payload(pdus, self.symbols(pdus), {"quality": 0, "key_fraction": 0.0}, image)


@register_scheme("text-only")
class TextOnlyScheme(_SemanticBase):
    """Header + text segment only (empty key region): the renderer draws the whole image from the words."""

    def prepare(self, image: np.ndarray, budget_symbols: int, key_mask: np.ndarray) -> Payload:
        encoded, pdus = self._encode(image, np.zeros(image.shape[:2], bool))
        return Payload(pdus, self.symbols(pdus), {"quality": 0, "key_fraction": 0.0}, image)


class _SeparationScheme(Scheme):
    """Whole-image codec + CRC/FEC/QAM (classic separation). The largest quality whose chunks fit the
    budget; if none fits, the image is downscaled (x2, x4) and upscaled at the receiver. Any lost PDU
    makes the file undecodable: the frame is lost (scored as a mid-grey image)."""

    format = ""
    max_quality = 100

    def _save_options(self, quality: int) -> dict:
        return {"quality": quality}

    def _chunks(self, data: bytes) -> list[bytes]:
        size = self.config.pdu_bytes - CHUNK_HEADER.size
        parts = [data[i:i + size] for i in range(0, len(data), size)]
        return [CHUNK_HEADER.pack(i, len(parts)) + part for i, part in enumerate(parts)]

    def prepare(self, image: np.ndarray, budget_symbols: int, key_mask: np.ndarray) -> Payload:
        h, w = image.shape[:2]
        for scale in SEPARATION_SCALES:
            small = image if scale == 1 else np.asarray(
                Image.fromarray(image).resize((max(1, w // scale), max(1, h // scale)), Image.LANCZOS))

            def fits(quality: int, small=small):
                buffer = io.BytesIO()
                Image.fromarray(small).save(buffer, format=self.format, **self._save_options(quality))
                pdus = self._chunks(buffer.getvalue())
                return pdus if self.symbols(pdus) <= budget_symbols else None

            found = largest_fitting(1, self.max_quality, fits)
            if found is not None:
                quality, pdus = found
                return Payload(pdus, self.symbols(pdus), {"quality": quality, "scale": scale}, image)
        return Payload([], 0, {"quality": 0, "scale": 0}, image)     # nothing fits: nothing is sent

    def reconstruct(self, payload: Payload, delivery) -> Outcome:
        image = payload.state
        if not payload.pdus or len(delivery.delivered) < len(payload.pdus):
            return Outcome(grey_like(image), True, {})
        data = b"".join(p[CHUNK_HEADER.size:] for p in delivery.delivered)
        decoded = Image.open(io.BytesIO(data)).convert("RGB")
        if decoded.size != (image.shape[1], image.shape[0]):
            decoded = decoded.resize((image.shape[1], image.shape[0]), Image.BICUBIC)
        return Outcome(np.asarray(decoded), False, {})

    def outcome_key(self, payload: Payload, delivery) -> Any:
        return len(delivery.delivered) == len(payload.pdus) and bool(payload.pdus)


@register_scheme("jpeg+fec")
class JpegFecScheme(_SeparationScheme):
    format = "JPEG"
    max_quality = 95

    def _save_options(self, quality: int) -> dict:
        return {"quality": quality, "optimize": True}


@register_scheme("webp+fec")
class WebpFecScheme(_SeparationScheme):
    format = "WEBP"

    def _save_options(self, quality: int) -> dict:
        return {"quality": quality, "method": 6}


def avif_available() -> bool:
    from PIL import features

    return bool(features.check("avif"))


@register_scheme("avif+fec")
class AvifFecScheme(_SeparationScheme):
    """AVIF through Pillow's own plugin (Pillow >= 11.2 wheels carry libavif)."""

    format = "AVIF"

    def _save_options(self, quality: int) -> dict:
        return {"quality": quality, "speed": 6}


@dataclass
class AnalogDelivery:
    """What the analog channel returns: the decoded image (None when nothing was sent); no PDUs."""

    image: np.ndarray | None
    sent: int = 0
    lost: int = 0


@register_scheme("deepjscc")
class DeepJsccScheme(Scheme):
    """DeepJSCC (semcom.codec.jscc): the whole image as power-normalised complex symbols, k/n = 1/16,
    with the analog framing's preamble, header and pilots counted. If the image does not fit the
    budget it is downscaled (x2, x4) and upscaled at the receiver. No cliff: quality follows the SNR."""

    def prepare(self, image: np.ndarray, budget_symbols: int, key_mask: np.ndarray) -> Payload:
        from semcom.codec import jscc
        from semcom.radio import analog
        from semcom.radio.analog_loopback import TILES_PER_FRAME

        h, w = image.shape[:2]
        per_tile = jscc.symbols_for(jscc.TILE_PX, jscc.TILE_PX)
        for scale in SEPARATION_SCALES:
            small = image if scale == 1 else np.asarray(
                Image.fromarray(image).resize((max(1, w // scale), max(1, h // scale)), Image.LANCZOS))
            tiles = len(jscc.split_tiles(small)[0])
            frames, last = divmod(tiles, TILES_PER_FRAME)
            symbols = frames * analog.channel_symbols_for(TILES_PER_FRAME * per_tile)
            symbols += analog.channel_symbols_for(last * per_tile) if last else 0
            if symbols <= budget_symbols:
                return Payload([], symbols, {"scale": scale}, (image, small))
        return Payload([], 0, {"scale": 0}, (image, None))

    def transmit(self, payload: Payload, channel, snr_db: float, rng: np.random.Generator):
        from semcom.radio.analog_loopback import jscc_transmit

        image, small = payload.state
        if small is None:
            return AnalogDelivery(None)
        via = "flowgraph" if channel.mode == "flowgraph" else "torch"
        return AnalogDelivery(jscc_transmit(small, snr_db, channel=channel.fading, via=via,
                                            seed=int(rng.integers(0, 2**31 - 1))))

    def reconstruct(self, payload: Payload, delivery: AnalogDelivery) -> Outcome:
        image, _ = payload.state
        received = delivery.image
        if received is None:
            return Outcome(grey_like(image), True, {})
        if received.shape != image.shape:
            received = np.asarray(Image.fromarray(received).resize((image.shape[1], image.shape[0]), Image.BICUBIC))
        return Outcome(received, False, {})

    def outcome_key(self, payload: Payload, delivery) -> Any:
        return id(delivery)         # every noise realisation is a different image


def default_schemes() -> list[str]:
    names = ["semcom", "jpeg+fec", "webp+fec", "avif+fec", "deepjscc", "text-only"]
    return [n for n in names if n != "avif+fec" or avif_available()]
