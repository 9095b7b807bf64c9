"""Image quality metrics, whole image and inside the key region: PSNR, SSIM (scikit-image), MS-SSIM, (ST-)LPIPS."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

PEAK = 255.0
# PSNR of identical images is infinite; report this ceiling instead so JSON stays valid.
PSNR_CEILING_DB = 100.0


def psnr_db(reference: np.ndarray, test: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB of uint8 images (H, W, 3); with ``mask`` (H, W) bool, over the masked pixels only."""
    return psnr_regions(reference, test, [mask])[0]


def psnr_regions(reference: np.ndarray, test: np.ndarray, masks: list[np.ndarray | None]) -> list[float]:
    """``psnr_db`` over each of ``masks`` (None: the whole image) from one squared-error map."""
    if any(m is not None and not m.any() for m in masks):
        raise ValueError("PSNR over an empty mask is undefined")
    diff = reference.astype(np.float64) - test.astype(np.float64)
    squared = diff * diff
    out = []
    for mask in masks:
        mse = float(np.mean(squared if mask is None else squared[mask]))
        out.append(PSNR_CEILING_DB if mse == 0 else min(PSNR_CEILING_DB, 10.0 * np.log10(PEAK**2 / mse)))
    return out


# Wang et al.'s SSIM: 11x11 Gaussian window of sigma 1.5, population covariances (as their reference code).
SSIM_OPTIONS = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}
_K1, _K2 = 0.01, 0.03


SSIM_WINDOW_RADIUS_PX = 5       # skimage's int(truncate * sigma + 0.5) with its truncate=3.5


def ssim_map(reference: np.ndarray, test: np.ndarray) -> tuple[float, np.ndarray]:
    """(mean SSIM, (H, W) SSIM map averaged over the colour channels) of uint8 (H, W, 3) images.

    skimage's ``structural_similarity(..., full=True, **SSIM_OPTIONS)``, computed with OpenCV's separable
    Gaussian filter (the same 11-tap kernel and 'reflect' border, in float64): about 5x faster, equal to
    1e-9 (tested), which matters when an evaluation scores thousands of images.
    """
    x, y = np.asarray(reference, np.float64), np.asarray(test, np.float64)
    if x.shape != y.shape:
        raise ValueError(f"SSIM of images of different shapes {x.shape} and {y.shape}")
    size = 2 * SSIM_WINDOW_RADIUS_PX + 1

    def blur(a):
        return cv2.GaussianBlur(a, (size, size), SSIM_OPTIONS["sigma"], borderType=cv2.BORDER_REFLECT)

    ux, uy = blur(x), blur(y)
    vx, vy, vxy = blur(x * x) - ux * ux, blur(y * y) - uy * uy, blur(x * y) - ux * uy
    c1, c2 = (_K1 * PEAK) ** 2, (_K2 * PEAK) ** 2
    full = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    r = SSIM_WINDOW_RADIUS_PX
    mean = full[r:-r, r:-r].reshape(-1, full.shape[2]).mean(axis=0).mean()
    return float(mean), full.mean(axis=2)


