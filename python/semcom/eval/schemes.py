"""Transmission schemes compared by ``semcom eval``, each at a budget of complex channel symbols per image.

A scheme is one small class registered by name:

    prepare(image, key_mask, budget_symbols, mcs) -> Payload     pick a rate that fits, make the PDUs
    transmit(payload, channel, mcs, snr_db, rng)  -> Delivery    through the channel (PDUs by default)
    reconstruct(payload, delivery)                -> Outcome     what the receiver shows

Digital schemes are prepared and sent once per MCS (``semcom.radio.mcs``); the sweep reports each at its
best MCS per SNR. A scheme that adapts to the SNR (``ours-adapt``) is instead prepared once per SNR,
``prepare_at_snr(image, key_mask, budget_symbols, snr_db, per_table)``, and picks each PDU's MCS itself.
Every PDU costs ``semcom.radio.packet.channel_symbols_for`` symbols at its MCS: ramps, access code and
header, FEC-coded payload and CRC32, so every overhead counts against the budget.
The analog scheme (``deepjscc``) has no MCS (``mcs`` is None): its symbols cross the channel themselves.

What the receiver shows when nothing decodable arrived (no header of ours, any PDU of a whole-image file
missing, the background file of roi-webp missing) is a mid-grey image (``LOST_FRAME_GREY``): that is what
is scored.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import math
import struct
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
from PIL import Image

from semcom.codec import registry
from semcom.codec.frame import FrameAssembler
from semcom.codec.pipeline import PipelineConfig, SemanticDecoder, SemanticEncoder
from semcom.codec.rate import OnceDescriber, largest_fitting
from semcom.constants import DEFAULT_KEY_FRACTION

LOST_FRAME_GREY = 128
# ``ours``: when the lowest key quality does not fit the budget, the key fraction is halved, down to this.
MIN_KEY_FRACTION = 0.02
# Whole-image files travel as chunks of ``index u16 | count u16 | bytes``.
CHUNK_HEADER = struct.Struct(">HH")
# Below the codecs' lowest quality, images are downscaled by these factors (upscaled at the receiver).
DOWNSCALE_FACTORS = tuple(round(1.0 / 1.25**k, 4) for k in range(12))      # 1 .. 0.09
# roi-webp: the background file gets at most this share of the symbol budget, the key tiles the rest.
ROI_BACKGROUND_SHARE = 0.3
ROI_KEY_CODEC = "webp"

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
    pdu_mcs: list[str] | None = None    # each PDU's own MCS (a scheme that adapts to the SNR); None: the sweep's
    encoded: Any = None         # the semantic schemes' chosen frame (semcom.codec.pipeline.Encoded)

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


def resized(image: np.ndarray, width: int, height: int, resample=Image.LANCZOS) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), resample))


def downscaled(image: np.ndarray, factor: float) -> np.ndarray:
    h, w = image.shape[:2]
    return resized(image, max(1, round(w * factor)), max(1, round(h * factor)))


def symbols_of(pdus: list[bytes], mcs) -> int:
    from semcom.radio.packet import channel_symbols_for

    return sum(channel_symbols_for(len(p), mcs.modulation, mcs.fec_code) for p in pdus)


class Scheme:
    """Base of the digital schemes: PDUs through the channel at one MCS."""

    name = ""
    digital = True              # prepared and sent once per MCS of the table
    adapts_to_snr = False       # prepared once per SNR instead (``prepare_at_snr``), each PDU on an MCS it picks
    channel_stream: str | None = None   # the scheme whose channel draws this one shares in the sweep (None: its own)

    def __init__(self, config: PipelineConfig | None = None):
        self.config = config or PipelineConfig()
        self._image = None
        self._memo: dict = {}

    def _memoised(self, image: np.ndarray, key, make: Callable[[], Any]):
        """``make()`` once per image and key: encodes at one quality serve every MCS and budget."""
        if image is not self._image:
            self._image, self._memo = image, {}
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def prepare(self, image: np.ndarray, key_mask: np.ndarray, budget_symbols: int, mcs) -> Payload:
        raise NotImplementedError

    def transmit(self, payload: Payload, channel, mcs, snr_db: float, rng: np.random.Generator):
        return channel.transmit(payload.pdus, mcs.name, snr_db, rng)

    def reconstruct(self, payload: Payload, delivery) -> Outcome:
        raise NotImplementedError

    def outcome_key(self, payload: Payload, delivery) -> Any:
        """Equal keys mean equal reconstructions (lets the sweep score each distinct outcome once)."""
        return tuple(delivery.delivered)


# --- ours ------------------------------------------------------------------------------------------
class TileMemo:
    """A key codec whose ``encode_tile`` remembers its output by tile content.

    The rate search re-encodes the same key tiles at a quality for every budget and MCS, and ``ours``,
    ``ours-nosketch`` and ``ours-nogen`` code the same tiles: each distinct (codec setting, tile) is coded
    once per process. Holds one image's tiles at a time (``use_image``), so memory stays at one image's
    coded tiles per setting.
    """

    _store: dict = {}
    _image = None

    def __init__(self, codec, setting: tuple):
        self.codec, self.setting = codec, setting

    def __getattr__(self, name):
        return getattr(self.codec, name)

    @classmethod
    def use_image(cls, image: np.ndarray) -> None:
        if image is not cls._image:
            cls._image = image
            cls._store.clear()

    def encode_tile(self, tile: np.ndarray) -> bytes:
        tile = np.ascontiguousarray(tile)
        key = (self.setting, tile.shape, hashlib.blake2b(tile.tobytes(), digest_size=16).digest())
        if key not in self._store:
            self._store[key] = self.codec.encode_tile(tile)
        return self._store[key]

    def encode_tiles(self, tiles: list[np.ndarray]) -> list[bytes]:
        """One by one through the memo: the sweep's workers are already one process per core."""
        return [self.encode_tile(t) for t in tiles]


