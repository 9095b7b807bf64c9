"""Numbers shared by the codec, the wire format and the radio layer, kept in one place."""

# Wire format (see semcom.codec.frame)
PDU_MAGIC = b"SM"
FRAME_MAGIC = b"SMFR"
WIRE_VERSION = 2                  # 2 added the SKETCH segment; version-1 PDUs and frames still decode
SUPPORTED_WIRE_VERSIONS = (1, 2)
MAX_IMAGE_SIDE_PX = 8192          # width/height above this are refused before any allocation
MAX_IMAGE_PIXELS = 3840 * 2160    # total pixels (4K UHD): a forged header must not make the receiver allocate GBs
DEFAULT_MAX_PIXELS = 1920 * 1080  # what a receiver or worker decodes by default (configurable up to MAX_IMAGE_PIXELS)
MAX_PDUS_PER_FRAME = 4096
MAX_TEXT_BYTES = 1024             # compressed non-key text
MAX_TEXT_CHARS = 4096             # decompressed non-key text (bounds zlib expansion)
MAX_MASK_BYTES = 65535
MAX_SKETCH_BYTES = 1024           # coded sketch (one PDU); the receiver refuses longer ones before decoding
MAX_SKETCH_PIXELS = 256 * 256     # decoded sketch: a forged one must not make the receiver allocate much

# Codec defaults
DEFAULT_PDU_BYTES = 1000          # payload of one radio packet, header included
DEFAULT_TILE_PX = 64              # key-region tiles are coded independently so a lost PDU costs one tile
TILE_PX_CHOICES = (64, 32, 16)    # encoder falls back to smaller tiles when one tile overflows a PDU
DEFAULT_MASK_BLOCK_PX = 8         # key mask travels at 1/8 resolution
DEFAULT_KEY_QUALITY = 90          # 1..100, quality knob of the classical key codec
DEFAULT_KEY_FRACTION = 0.25       # share of the image the saliency splitter keeps as key
HEADER_REPEATS = 2                # the header PDU is sent twice: without it nothing can be drawn
SKETCH_REPEATS = 2                # the sketch is sent twice too: the whole background is drawn from it
DEFAULT_SKETCH_BYTES = 480        # byte budget of one sketch copy (a 1/8 thumbnail of a 512x320 photo)
SKETCH_SCALES = (8, 16, 32)       # thumbnail = image / scale; the encoder takes the finest one that fits
SEAM_FEATHER_PX = 6               # width of the blend between key pixels and generated background

# Channel model of the loopbacks (simulated radios): offsets a TCXO-class SDR pair shows after tuning.
LOOPBACK_FREQUENCY_OFFSET = 2e-4  # cycles per sample
LOOPBACK_TIMING_OFFSET = 1.00002  # sample-clock ratio (channel_model epsilon): 20 ppm
