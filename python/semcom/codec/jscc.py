"""Analog key-region mode, DeepJSCC style: pixels straight to complex channel symbols and back.

The encoder is the learned key codec's analysis transform (four stride-2 5x5 convolutions with GDN,
``semcom.codec.key.learned_model``) with an SNR-adaptive channel attention module after each GDN
(ADJSCC, Xu et al. 2021): a small MLP of the feature means and the channel SNR scales every channel by
a factor in (0, 2). Its ``latent_channels`` real outputs per latent position are paired into complex
symbols and power-normalised per tile; the decoder is the mirror image (inverse GDN + attention).

Bandwidth ratio: a 16x16 px patch (768 real pixel values) maps to one latent position of 96 reals =
**48 complex channel symbols, k/n = 1/16**; a 64x64 tile is 768 complex symbols. Symbol order:
``(channel, row, col)`` of the latents, real part from channel c, imaginary part from c + M/2.

Channel (``awgn``): symbols have mean energy 1 per tile; complex Gaussian noise of variance
``10 ** (-snr_db / 10)`` per symbol, i.e. ``snr_db`` is Es/N0 per channel symbol, the same definition
as the digital path (``semcom.radio.packet.noise_voltage_for_snr``). The model is trained for SNRs
drawn uniformly from ``TRAIN_SNR_DB`` and takes the SNR as an input.

Shapes: images (B, 3, H, W) float32 in [0, 1], H, W multiples of 16; symbols (B, k) complex64.
Weights: ``gr-semcom/weights/deepjscc.safetensors``, trained by ``scripts/train_deepjscc.py``;
loading never trains. This module never imports GNU Radio.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from semcom.codec.key.learned_model import GDN, _conv, _deconv

WEIGHTS_NAME = "deepjscc.safetensors"
WEIGHTS_FORMAT = "semcom-deepjscc-1"
TRAIN_COMMAND = "python scripts/train_deepjscc.py --steps 6000 --out gr-semcom/weights/deepjscc.safetensors"
TRAIN_SNR_DB = (-2.0, 20.0)      # training SNRs, uniform; the SNR input is normalised over this range
SNR_INPUT_RANGE_DB = (-5.0, 25.0)  # the decoder clamps a given/estimated SNR to this range
PAD_MULTIPLE = 16
TILE_PX = 64                     # the unit jscc_encode_tiles works in, same as the frame's key tiles
MAX_TILE_SIDE_PX = 256


@dataclass
class JSCCConfig:
    channels: int = 64           # N, hidden width (as the key codec, so it can warm-start from it)
    latent_channels: int = 96    # real outputs per latent position; half as many complex symbols
    adapt_hidden: int = 32       # hidden units of the SNR attention MLPs

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def symbols_per_position(self) -> int:
        return self.latent_channels // 2


def symbols_for(height: int, width: int, config: JSCCConfig | None = None) -> int:
    """Complex channel symbols of one (height, width) tile (padded to a multiple of 16)."""
    config = config or JSCCConfig()
    rows, cols = -(-height // PAD_MULTIPLE), -(-width // PAD_MULTIPLE)
    return rows * cols * config.symbols_per_position


def normalise_snr(snr_db: torch.Tensor) -> torch.Tensor:
    lo, hi = TRAIN_SNR_DB
    return (snr_db - (lo + hi) / 2) / ((hi - lo) / 2)


class SNRAdapt(nn.Module):
    """Channel-wise scaling by 2 * sigmoid(MLP([mean over space of x, snr])); identity at initialisation."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(channels + 1, hidden), nn.ReLU(), nn.Linear(hidden, channels))
        nn.init.zeros_(self.net[2].weight)
        nn.init.zeros_(self.net[2].bias)

    def forward(self, x: torch.Tensor, snr: torch.Tensor) -> torch.Tensor:
        context = torch.cat([x.mean(dim=(2, 3)), snr[:, None]], dim=1)
        return x * (2 * torch.sigmoid(self.net(context)))[:, :, None, None]