class _SemanticBase(Scheme):
    """The semantic pipeline with ``config_overrides`` applied to the configured one.

    Schemes with the same pipeline configuration (``ours`` and ``ours-nogen``) share their encodes.
    """

    config_overrides: dict[str, Any] = {}
    _shared_memos: dict[str, list] = {}

    def __init__(self, config: PipelineConfig | None = None):
        super().__init__(replace(config or PipelineConfig(), **self.config_overrides))
        self.encoder = SemanticEncoder(self.config)
        self.encoder.describer = OnceDescriber(self.encoder.describer)   # one text per rate search
        self.decoder = SemanticDecoder(self.config)
        self._configured_key_codec = self._memo_codec(None)
        self._memo_slot = self._shared_memos.setdefault(repr(self.config), [None, {}])

    def _memo_codec(self, quality: int | None):
        c = self.config
        options = c.key_options if quality is None else {**c.key_options, "quality": quality}
        return TileMemo(registry.create("key", c.key, **options), (c.key, repr(sorted(options.items()))))

    def _memoised(self, image: np.ndarray, key, make: Callable[[], Any]):
        TileMemo.use_image(image)
        slot = self._memo_slot
        if image is not slot[0]:
            slot[0], slot[1] = image, {}
        if key not in slot[1]:
            slot[1][key] = make()
        return slot[1][key]

    def _pdus(self, image: np.ndarray, mask: np.ndarray, quality: int | None, fraction: float):
        def make():
            self.encoder.key_codec = self._configured_key_codec if quality is None else self._memo_codec(quality)
            encoded = self.encoder.encode(image, key_mask=mask)
            return encoded, encoded.to_pdus(self.config.pdu_bytes)
        return self._memoised(image, (quality, fraction), make)

    def _decode(self, payload: Payload, delivery):
        assembler = FrameAssembler()
        frames = [f for p in delivery.delivered for f in assembler.push(p)] + assembler.flush_all()
        return self.decoder.decode(frames[0], seed=0) if frames else None

    def reconstruct(self, payload: Payload, delivery) -> Outcome:
        image = payload.state
        recon = self._decode(payload, delivery)
        if recon is None:                    # both header copies lost: nothing can be drawn
            return Outcome(grey_like(image), True, {})
        return Outcome(self._shown(recon), False, {"generated_key_share": round(recon.generated_share, 4),
                                                   "text_lost": int(recon.text_lost)})

    def _shown(self, recon) -> np.ndarray:
        return recon.image


@register_scheme("ours")
class SemcomScheme(_SemanticBase):
    """Ours, the configured pipeline, every PDU on the MCS. Rate rule: the largest key-codec quality
    (bisection over 1..``max_quality``; a codec without a quality knob is used as configured) whose frame
    fits the budget; if quality 1 does not fit, the key fraction is halved (saliency splitter re-run) until
    it fits or falls under MIN_KEY_FRACTION; then the key region is dropped (text only)."""

    def prepare(self, image: np.ndarray, key_mask: np.ndarray, budget_symbols: int, mcs) -> Payload:
        max_quality = getattr(self._configured_key_codec, "max_quality", None)
        for mask, fraction in self._key_regions(image, key_mask):
            def fits(quality, mask=mask, fraction=fraction):
                encoded, pdus = self._pdus(image, mask, quality, fraction)
                return (encoded, pdus) if symbols_of(pdus, mcs) <= budget_symbols else None

            found = (None if fits(None) is None else (0, fits(None))) if max_quality is None \
                else largest_fitting(1, max_quality, fits)
            if found is not None:
                quality, (encoded, pdus) = found
                return Payload(pdus, symbols_of(pdus, mcs),
                               {"quality": quality, "key_fraction": round(float(encoded.key_mask.mean()), 4)}, image)
        return text_only_payload(self, image, budget_symbols, mcs)

    def _key_regions(self, image: np.ndarray, key_mask: np.ndarray):
        """(mask, key fraction) to try in turn: the key region, then (saliency splitter only) the splitter re-run
        at half the fraction, down to MIN_KEY_FRACTION; nothing for an empty key region."""
        c = self.config
        fraction, mask = DEFAULT_KEY_FRACTION, key_mask
        while mask.any():
            yield mask, fraction
            if fraction / 2 < MIN_KEY_FRACTION or c.regions != "saliency":
                return
            fraction /= 2
            mask = self._memoised(image, ("mask", fraction), lambda f=fraction: registry.create(
                "regions", "saliency", **{**c.regions_options, "key_fraction": f}).split(image))