def ssim(reference: np.ndarray, test: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean SSIM (Wang's Gaussian window, per channel); with ``mask``, the SSIM map averaged over it."""
    if mask is not None and not mask.any():
        raise ValueError("SSIM over an empty mask is undefined")
    mean, full = ssim_map(reference, test)
    return mean if mask is None else float(full[mask].mean())


def quality_report(reference: np.ndarray, test: np.ndarray, key_mask: np.ndarray) -> dict[str, float]:
    """PSNR and SSIM of the whole image and of the key region (key entries absent when it is empty)."""
    report = {"psnr_db": psnr_db(reference, test), "ssim": ssim(reference, test)}
    if key_mask.any():
        report["key_psnr_db"] = psnr_db(reference, test, key_mask)
        report["key_ssim"] = ssim(reference, test, key_mask)
    return report


# --- MS-SSIM ---------------------------------------------------------------------------------------
# Wang, Simoncelli & Bovik (2003): 11x11 Gaussian window (sigma 1.5), five scales with these weights.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_WINDOW_PX = 11
MS_SSIM_SIGMA_PX = 1.5


def ms_ssim_scales(height: int, width: int) -> int:
    """Scales used for an image: five when the coarsest one still holds a whole window (short side >= 176 px).

    Smaller images (e.g. 96 px crops) use as many scales as fit, with the standard weights of those
    scales renormalised to sum to 1; below one window (11 px) MS-SSIM is undefined and raises.
    """
    short = min(height, width)
    scales = 0
    while scales < len(MS_SSIM_WEIGHTS) and short // (2**scales) >= MS_SSIM_WINDOW_PX:
        scales += 1
    if scales == 0:
        raise ValueError(f"MS-SSIM needs at least {MS_SSIM_WINDOW_PX} px on the short side, got {short}")
    return scales


def _blur_valid(image: np.ndarray) -> np.ndarray:
    """11x11 Gaussian (sigma 1.5) filter keeping only the 'valid' part (no padded pixels): (H-10, W-10, ...)."""
    r = MS_SSIM_WINDOW_PX // 2
    blurred = cv2.GaussianBlur(image, (MS_SSIM_WINDOW_PX, MS_SSIM_WINDOW_PX), MS_SSIM_SIGMA_PX,
                               borderType=cv2.BORDER_REFLECT)
    return blurred[r:-r, r:-r]


def _halve(image: np.ndarray) -> np.ndarray:
    """2x2 average pooling; an odd last row/column is averaged with its copy (ceil mode)."""
    h, w = image.shape[:2]
    if h % 2 or w % 2:
        image = np.pad(image, [(0, h % 2), (0, w % 2)] + [(0, 0)] * (image.ndim - 2), mode="edge")
    h, w = image.shape[:2]
    return image.reshape(h // 2, 2, w // 2, 2, *image.shape[2:]).mean(axis=(1, 3))


def ms_ssim(reference: np.ndarray, test: np.ndarray, mask: np.ndarray | None = None) -> float:
    """MS-SSIM of uint8 (H, W, 3) images; with ``mask`` (H, W) bool, each scale's map is averaged with
    the mask (average-pooled to that scale) as weights, i.e. the key-region version.

    Per channel, 'valid' Gaussian filtering (no padding), negative terms clamped at 0 as in
    pytorch-msssim; see ``ms_ssim_scales`` for images under 176 px.
    """
    return ms_ssim_regions(reference, test, [mask])[0]


def ms_ssim_regions(reference: np.ndarray, test: np.ndarray, masks: list[np.ndarray | None]) -> list[float]:
    """``ms_ssim`` over each of ``masks`` (None: the whole image) from one pyramid of SSIM maps."""
    if any(m is not None and not m.any() for m in masks):
        raise ValueError("MS-SSIM over an empty mask is undefined")
    scales = ms_ssim_scales(*reference.shape[:2])
    weights = np.array(MS_SSIM_WEIGHTS[:scales]) / sum(MS_SSIM_WEIGHTS[:scales])
    x, y = reference.astype(np.float32), test.astype(np.float32)
    pooled = [None if m is None else m.astype(np.float32) for m in masks]
    c1, c2 = (_K1 * PEAK) ** 2, (_K2 * PEAK) ** 2
    r = MS_SSIM_WINDOW_PX // 2
    values = [[] for _ in masks]
    for scale in range(scales):
        mu_x, mu_y = _blur_valid(x), _blur_valid(y)
        sxx = _blur_valid(x * x) - mu_x**2
        syy = _blur_valid(y * y) - mu_y**2
        sxy = _blur_valid(x * y) - mu_x * mu_y
        term = (2 * sxy + c2) / (sxx + syy + c2)
        if scale == scales - 1:
            term = term * (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
        term = term.astype(np.float64).mean(axis=2)
        for out, m in zip(values, pooled):
            w = None if m is None else m[r:-r, r:-r].astype(np.float64)
            value = float((term * w).sum() / w.sum()) if w is not None and w.sum() > 1e-9 else float(term.mean())
            out.append(max(value, 0.0))
        if scale < scales - 1:
            x, y = _halve(x), _halve(y)
            pooled = [None if m is None else _halve(m) for m in pooled]
    return [float(np.prod(np.array(v) ** weights)) for v in values]


# --- LPIPS -----------------------------------------------------------------------------------------
# Standard LPIPS needs torchvision's ImageNet AlexNet, which this offline box cannot download; the
# shift-tolerant LPIPS of Ghildyal & Liu (ECCV 2022) ships complete weights in stlpips-pytorch==0.0.2.
# Its modules import torchvision/IPython, so the network is redefined here and only its weights are read.
STLPIPS_PACKAGE = "stlpips_pytorch"
STLPIPS_WEIGHTS = ("weights", "vST0.0", "alex_shift_tolerant.pth")
TORCHVISION_ALEXNET = "alexnet-owt-7be5be79.pth"


def _stlpips_network():
    """Shift-tolerant AlexNet LPIPS ('alex', variant 'shift_tolerant', v0.1) with stlpips' parameter names."""
    import torch
    from torch import nn
    import torch.nn.functional as F

    class BlurDownsample(nn.Module):
        """Reflect-pad by 2 and blur with [1, 2, 1]^2 / 16 at stride 2 (stlpips' Downsample, pad_more=True)."""

        def __init__(self, channels: int):
            super().__init__()
            a = torch.tensor([1.0, 2.0, 1.0])
            filt = a[:, None] * a[None, :]
            self.register_buffer("filt", (filt / filt.sum())[None, None].repeat(channels, 1, 1, 1))

        def forward(self, x):
            return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), self.filt, stride=2, groups=x.shape[1])

    class MaxPool3(nn.Module):
        """nn.MaxPool2d(3, stride=1) as two 1-D maxima of shifted views: the same values, several times
        faster than torch's CPU max_pool2d at stride 1."""

        def forward(self, x):
            x = torch.maximum(torch.maximum(x[:, :, :-2], x[:, :, 1:-1]), x[:, :, 2:])
            return torch.maximum(torch.maximum(x[..., :-2], x[..., 1:-1]), x[..., 2:])

    def seq(start: int, *layers) -> nn.Sequential:
        s = nn.Sequential()
        for i, layer in enumerate(layers):
            s.add_module(str(start + i), layer)
        return s

    class Backbone(nn.Module):
        def __init__(self):
            super().__init__()
            self.slice1 = seq(0, nn.Conv2d(3, 64, 11, stride=1, padding=2), BlurDownsample(64), nn.ReLU())
            self.slice2 = seq(3, MaxPool3(), BlurDownsample(64), nn.Conv2d(64, 192, 5, padding=2),
                              nn.ReLU())
            self.slice3 = seq(7, MaxPool3(), BlurDownsample(192), nn.Conv2d(192, 384, 3, padding=1),
                              nn.ReLU())
            self.slice4 = seq(11, nn.Conv2d(384, 256, 3, padding=1), nn.ReLU())
            self.slice5 = seq(13, nn.Conv2d(256, 256, 3, padding=1), nn.ReLU())

        def forward(self, x):
            outs = [self.slice1[2](self.first_layer(x))]
            for block in (self.slice2, self.slice3, self.slice4, self.slice5):
                outs.append(block(outs[-1]))
            return outs

        def first_layer(self, x):
            """slice1's 11x11 convolution at stride 1 and its stride-2 blur as one 13x13 convolution at
            stride 2 (a quarter of the positions: the costliest layer of the network). Only the outermost
            output rows and columns see the blur's reflect padding; they are recomputed the original way
            on thin strips, so the result is the unfused one up to float rounding (tested)."""
            conv, blur = self.slice1[0], self.slice1[1]
            xp = F.pad(x, (2, 2, 2, 2))                                  # the convolution's own zero padding
            if min(xp.shape[-2:]) < 24:
                return blur(F.conv2d(xp, conv.weight, conv.bias))
            if getattr(self, "_fused", None) is None or self._fused[0] is not conv.weight:
                k = conv.weight.reshape(-1, 1, 11, 11)
                fused = F.conv2d(F.pad(k, (2, 2, 2, 2)), blur.filt[:1])    # the 3x3 blur is symmetric
                self._fused = (conv.weight, fused.reshape(conv.weight.shape[0], -1, 13, 13))
            out = F.conv2d(F.pad(xp, (2, 2, 2, 2)), self._fused[1], conv.bias, stride=2)
            rows, cols = out.shape[-2:]

            def exact(strip):
                return blur(F.conv2d(strip, conv.weight, conv.bias))

            bottom = max(0, 2 * (rows - 1) - 4)                           # an even start keeps the stride grid
            right = max(0, 2 * (cols - 1) - 4)
            out[..., 0, :] = exact(xp[..., :14, :])[..., 0, :]
            out[..., -1, :] = exact(xp[..., bottom:, :])[..., rows - 1 - bottom // 2, :]
            out[..., 0] = exact(xp[..., :14])[..., 0]
            out[..., -1] = exact(xp[..., right:])[..., cols - 1 - right // 2]
            return out

    class Lin(nn.Module):
        def __init__(self, channels: int):
            super().__init__()
            self.model = seq(1, nn.Conv2d(channels, 1, 1, bias=False))   # index 0 was a Dropout

    class ScalingLayer(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None])
            self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450])[None, :, None, None])

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.scaling_layer = ScalingLayer()
            self.net = Backbone()
            for i, c in enumerate((64, 192, 384, 256, 256)):
                setattr(self, f"lin{i}", Lin(c))

    return Net()


