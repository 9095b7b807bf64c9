"""Bad user input: a correct result or a ValueError naming the problem, through the library, the CLI
(exit status 2, ``semcom: error: ...``) and the transmitter block's ``info`` port (the flowgraph goes on)."""

from __future__ import annotations

import io
import json
import re
import struct
import time
import tracemalloc
import zlib

import numpy as np
import pmt
import pytest
from helpers import wait_until
from PIL import Image
from semcom.cli import main
from semcom.codec import registry
from semcom.codec.imageio import load_image
from semcom.codec.pipeline import PipelineConfig, SemanticEncoder
from semcom.paths import data_path

PHOTO = data_path("photos", "chelsea.png")


@pytest.fixture(scope="module")
def small(chelsea) -> np.ndarray:
    """A 64x48 crop: every loopback through the CLI stays a few PDUs."""
    return np.ascontiguousarray(chelsea[120:168, 180:244])


def encoded_file(img: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose IHDR (CRC fixed up) claims ``width`` x ``height``: no pixels allocated."""
    data = bytearray(encoded_file(Image.new("RGB", (1, 1)), "PNG"))
    ihdr = data[12:29]                  # chunk type + 13 data bytes, after the signature and length
    assert ihdr[:4] == b"IHDR"
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


# --- files that are not usable images ----------------------------------------------------------------------
def bad_sources(tmp_path) -> dict[str, tuple[object, str]]:
    """name -> (path or bytes, regex the ValueError must match)."""
    photo = PHOTO.read_bytes()
    jpeg = encoded_file(Image.open(PHOTO), "JPEG", quality=90)
    text_file = tmp_path / "notes.png"
    text_file.write_text("not an image")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    sources = {
        "missing": (tmp_path / "missing.png", "no such file"),
        "directory": (tmp_path, "not a readable image"),
        "text": (text_file, "not a readable image"),
        "empty": (empty, "not a readable image"),
        "truncated_png": (photo[: len(photo) // 3], "not a readable image.*truncated"),
        "truncated_jpeg": (jpeg[: len(jpeg) // 3], "not a readable image.*truncated"),
        "huge_20000": (png_claiming(20000, 20000), "400000000 pixels"),
        "too_wide": (png_claiming(9000, 10), "9000x10 pixels exceeds the 8192-pixel side limit"),
    }
    for name, (source, _) in list(sources.items()):
        if isinstance(source, bytes):       # the same bytes as a file, to exercise both paths
            path = tmp_path / f"{name}.img"
            path.write_bytes(source)
            sources[f"{name}_file"] = (path, sources[name][1])
    return sources


def test_unusable_images_raise_value_errors_naming_the_problem(tmp_path):
    for name, (source, message) in bad_sources(tmp_path).items():
        with pytest.raises(ValueError, match=message):
            load_image(source)


def test_huge_header_is_refused_without_allocating():
    tracemalloc.start()
    started = time.monotonic()
    try:
        for size in ((20000, 20000), (9000, 9000), (8193, 1)):
            with pytest.raises(ValueError):
                load_image(png_claiming(*size))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20 and time.monotonic() - started < 1.0


# --- odd but valid formats become 8-bit RGB ----------------------------------------------------------------
def odd_formats(small) -> dict[str, tuple[bytes, np.ndarray]]:
    """name -> (encoded file, the (H, W, 3) uint8 RGB load_image must give)."""
    h, w = small.shape[:2]
    gray = Image.fromarray(small).convert("L")
    gray_rgb = np.repeat(np.asarray(gray)[..., None], 3, axis=2)
    alpha = np.zeros((h, w), np.uint8)
    alpha[:, w // 2:] = 255                     # left half transparent: composited on white
    on_white = small.copy()
    on_white[:, : w // 2] = 255
    gray_on_white = gray_rgb.copy()
    gray_on_white[:, : w // 2] = 255
    rgba = Image.fromarray(np.dstack([small, alpha]))      # (H, W, 4) uint8 -> RGBA
    la = Image.merge("LA", (gray, Image.fromarray(alpha)))
    palette = Image.fromarray(small).quantize(16)
    palette_rgb = np.asarray(palette.convert("RGB"))
    palette_t = palette.copy()
    palette_t.info["transparency"] = int(np.asarray(palette)[0, 0])
    transparent = np.asarray(palette) == np.asarray(palette)[0, 0]
    palette_t_rgb = np.where(transparent[..., None], 255, palette_rgb).astype(np.uint8)
    ramp16 = (np.arange(h * w, dtype=np.uint32).reshape(h, w) * 65535 // (h * w - 1)).astype(np.uint16)
    i16 = Image.fromarray(ramp16)   # mode I;16
    ramp8 = np.round(ramp16 / 65535.0 * 255).astype(np.uint8)
    cmyk = Image.fromarray(small).convert("CMYK")
    bilevel = gray.convert("1")
    return {
        "grayscale": (encoded_file(gray, "PNG"), gray_rgb),
        "bilevel": (encoded_file(bilevel, "PNG"), np.repeat(np.asarray(bilevel.convert("L"))[..., None], 3, 2)),
        "rgba": (encoded_file(rgba, "PNG"), on_white),
        "la": (encoded_file(la, "PNG"), gray_on_white),
        "palette": (encoded_file(palette, "PNG"), palette_rgb),
        "palette_transparency": (encoded_file(palette_t, "PNG", transparency=palette_t.info["transparency"]),
                                 palette_t_rgb),
        "i16": (encoded_file(i16, "PNG"), np.repeat(ramp8[..., None], 3, axis=2)),
        "cmyk_jpeg": (encoded_file(cmyk, "JPEG", quality=95), small),      # lossy: compared loosely
    }


def test_odd_formats_load_as_rgb8(small):
    for name, (data, expected) in odd_formats(small).items():
        assert Image.open(io.BytesIO(data)).mode in ("L", "1", "RGBA", "LA", "P", "I;16", "CMYK"), name
        image = load_image(data)
        assert image.shape == small.shape and image.dtype == np.uint8, name
        if name == "cmyk_jpeg":
            assert np.abs(image.astype(int) - expected).mean() < 8, name
        else:
            np.testing.assert_array_equal(image, expected, err_msg=name)


def test_odd_formats_encode(small):
    encoder = SemanticEncoder()
    for name, (data, _) in odd_formats(small).items():
        encoded = encoder.encode(load_image(data))
        assert encoded.frame.width == small.shape[1], name


# --- key masks ----------------------------------------------------------------------------------------
def write_mask(tmp_path, name: str, mask: np.ndarray) -> str:
    path = tmp_path / name
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)
    return str(path)


def test_mask_files_wrong_size_empty_unreadable(tmp_path, small):
    h, w = small.shape[:2]
    wrong = registry.create("regions", "mask", mask=write_mask(tmp_path, "wrong.png", np.ones((h + 1, w), bool)))
    with pytest.raises(ValueError, match=rf"key mask is {w}x{h + 1} \(WxH\) but the image is {w}x{h}"):
        wrong.split(small)
    with pytest.raises(ValueError, match="key mask is empty"):
        registry.create("regions", "mask", mask=write_mask(tmp_path, "empty.png", np.zeros((h, w), bool)))
    (tmp_path / "junk.png").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.png: not a readable image"):
        registry.create("regions", "mask", mask=str(tmp_path / "junk.png"))
    with pytest.raises(ValueError, match="nope.png: no such file"):
        registry.create("regions", "mask", mask=str(tmp_path / "nope.png"))
    with pytest.raises(ValueError, match="lies outside"):
        registry.create("regions", "box", box=(w, 0, 10, 10)).split(small)


def test_pipeline_config_errors_name_the_problem(tmp_path):
    cases = {
        "bad.yaml": ("key: [unclosed\n", "bad.yaml: not valid YAML"),
        "bad.json": ("{", "bad.json: not valid JSON"),
        "list.json": ("[1, 2]", "a pipeline config is a mapping"),
        "opts.json": ('{"key_options": 5}', "'key_options' must be a mapping"),
        "name.json": ('{"key": 5}', "'key' must be a backend name"),
        "tile.json": ('{"tile_px": 48}', "tile_px 48 not one of"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=message):
            PipelineConfig.from_file(tmp_path / name)


# --- the CLI --------------------------------------------------------------------------------------------
def run_cli(capsys, *args) -> tuple[int, str]:
    status = main(["loopback", *map(str, args)])
    return status, capsys.readouterr().err


def test_cli_reports_bad_input_with_status_2(tmp_path, capsys, small):
    h, w = small.shape[:2]
    image = tmp_path / "small.png"
    Image.fromarray(small).save(image)
    out = tmp_path / "out"
    for name, (source, message) in bad_sources(tmp_path).items():
        if isinstance(source, bytes):
            continue
        status, err = run_cli(capsys, "--image", source, "--out", out)
        assert status == 2 and err.startswith("semcom: error: ") and re.search(message, err), (name, err)

    (tmp_path / "bad.yaml").write_text("key: [unclosed\n")
    (tmp_path / "nope.json").write_text(json.dumps({"key": "nope"}))
    (out_file := tmp_path / "a_file").write_text("")
    cases = [
        (["--mask", write_mask(tmp_path, "wrong.png", np.ones((h, w + 3), bool))], "key mask is"),
        (["--mask", write_mask(tmp_path, "empty.png", np.zeros((h, w), bool))], "key mask is empty"),
        (["--mask", tmp_path / "nope.png"], "no such file"),
        (["--box", f"{w + 5},0,10,10"], "lies outside"),
        (["--config", tmp_path / "bad.yaml"], "not valid YAML"),
        (["--config", tmp_path / "nope.json"], "no key backend named 'nope'"),
        (["--config", tmp_path / "missing.json"], "No such file"),
        (["--key-quality", "0"], "quality must be in 1..100"),
    ]
    for extra, message in cases:
        status, err = run_cli(capsys, "--image", image, "--out", out, *extra)
        assert status == 2 and err.startswith("semcom: error: ") and message in err, (extra, err)
    status, err = run_cli(capsys, "--image", image, "--out", out_file)
    assert status == 2 and "semcom: error: " in err and "a_file" in err


def test_cli_argument_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["loopback", "--box", "1,2,3"])
    assert info.value.code == 2 and "--box takes x,y,w,h" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_loopback_runs_for_odd_formats_and_extreme_key_regions(tmp_path, capsys, small):
    h, w = small.shape[:2]
    runs = {name: ["--image", tmp_path / f"{name}.img"] for name in ("grayscale", "rgba", "i16", "cmyk_jpeg",
                                                                    "palette_transparency")}
    for name, (data, _) in odd_formats(small).items():
        (tmp_path / f"{name}.img").write_bytes(data)
    Image.fromarray(small).save(tmp_path / "small.png")
    runs["whole_image_box"] = ["--image", tmp_path / "small.png", "--box", f"0,0,{w},{h}"]
    runs["whole_image_mask"] = ["--image", tmp_path / "small.png",
                                "--mask", write_mask(tmp_path, "whole.png", np.ones((h, w), bool))]
    runs["one_pixel_key"] = ["--image", tmp_path / "small.png", "--box", "10,10,1,1"]
    for name, args in runs.items():
        out = tmp_path / name
        status, err = run_cli(capsys, *args, "--out", out, "--snr-db", 25)
        assert status == 0, (name, err)
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["received"] and (metrics["width"], metrics["height"]) == (w, h), name
        assert load_image(out / "reconstruction.png").shape == small.shape, name
        if name.startswith("whole_image"):
            assert metrics["key_share"] == 1.0 and metrics["quality"]["psnr_db"] > 30, (name, metrics["quality"])


# --- the transmitter block's info port -------------------------------------------------------------------------
@pytest.mark.slow
def test_semantic_tx_reports_errors_on_info_and_keeps_running(tmp_path, small):
    from gnuradio import blocks, gr
    from semcom.radio.pdu import to_pdu
    from semcom.radio.semantic_rx import semantic_rx
    from semcom.radio.semantic_tx import semantic_tx

    h, w = small.shape[:2]
    tb = gr.top_block()
    tx = semantic_tx()
    rx = semantic_rx(timeout_s=0.3)
    info = blocks.message_debug()
    tb.msg_connect((tx, "pdus"), (rx, "pdus"))
    tb.msg_connect((tx, "info"), (info, "store"))
    bad = [
        lambda: tx.send(np.zeros((h, w), np.uint8)),                         # grayscale array: not RGB
        lambda: tx.send(small.astype(np.float32)),                           # wrong dtype
        lambda: tx.send(small, key_mask=np.ones((h, w + 1), bool)),         # mask of the wrong size
        lambda: tx.send(png_claiming(20000, 20000)),                         # huge header, as bytes
        lambda: tx.send(str(tmp_path / "missing.png")),
        lambda: tx.send(12345),                                               # not a path/bytes/array at all
        lambda: tx._post(pmt.intern("in"), pmt.from_long(5)),               # not a PDU
        lambda: tx._post(pmt.intern("in"), to_pdu(png_claiming(9000, 10))),  # huge header, as a PDU
    ]
    expected = ["(H, W, 3) uint8", "(H, W, 3) uint8", "key mask is", "pixels", "no such file",
                "encoding failed", "ignored message", "side limit"]
    tb.start()
    try:
        for send in bad:
            send()
        assert wait_until(lambda: info.num_messages() == len(bad)), info.num_messages()
        good = odd_formats(small)["cmyk_jpeg"][0]
        tx._post(pmt.intern("in"), to_pdu(good))
        tx.send(small, key_mask=np.zeros((h, w), bool))                     # empty key region: all generated
        assert rx.wait_for_images(2, timeout_s=20)
    finally:
        tb.stop()
        tb.wait()
    errors = [pmt.to_python(info.get_message(i)).get("error", "") for i in range(len(bad))]
    assert tx.errors == len(bad)
    for message in expected:
        assert any(message in e for e in errors), (message, errors)
    assert tx.images_sent == 2 and rx.images_out == 2