def text_only_pdus(scheme: _SemanticBase, image: np.ndarray) -> list[bytes]:
    """The frame without a key region: header, text and (when configured) sketch."""
    return scheme._pdus(image, np.zeros(image.shape[:2], bool), None, 0.0)[1]


def text_only_payload(scheme: _SemanticBase, image: np.ndarray, budget_symbols: int, mcs) -> Payload:
    """Header and text (no key region); nothing at all when even that does not fit the budget."""
    pdus = text_only_pdus(scheme, image)
    if symbols_of(pdus, mcs) > budget_symbols:
        return Payload([], 0, {"quality": 0, "key_fraction": 0.0}, image)
    return Payload(pdus, symbols_of(pdus, mcs), {"quality": 0, "key_fraction": 0.0}, image)


@register_scheme("ours-nosketch")
class OursNoSketchScheme(SemcomScheme):
    """Ablation: ours without the SKETCH segment (the background is generated from the text alone)."""

    config_overrides = {"sketch_budget": 0}


@register_scheme("ours-nogen")
class OursNoGeneratorScheme(SemcomScheme):
    """Ablation: ours without a generator: the receiver shows the received key pixels on mid-grey."""

    def _shown(self, recon) -> np.ndarray:
        return np.where(recon.received_mask[..., None], recon.image, np.uint8(LOST_FRAME_GREY))


@register_scheme("text-only")
class TextOnlyScheme(_SemanticBase):
    """Header + text segment only (no key region, no sketch): the generator draws the image from the words."""

    config_overrides = {"sketch_budget": 0}

    def prepare(self, image: np.ndarray, key_mask: np.ndarray, budget_symbols: int, mcs) -> Payload:
        return text_only_payload(self, image, budget_symbols, mcs)


# --- whole-image files (separation) -----------------------------------------------------------------
def file_chunks(data: bytes, pdu_bytes: int) -> list[bytes]:
    size = pdu_bytes - CHUNK_HEADER.size
    parts = [data[i:i + size] for i in range(0, len(data), size)]
    return [CHUNK_HEADER.pack(i, len(parts)) + part for i, part in enumerate(parts)]


def file_from_chunks(chunks: list[bytes], count: int) -> bytes | None:
    """The file when all ``count`` chunks arrived, else None (one lost chunk makes it undecodable)."""
    parts = {}
    for chunk in chunks:
        index, total = CHUNK_HEADER.unpack_from(chunk)
        if total == count:
            parts[index] = chunk[CHUNK_HEADER.size:]
    return b"".join(parts[i] for i in range(count)) if len(parts) == count else None