class Lpips:
    """LPIPS distance (lower is closer) with a spatial map for region versions; ``name`` is 'lpips' or 'st-lpips'.

    ``features(image)`` can be cached for a reference image that is compared many times.
    """

    def __init__(self, name: str, net, lins, scaling):
        self.name, self.net, self.lins, self.scaling = name, net, lins, scaling

    def _tensor(self, image: np.ndarray):
        import torch

        t = torch.tensor(np.asarray(image)).permute(2, 0, 1)[None].float() / 127.5 - 1.0
        return (t - self.scaling[0]) / self.scaling[1]

    def features(self, image: np.ndarray) -> list:
        import torch

        with torch.no_grad():
            outs = self.net(self._tensor(image))
        return [f / (torch.sqrt((f**2).sum(dim=1, keepdim=True)) + 1e-10) for f in outs]

    def distance(self, reference, test: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, float | None]:
        """(whole-image LPIPS, LPIPS averaged over ``mask`` or None); ``reference`` is an image or its features."""
        whole, regions = self.distances(reference, test, [] if mask is None else [mask])
        return whole, (regions[0] if regions else None)

    def distances(self, reference, test: np.ndarray, masks: list[np.ndarray]) -> tuple[float, list[float]]:
        """(whole-image LPIPS, [LPIPS averaged over each mask]) from one forward pass of ``test``."""
        import torch
        import torch.nn.functional as F

        if any(not m.any() for m in masks):
            raise ValueError("LPIPS over an empty mask is undefined")
        ref = self.features(reference) if isinstance(reference, np.ndarray) else reference
        feats = self.features(test)
        h, w = test.shape[:2]
        whole, spatial = 0.0, torch.zeros(1, 1, h, w)
        with torch.no_grad():
            for lin, a, b in zip(self.lins, ref, feats):
                layer = lin((a - b) ** 2)
                whole += float(layer.mean())
                if masks:
                    spatial += F.interpolate(layer, size=(h, w), mode="bilinear", align_corners=False)
        area = spatial[0, 0].numpy()
        return whole, [float(area[m].mean()) for m in masks]