class DeepJSCC(nn.Module):
    """``encode``: images -> unit-power complex symbols; ``decode``: noisy symbols -> images."""

    def __init__(self, config: JSCCConfig | None = None):
        super().__init__()
        self.config = config or JSCCConfig()
        n, m, a = self.config.channels, self.config.latent_channels, self.config.adapt_hidden
        if m % 2:
            raise ValueError("latent_channels must be even (pairs of reals make complex symbols)")
        # Same layer indices as TileAutoencoder, so its state dict warm-starts these two.
        self.analysis = nn.Sequential(_conv(3, n), GDN(n), _conv(n, n), GDN(n), _conv(n, n), GDN(n), _conv(n, m))
        self.synthesis = nn.Sequential(_deconv(m, n), GDN(n, True), _deconv(n, n), GDN(n, True),
                                       _deconv(n, n), GDN(n, True), _deconv(n, 3))
        self.encoder_adapt = nn.ModuleList([SNRAdapt(n, a) for _ in range(3)])
        self.decoder_adapt = nn.ModuleList([SNRAdapt(n, a) for _ in range(3)])
        # Unit-power symbols back to the latent scale the (warm-started) synthesis expects.
        self.symbol_scale = nn.Parameter(torch.tensor(1.0))

    def encode(self, images: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1], snr_db (B,) -> (B, k) complex64 with mean |s|^2 = 1 per row."""
        snr = normalise_snr(snr_db)
        x = images - 0.5
        for i in range(3):
            x = self.analysis[2 * i + 1](self.analysis[2 * i](x))
            x = self.encoder_adapt[i](x, snr)
        y = self.analysis[6](x)
        half = y.shape[1] // 2
        z = torch.complex(y[:, :half].flatten(1), y[:, half:].flatten(1))
        power = (z.real ** 2 + z.imag ** 2).mean(dim=1, keepdim=True)
        return z / torch.sqrt(power + 1e-12)

    def decode(self, symbols: torch.Tensor, snr_db: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(B, k) complex, snr_db (B,) -> (B, 3, H, W) in ~[0, 1]; H, W the padded size."""
        b = symbols.shape[0]
        rows, cols = height // PAD_MULTIPLE, width // PAD_MULTIPLE
        half = self.config.latent_channels // 2
        if symbols.shape[1] != half * rows * cols:
            raise ValueError(f"{symbols.shape[1]} symbols do not make a {width}x{height} tile "
                             f"({half * rows * cols} expected)")
        y = torch.cat([symbols.real.reshape(b, half, rows, cols), symbols.imag.reshape(b, half, rows, cols)], dim=1)
        snr = normalise_snr(snr_db)
        x = y.float() * self.symbol_scale
        for i in range(3):
            x = self.synthesis[2 * i + 1](self.synthesis[2 * i](x))
            x = self.decoder_adapt[i](x, snr)
        return self.synthesis[6](x) + 0.5