class _WholeImageScheme(Scheme):
    """Whole-image codec + CRC + FEC + modulation (classic separation): the largest quality whose chunks fit
    the budget; if none fits, the image is downscaled (upscaled at the receiver). Any lost PDU makes the file
    undecodable: the receiver shows grey."""

    format = ""
    max_quality = 100

    def _save_options(self, quality: int) -> dict:
        return {"quality": quality}

    def encode(self, image: np.ndarray, factor: float, quality: int) -> bytes:
        def make():
            buffer = io.BytesIO()
            Image.fromarray(downscaled(image, factor)).save(buffer, format=self.format, **self._save_options(quality))
            return buffer.getvalue()
        return self._memoised(image, (factor, quality), make)

    def largest_file(self, image: np.ndarray, fits_bytes: Callable[[list[bytes]], bool]):
        """(factor, quality, chunks) of the largest file whose chunks pass ``fits_bytes``, or None."""
        for factor in DOWNSCALE_FACTORS:
            def fits(quality, factor=factor):
                chunks = file_chunks(self.encode(image, factor, quality), self.config.pdu_bytes)
                return chunks if fits_bytes(chunks) else None

            found = largest_fitting(1, self.max_quality, fits)
            if found is not None:
                return factor, found[0], found[1]
        return None

    def prepare(self, image: np.ndarray, key_mask: np.ndarray, budget_symbols: int, mcs) -> Payload:
        found = self.largest_file(image, lambda chunks: symbols_of(chunks, mcs) <= budget_symbols)
        if found is None:
            return Payload([], 0, {"quality": 0, "scale": 0}, image)     # nothing fits: nothing is sent
        factor, quality, chunks = found
        return Payload(chunks, symbols_of(chunks, mcs), {"quality": quality, "scale": factor}, image)

    def decode_file(self, data: bytes | None, shape) -> np.ndarray | None:
        if data is None:
            return None
        decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        return resized(decoded, shape[1], shape[0], Image.BICUBIC)

    def reconstruct(self, payload: Payload, delivery) -> Outcome:
        image = payload.state
        decoded = self.decode_file(file_from_chunks(delivery.delivered, len(payload.pdus)), image.shape) \
            if payload.pdus else None
        return Outcome(grey_like(image), True, {}) if decoded is None else Outcome(decoded, False, {})

    def outcome_key(self, payload: Payload, delivery) -> Any:
        return len(delivery.delivered) == len(payload.pdus) and bool(payload.pdus)


@register_scheme("jpeg")
class JpegScheme(_WholeImageScheme):
    format = "JPEG"
    max_quality = 95

    def _save_options(self, quality: int) -> dict:
        return {"quality": quality, "optimize": True}


@register_scheme("webp")
class WebpScheme(_WholeImageScheme):
    format = "WEBP"

    def _save_options(self, quality: int) -> dict:
        return {"quality": quality, "method": 6}


def avif_available() -> bool:
    from PIL import features

    return bool(features.check("avif"))


@register_scheme("avif")
class AvifScheme(_WholeImageScheme):
    """AVIF through Pillow's own plugin (Pillow >= 11.2 wheels carry libavif)."""

    format = "AVIF"

    def _save_options(self, quality: int) -> dict:
        return {"quality": quality, "speed": 6}


@register_scheme("roi-webp")
class RoiWebpScheme(WebpScheme):
    """The classical region-of-interest coder: the same region split, the key region as WebP tiles (the
    frame's tiles, header and mask: a lost PDU costs its tiles) over one low-quality WebP of the whole image
    (at most ROI_BACKGROUND_SHARE of the budget). No text, no generator: lost tiles show the background
    file, a lost background file shows grey."""

    def __init__(self, config: PipelineConfig | None = None):
        super().__init__(config)
        self.tile_encoder = SemanticEncoder(replace(self.config, key=ROI_KEY_CODEC, key_options={}, sketch_budget=0,
                                                    describe="colour_layout", describe_options={}))

    def _frame_pdus(self, image: np.ndarray, key_mask: np.ndarray, quality: int) -> list[bytes]:
        def make():
            self.tile_encoder.key_codec = registry.create("key", ROI_KEY_CODEC, quality=quality)
            encoded = self.tile_encoder.encode(image, key_mask=key_mask)
            encoded.frame.text = b""            # no text: the background is the WebP file
            return encoded.frame.to_pdus(self.config.pdu_bytes)
        return self._memoised(image, ("key", quality), make)

    def prepare(self, image: np.ndarray, key_mask: np.ndarray, budget_symbols: int, mcs) -> Payload:
        background = self.largest_file(
            image, lambda chunks: symbols_of(chunks, mcs) <= ROI_BACKGROUND_SHARE * budget_symbols)
        bg_chunks = background[2] if background else []
        left = budget_symbols - symbols_of(bg_chunks, mcs)
        key = largest_fitting(1, 100, lambda q: (lambda p: p if symbols_of(p, mcs) <= left else None)(
            self._frame_pdus(image, key_mask, q))) if key_mask.any() else None
        key_pdus = key[1] if key else []
        if not key_pdus and not bg_chunks:
            return Payload([], 0, {"quality": 0, "scale": 0}, (image, 0))
        pdus = bg_chunks + key_pdus
        rate = {"quality": key[0] if key else 0, "background_quality": background[1] if background else 0,
                "scale": background[0] if background else 0}
        return Payload(pdus, symbols_of(pdus, mcs), rate, (image, len(bg_chunks)))

    def reconstruct(self, payload: Payload, delivery) -> Outcome:
        image, bg_count = payload.state
        bg_sent = set(payload.pdus[:bg_count])
        bg_chunks = [p for p in delivery.delivered if p in bg_sent]
        shown = self.decode_file(file_from_chunks(bg_chunks, bg_count), image.shape) if bg_count else None
        frames = []
        assembler = FrameAssembler()
        for p in delivery.delivered:
            if p not in bg_sent:
                frames += assembler.push(p)
        frames += assembler.flush_all()
        if shown is None and not frames:
            return Outcome(grey_like(image), True, {})
        shown = grey_like(image) if shown is None else shown.copy()
        if frames:
            frame = frames[0]
            codec = registry.create("key", ROI_KEY_CODEC)
            key_mask = frame.key_mask()
            for index, data in frame.key_tiles.items():
                y0, x0, y1, x1 = frame.tile_box(index)
                try:
                    tile = codec.decode_tile(data, y1 - y0, x1 - x0)
                except ValueError:
                    continue
                inside = key_mask[y0:y1, x0:x1]
                shown[y0:y1, x0:x1][inside] = tile[inside]
        return Outcome(shown, False, {})

    def outcome_key(self, payload: Payload, delivery) -> Any:
        return tuple(delivery.delivered)