def _torchvision_alexnet_present() -> bool:
    try:
        import torch

        return (Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_ALEXNET).is_file()
    except Exception:
        return False


def stlpips_weights_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec(STLPIPS_PACKAGE)     # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("ST-LPIPS weights need the package stlpips-pytorch==0.0.2 (pip install stlpips-pytorch==0.0.2)")
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*STLPIPS_WEIGHTS)
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: install stlpips-pytorch==0.0.2 (newer releases may drop it)")
    return path


_LPIPS: Lpips | None = None


def lpips_model() -> Lpips:
    """Standard LPIPS (AlexNet, v0.1) when the ``lpips`` package and torchvision's ImageNet AlexNet are
    present; otherwise ST-LPIPS (shift-tolerant AlexNet) from stlpips-pytorch's weights. Cached."""
    global _LPIPS
    if _LPIPS is not None:
        return _LPIPS
    import torch

    if _torchvision_alexnet_present():
        try:
            import lpips

            model = lpips.LPIPS(net="alex", verbose=False).eval()
            _LPIPS = Lpips("lpips", model.net, [lin.model for lin in model.lins],
                           (model.scaling_layer.shift, model.scaling_layer.scale))
            return _LPIPS
        except ImportError:
            pass
    net = _stlpips_network()
    net.load_state_dict(torch.load(stlpips_weights_path(), map_location="cpu", weights_only=True))
    net.eval()
    lins = [getattr(net, f"lin{i}").model for i in range(5)]
    _LPIPS = Lpips("st-lpips", net.net, lins, (net.scaling_layer.shift, net.scaling_layer.scale))
    return _LPIPS


def lpips(reference: np.ndarray, test: np.ndarray, mask: np.ndarray | None = None) -> float:
    """LPIPS (or ST-LPIPS, see ``lpips_model().name``) of uint8 (H, W, 3) images, over ``mask`` if given."""
    whole, region = lpips_model().distance(reference, test, mask)
    return whole if mask is None else region