def awgn(symbols: torch.Tensor, snr_db: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Complex AWGN of variance 10^(-snr_db/10) per symbol (unit-energy symbols: Es/N0 = snr_db)."""
    sigma = torch.sqrt(10 ** (-snr_db / 10) / 2)[:, None]
    noise = torch.complex(torch.randn(symbols.shape, generator=generator),
                          torch.randn(symbols.shape, generator=generator))
    return symbols + sigma * noise


def rayleigh_block(symbols: torch.Tensor, snr_db: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One complex Gaussian gain per row (block fading), then AWGN, then a perfect-CSI zero-forcing equaliser.

    Returned symbols are ``h s + n`` divided by ``h``, i.e. AWGN at the instantaneous SNR |h|^2 * snr.
    """
    h = torch.complex(torch.randn(symbols.shape[0], 1, generator=generator),
                      torch.randn(symbols.shape[0], 1, generator=generator)) / math.sqrt(2)
    return awgn(h * symbols, snr_db, generator) / h


def save_weights(path: Path, model: DeepJSCC, extra_meta: dict | None = None) -> None:
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    meta = {"format": WEIGHTS_FORMAT, "config": json.dumps(model.config.to_dict()),
            "train_snr_db": json.dumps(list(TRAIN_SNR_DB)), **(extra_meta or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)


def default_weights_path() -> Path:
    from semcom.paths import data_path

    try:
        return data_path("weights", WEIGHTS_NAME)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"DeepJSCC weights not found ({exc}); train them with: {TRAIN_COMMAND}") from None


_cache: dict[str, DeepJSCC] = {}
_cache_lock = threading.Lock()


def load_model(path: str | Path | None = None) -> DeepJSCC:
    """The model in a safetensors file (cached per path), in eval mode. Never trains."""
    from safetensors import safe_open

    path = Path(path) if path is not None else default_weights_path()
    key = str(path.resolve())
    with _cache_lock:
        if key not in _cache:
            if not path.is_file():
                raise FileNotFoundError(f"DeepJSCC weights not found at {path}; train them with: {TRAIN_COMMAND}")
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("format") != WEIGHTS_FORMAT:
                    raise ValueError(f"{path} is not a semcom DeepJSCC weights file (format {meta.get('format')!r})")
                state = {k[len("model."):]: f.get_tensor(k).float() for k in f.keys() if k.startswith("model.")}
            model = DeepJSCC(JSCCConfig(**json.loads(meta["config"])))
            model.load_state_dict(state)
            model.eval()
            _cache[key] = model
        return _cache[key]


# --- numpy face: tiles <-> symbols, used by the radio path and the evaluation -------------------------

def _check_tiles(tiles: list[np.ndarray]) -> tuple[int, int]:
    if not tiles:
        raise ValueError("no tiles")
    shape = tiles[0].shape
    for t in tiles:
        t = np.asarray(t)
        if t.ndim != 3 or t.shape[2] != 3 or t.dtype != np.uint8 or 0 in t.shape[:2]:
            raise ValueError(f"tile must be non-empty (h, w, 3) uint8, got {t.shape} {t.dtype}")
        if t.shape != shape:
            raise ValueError(f"tiles of one call must share a shape: {t.shape} vs {shape}")
    if max(shape[:2]) > MAX_TILE_SIDE_PX:
        raise ValueError(f"tile of {shape[1]}x{shape[0]} px exceeds {MAX_TILE_SIDE_PX} px")
    return shape[0], shape[1]


def _padded(n: int) -> int:
    return -(-n // PAD_MULTIPLE) * PAD_MULTIPLE


def encode_tiles(tiles: list[np.ndarray], snr_db: float, model: DeepJSCC | None = None) -> np.ndarray:
    """Same-shaped (h, w, 3) uint8 tiles -> (n_tiles, k) complex64 symbols, mean |s|^2 = 1 per tile."""
    model = model or load_model()
    h, w = _check_tiles(tiles)
    ph, pw = _padded(h), _padded(w)
    batch = np.stack([np.pad(t, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge") for t in tiles])
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255.0
    with torch.inference_mode():
        s = model.encode(x, torch.full((len(tiles),), float(snr_db)))
    return s.numpy().astype(np.complex64)


def decode_tiles(symbols: np.ndarray, snr_db: float | np.ndarray, height: int, width: int,
                 model: DeepJSCC | None = None) -> list[np.ndarray]:
    """(n_tiles, k) complex received symbols -> (height, width, 3) uint8 tiles.

    ``snr_db`` (scalar or one per tile) is what the decoder is told, clamped to ``SNR_INPUT_RANGE_DB``.
    Raises ValueError when k does not match the tile size or the symbols are not finite.
    """
    model = model or load_model()
    if not (1 <= height <= MAX_TILE_SIDE_PX and 1 <= width <= MAX_TILE_SIDE_PX):
        raise ValueError(f"tile of {width}x{height} px: each side must be 1..{MAX_TILE_SIDE_PX}")
    symbols = np.asarray(symbols)
    if symbols.ndim != 2 or not np.iscomplexobj(symbols):
        raise ValueError(f"symbols must be (n_tiles, k) complex, got {symbols.shape} {symbols.dtype}")
    expected = symbols_for(height, width, model.config)
    if symbols.shape[1] != expected:
        raise ValueError(f"{symbols.shape[1]} symbols per tile, a {width}x{height} tile needs {expected}")
    if not np.all(np.isfinite(symbols)):
        raise ValueError("received symbols contain NaN or infinity")
    snr = np.clip(np.broadcast_to(np.asarray(snr_db, np.float32), (len(symbols),)), *SNR_INPUT_RANGE_DB)
    with torch.inference_mode():
        x = model.decode(torch.from_numpy(symbols.astype(np.complex64)), torch.from_numpy(snr.copy()),
                         _padded(height), _padded(width))[:, :, :height, :width]
    x = (x.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1)
    return list(np.ascontiguousarray(x.numpy()))


def split_tiles(image: np.ndarray, tile_px: int = TILE_PX) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    """(H, W, 3) uint8 -> edge-padded (tile_px, tile_px, 3) tiles in row-major order and their (y, x) corners."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape[:2]:
        raise ValueError(f"image must be non-empty (H, W, 3) uint8, got {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    ph, pw = -(-h // tile_px) * tile_px, -(-w // tile_px) * tile_px
    padded = np.pad(image, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
    corners = [(y, x) for y in range(0, ph, tile_px) for x in range(0, pw, tile_px)]
    return [np.ascontiguousarray(padded[y:y + tile_px, x:x + tile_px]) for y, x in corners], corners


def join_tiles(tiles: list[np.ndarray], corners: list[tuple[int, int]], height: int, width: int) -> np.ndarray:
    tile_px = tiles[0].shape[0]
    ph, pw = -(-height // tile_px) * tile_px, -(-width // tile_px) * tile_px
    out = np.zeros((ph, pw, 3), np.uint8)
    for t, (y, x) in zip(tiles, corners):
        out[y:y + tile_px, x:x + tile_px] = t
    return out[:height, :width]


def transmit_torch(image: np.ndarray, snr_db: float, channel: str = "awgn", seed: int = 0,
                   model: DeepJSCC | None = None) -> np.ndarray:
    """Fast path: (H, W, 3) uint8 -> 64 px tiles -> symbols -> simulated channel -> decoded image.

    ``channel``: ``awgn`` or ``rayleigh`` (block fading per tile, perfect CSI). Channel uses:
    ``len(tiles) * symbols_for(64, 64)`` complex symbols.
    """
    model = model or load_model()
    if channel not in ("awgn", "rayleigh"):
        raise ValueError(f"unknown channel {channel!r}; choose awgn or rayleigh")
    tiles, corners = split_tiles(image)
    s = torch.from_numpy(encode_tiles(tiles, snr_db, model))
    g = torch.Generator().manual_seed(seed)
    snr = torch.full((len(tiles),), float(snr_db))
    r = awgn(s, snr, g) if channel == "awgn" else rayleigh_block(s, snr, g)
    decoded = decode_tiles(r.numpy(), snr_db, TILE_PX, TILE_PX, model)
    return join_tiles(decoded, corners, image.shape[0], image.shape[1])