# --- DeepJSCC (analog) ------------------------------------------------------------------------------
@dataclass
class AnalogDelivery:
    """What the analog channel returns: the decoded image (None when nothing was sent); no PDUs."""

    image: np.ndarray | None
    sent: int = 0
    lost: int = 0


def jscc_symbols(height: int, width: int) -> int:
    """Channel symbols of DeepJSCC for an image, its framing (preamble, header, pilots) included."""
    from semcom.codec import jscc
    from semcom.radio import analog
    from semcom.radio.analog_loopback import TILES_PER_FRAME

    tiles = -(-height // jscc.TILE_PX) * -(-width // jscc.TILE_PX)
    per_tile = jscc.symbols_for(jscc.TILE_PX, jscc.TILE_PX)
    frames, last = divmod(tiles, TILES_PER_FRAME)
    return frames * analog.channel_symbols_for(TILES_PER_FRAME * per_tile) + \
        (analog.channel_symbols_for(last * per_tile) if last else 0)


def jscc_repeated(image: np.ndarray, snr_db: float, repeats: int, fading: str, seed: int) -> np.ndarray:
    """DeepJSCC with every symbol sent ``repeats`` times, combined by maximal-ratio combining (torch channel).

    AWGN: the average of the copies, i.e. the SNR grows by 10 log10(repeats). Rayleigh: each copy of a tile
    has its own gain h_i; the receiver combines sum(conj(h_i) y_i) / sum(|h_i|^2) and tells the decoder
    the combined SNR, snr * sum(|h_i|^2).
    """
    import torch

    from semcom.codec import jscc

    model = jscc.load_model()
    tiles, corners = jscc.split_tiles(image)
    s = torch.from_numpy(jscc.encode_tiles(tiles, snr_db, model))
    g = torch.Generator().manual_seed(seed)
    n, k = s.shape
    sigma = math.sqrt(10 ** (-snr_db / 10) / 2)
    if fading == "awgn":
        h = torch.ones(repeats, n, 1, dtype=torch.complex64)
    else:
        h = torch.complex(torch.randn(repeats, n, 1, generator=g), torch.randn(repeats, n, 1, generator=g)) / math.sqrt(2)
    noise = torch.complex(torch.randn(repeats, n, k, generator=g), torch.randn(repeats, n, k, generator=g)) * sigma
    received = h * s[None] + noise
    gain = (h.abs() ** 2).sum(dim=0)                                  # (n, 1)
    combined = (h.conj() * received).sum(dim=0) / gain
    combined_snr_db = snr_db + 10 * np.log10(np.maximum(gain[:, 0].numpy(), 1e-12))
    decoded = jscc.decode_tiles(combined.numpy(), combined_snr_db, jscc.TILE_PX, jscc.TILE_PX, model)
    return jscc.join_tiles(decoded, corners, image.shape[0], image.shape[1])


@register_scheme("deepjscc")
class DeepJsccScheme(Scheme):
    """DeepJSCC (semcom.codec.jscc): the whole image as power-normalised complex symbols (1/16 of the
    real values, plus the analog framing), using the whole budget: below that rate the image is downscaled
    (upscaled at the receiver); at twice it or more, every symbol is repeated and the copies combined (MRC).
    No MCS, no cliff: quality follows the SNR. The flowgraph mode sends one copy at the combined SNR
    (equivalent for AWGN)."""

    digital = False

    def prepare(self, image: np.ndarray, key_mask: np.ndarray, budget_symbols: int, mcs=None) -> Payload:
        for factor in DOWNSCALE_FACTORS:
            small = downscaled(image, factor)
            symbols = jscc_symbols(*small.shape[:2])
            if symbols <= budget_symbols:
                repeats = max(1, budget_symbols // symbols) if factor == 1 else 1
                return Payload([], symbols * repeats, {"scale": factor, "repeats": repeats}, (image, small, repeats))
        return Payload([], 0, {"scale": 0, "repeats": 0}, (image, None, 0))

    def transmit(self, payload: Payload, channel, mcs, snr_db: float, rng: np.random.Generator):
        from semcom.radio.analog_loopback import jscc_transmit

        image, small, repeats = payload.state
        if small is None:
            return AnalogDelivery(None)
        seed = int(rng.integers(0, 2**31 - 1))
        if channel.mode == "flowgraph":
            return AnalogDelivery(jscc_transmit(small, snr_db + 10 * math.log10(repeats), channel="awgn",
                                                via="flowgraph", seed=seed))
        return AnalogDelivery(jscc_repeated(small, snr_db, repeats, channel.fading, seed))

    def reconstruct(self, payload: Payload, delivery: AnalogDelivery) -> Outcome:
        image = payload.state[0]
        if delivery.image is None:
            return Outcome(grey_like(image), True, {})
        return Outcome(resized(delivery.image, image.shape[1], image.shape[0], Image.BICUBIC), False, {})

    _transmissions = itertools.count()

    def outcome_key(self, payload: Payload, delivery) -> Any:
        """A number per transmission: every noise realisation is a different image. (It was ``id(delivery)``,
        which a later delivery reuses once the first is freed: the sweep then showed another SNR's image.)"""
        return next(self._transmissions)


# --- hybrid digital-analog ---------------------------------------------------------------------------
@dataclass
class HybridDelivery:
    """What analog_rx delivered, or the fast channel's model of it: (equalised symbols, meta) per frame."""

    received: list
    sent: int = 0
    lost: int = 0


def equalised_frames(bursts: list[tuple[int, np.ndarray]], snr_db: float, rng: np.random.Generator,
                     fading: str = "awgn", image_id: int = 0) -> list[tuple[np.ndarray, dict]]:
    """The fast channel of the hybrid scheme: every burst as analog_rx would deliver it with ideal timing,
    frequency and acquisition (unit gain, complex noise of variance 1/SNR), and the SNR estimate exact.
    Rayleigh: a gain per burst (block fading), so copies of a frame fade apart."""
    out = []
    for index, symbols in bursts:
        snr = snr_db if fading == "awgn" else snr_db + 10 * math.log10(max(rng.exponential(1.0), 1e-12))
        sigma = math.sqrt(0.5 / 10 ** (snr / 10))
        noise = (rng.standard_normal(symbols.size) + 1j * rng.standard_normal(symbols.size)) * sigma
        out.append(((symbols + noise).astype(np.complex64),
                    {"image_id": image_id & 0xFF, "frame_index": index, "snr_db_est": snr}))
    return out


@register_scheme("hybrid")
class HybridScheme(Scheme):
    """Ours in the hybrid digital-analog mode (``semcom.radio.hybrid``), planned per image, SNR and CBR:
    header and text as rate-1/4 coded BPSK, key tiles as DeepJSCC symbols, all in analog frames, spare
    symbols as copies. The fast channel is ``equalised_frames`` (the protected frames still go through
    the real Viterbi decoder and CRC; what it leaves out is acquisition, which loses a frame in about 40 at
    -4 dB); the flowgraph channel runs the hybrid flowgraph. A budget that header and text alone exceed
    sends nothing (grey)."""

    digital = False
    adapts_to_snr = True
    mcs_column = "hybrid"

    def __init__(self, config: PipelineConfig | None = None):
        super().__init__(config)
        self.decoder = SemanticDecoder(self.config)

    def prepare_at_snr(self, image: np.ndarray, key_mask: np.ndarray, budget_symbols: int, snr_db: float,
                       per_table=None) -> Payload:
        from semcom.codec import jscc
        from semcom.radio.hybrid import BudgetTooSmall, HybridLinkConfig, plan_hybrid

        link = HybridLinkConfig(snr_db=snr_db, budget_symbols=budget_symbols)
        try:
            plan = plan_hybrid(image, link, self.config, key_mask, model=jscc.load_model())
        except BudgetTooSmall:
            return Payload([], 0, {"mcs": self.mcs_column, "key_frames": 0}, (image, None, link))
        return Payload(plan.pdus, plan.channel_symbols,
                       {"mcs": self.mcs_column, "key_frames": sum(1 for n in plan.copies if n),
                        "key_fraction": round(float(plan.frame.key_mask().mean()), 4)}, (image, plan, link))

    def transmit(self, payload: Payload, channel, mcs, snr_db: float, rng: np.random.Generator):
        from semcom.radio.hybrid import send_plan

        _, plan, link = payload.state
        if plan is None:
            return HybridDelivery([])
        bursts = plan.bursts()
        if channel.mode == "flowgraph":
            received, _ = send_plan(plan, replace(link, noise_seed=int(rng.integers(1, 2**31 - 1))))
        else:
            received = equalised_frames(bursts, snr_db, rng, channel.fading, plan.frame.image_id)
        return HybridDelivery(received, len(bursts), len(bursts) - len(received))

    def reconstruct(self, payload: Payload, delivery: HybridDelivery) -> Outcome:
        from semcom.codec import jscc
        from semcom.radio.hybrid import decode_received

        image, plan, _ = payload.state
        recon = None if plan is None else \
            decode_received(delivery.received, plan.frame.image_id, self.decoder, jscc.load_model())[0]
        if recon is None:
            return Outcome(grey_like(image), True, {})
        return Outcome(recon.image, False, {"generated_key_share": round(recon.generated_share, 4),
                                            "text_lost": int(recon.text_lost)})

    _transmissions = itertools.count()

    def outcome_key(self, payload: Payload, delivery) -> Any:
        """A number per transmission: every noise realisation is a different image."""
        return next(self._transmissions)


ABLATIONS = ("ours-nosketch", "ours-nogen")


def default_schemes() -> list[str]:
    names = ["ours", "jpeg", "webp", "avif", "roi-webp", "deepjscc", "text-only", *ABLATIONS]
    return [n for n in names if n != "avif" or avif_available()]


@register_scheme("ours-adapt")
class OursAdaptScheme(SemcomScheme):
    """Ours with link adaptation (``semcom.radio.link_adaptation.plan_frame``), planned per image, SNR and
    CBR from the PER table: header, text and sketch on one MCS, the key tiles on one no more robust, and
    the largest key quality that fits the budget on that pair. Only when quality 1 fits on no pair is the
    key region halved, as for ours (``key_fraction`` in ``rate`` says so); then text only, on the most
    robust MCS that fits, which is also sent when the keyed frame is worth no more (``better_plan``).
    Plans are ranked by expected key-region SSIM (``link_adaptation.KeyQuality``: the sender decodes its
    own frame whole, without key tiles and as its header alone, and scores grey for a lost header).
    ``rate["mcs"]`` names the plan (the sweep's ``mcs`` column). Below the PER table's digital floor (``hybrid.use_hybrid``, the
    rule of ``semcom loopback --mode auto``) the frame is the ``hybrid`` scheme's instead: key tiles as
    DeepJSCC symbols, ``mcs`` "hybrid"."""

    digital = False
    adapts_to_snr = True
    channel_stream = "ours"     # compared with ours on the same draws (semcom.eval.sweep)

    def __init__(self, config: PipelineConfig | None = None, hybrid_below_floor: bool = True):
        """``hybrid_below_floor``: False for a sender that has only the digital packet PHY (semantic_tx
        without ``hybrid``)."""
        super().__init__(config)
        # The same frames without the sketch: tried when the sketch leaves no room for key tiles.
        self._sketchless = _SketchlessAdaptFrames(config, hybrid_below_floor=False) \
            if self.config.sketch_budget else None
        self._hybrid = HybridScheme(config) if hybrid_below_floor else None

    def prepare_at_snr(self, image: np.ndarray, key_mask: np.ndarray, budget_symbols: int, snr_db: float,
                       per_table) -> Payload:
        """Below the digital floor, the hybrid plan. Otherwise the best plan with the sketch; where that
        carries no key tile, the best plan without the sketch when it is worth more (so the sketch goes out
        unless it is what keeps the key region off the air)."""
        from semcom.radio.hybrid import use_hybrid

        if self._hybrid is not None and use_hybrid(snr_db, per_table):
            return self._hybrid.prepare_at_snr(image, key_mask, budget_symbols, snr_db)
        payload = self._plan(image, key_mask, budget_symbols, snr_db, per_table)
        if payload.rate["quality"] or self._sketchless is None or not key_mask.any():
            return payload
        without = self._sketchless._plan(image, key_mask, budget_symbols, snr_db, per_table)
        if without.rate["quality"] and without.rate["value"] > payload.rate["value"]:
            without.rate["mcs"] += ", no sketch"
            return without
        return payload

    def _plan(self, image: np.ndarray, key_mask: np.ndarray, budget_symbols: int, snr_db: float,
              per_table) -> Payload:
        from semcom.radio.link_adaptation import better_plan, plan_frame, plan_protected_only

        max_quality = getattr(self._configured_key_codec, "max_quality", None)
        plain = self._key_quality(image, key_mask, key_mask, DEFAULT_KEY_FRACTION, max_quality) \
            if key_mask.any() else None            # nothing to score: rank by usable bytes
        text_only = plan_protected_only(text_only_pdus(self, image), snr_db, budget_symbols, per_table,
                                        quality=plain)
        for tries, (mask, fraction) in enumerate(self._key_regions(image, key_mask)):
            def frame_at(level, mask=mask, fraction=fraction):
                return self._level_pdus(image, mask, fraction, level, max_quality)

            quality = self._key_quality(image, key_mask, mask, fraction, max_quality)
            plan = plan_frame(frame_at, max_quality or 1, snr_db, budget_symbols, per_table, quality=quality)
            if plan is not None:
                if better_plan(text_only, plan) is not plan:     # key tiles on links that lose them
                    break
                quality = plan.level if max_quality else 0
                encoded = self._pdus(image, mask, quality or None, fraction)[0]
                return _planned_payload(plan, image, quality, encoded, "shrunk" if tries else "whole")
        return _planned_payload(text_only, image, 0, self._pdus(image, np.zeros(image.shape[:2], bool), None, 0.0)[0],
                                "dropped" if key_mask.any() else "none")

    def transmit(self, payload: Payload, channel, mcs, snr_db: float, rng: np.random.Generator):
        if _is_hybrid(payload):
            return self._hybrid.transmit(payload, channel, mcs, snr_db, rng)
        return channel.transmit_each(payload.pdus, payload.pdu_mcs, snr_db, rng)

    def reconstruct(self, payload: Payload, delivery) -> Outcome:
        if _is_hybrid(payload):
            return self._hybrid.reconstruct(payload, delivery)
        return super().reconstruct(payload, delivery)

    def outcome_key(self, payload: Payload, delivery) -> Any:
        if _is_hybrid(payload):
            return self._hybrid.outcome_key(payload, delivery)
        return super().outcome_key(payload, delivery)

    def _level_pdus(self, image: np.ndarray, mask: np.ndarray, fraction: float, level: int,
                    max_quality: int | None) -> list[bytes]:
        """The frame's PDUs at key quality ``level`` (the configured quality for a codec without a knob)."""
        return self._pdus(image, mask, level if max_quality else None, fraction)[1]

    def _key_quality(self, image: np.ndarray, key_mask: np.ndarray, mask: np.ndarray, fraction: float,
                     max_quality: int | None):
        """Key-region SSIM (over the scored ``key_mask``) of what the receiver shows when the frame coded over
        ``mask`` arrives whole, without its key tiles, as its header alone, or not at all: the sender decodes its
        own frames."""
        from semcom.codec.frame import Segment, parse_pdu
        from semcom.eval.channel import Delivery
        from semcom.eval.metrics import ssim
        from semcom.radio.link_adaptation import KeyQuality

        def score(pdus: list[bytes]) -> float:
            shown = self.reconstruct(Payload(pdus, 0, {}, image), Delivery(pdus, len(pdus), 0)).image
            return ssim(image, shown, key_mask)

        def memo(key, make):
            return self._memoised(image, (self.name, "key ssim", fraction, key), make)

        def frame(level: int) -> list[bytes]:
            return self._level_pdus(image, mask, fraction, level, max_quality)

        return KeyQuality(
            at_level=lambda level: memo(level, lambda: score(frame(level))),
            tiles_lost=memo("tiles lost", lambda: score([p for p in frame(1) if parse_pdu(p).segment != Segment.KEY])),
            frame_lost=memo("frame lost", lambda: ssim(image, grey_like(image), key_mask)),
            background_lost=memo("background lost",
                                 lambda: score([p for p in frame(1) if parse_pdu(p).segment == Segment.HEADER])),
        )


class _SketchlessAdaptFrames(OursAdaptScheme):
    """ours-adapt's frames without the SKETCH segment (not a scheme of its own: ``OursAdaptScheme`` asks it)."""

    name = "ours-adapt without sketch"
    config_overrides = {"sketch_budget": 0}


def _is_hybrid(payload: Payload) -> bool:
    return payload.rate.get("mcs") == HybridScheme.mcs_column


NOTHING_FITS = "none"       # ours-adapt's plan when not even header and text fit the budget


def _planned_payload(plan, image: np.ndarray, quality: int, encoded, key_region: str) -> Payload:
    """``key_region``: the key region as planned, "whole", "shrunk" (splitter re-run smaller), "dropped" (text
    only) or "none" (the mask was empty)."""
    if plan is None:
        return Payload([], 0, {"quality": 0, "key_fraction": 0.0, "mcs": NOTHING_FITS, "value": float("-inf"),
                               "key_region": "dropped"}, image, [])
    rate = {"quality": quality, "key_fraction": round(float(encoded.key_mask.mean()), 4), "mcs": plan.summary(),
            "value": plan.value, "key_region": key_region}
    return Payload(plan.pdus, plan.symbols, rate, image, [m.name for m in plan.mcs], encoded)
