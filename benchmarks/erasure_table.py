#!/usr/bin/env python3
"""Key-region quality under random PDU loss (header copies included), as a markdown table for the README.

    python benchmarks/erasure_table.py --seeds 20
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

from semcom.codec.imageio import load_image  # noqa: E402
from semcom.codec.pipeline import PipelineConfig, SemanticDecoder, SemanticEncoder  # noqa: E402
from semcom.eval.erasure import erasure_trial, markdown_table, summarise  # noqa: E402
from semcom.paths import bundled_photos  # noqa: E402

RATES = (0.0, 0.1, 0.3, 0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=float, nargs="+", default=RATES, help="PDU erasure probabilities")
    parser.add_argument("--seeds", type=int, default=20, help="erasure patterns per photo and rate")
    parser.add_argument("--config", help="pipeline preset (JSON/YAML); default: built-in offline pipeline")
    args = parser.parse_args(argv)
    config = PipelineConfig.from_file(args.config) if args.config else PipelineConfig()
    encoder, decoder = SemanticEncoder(config), SemanticDecoder(config)
    started = time.monotonic()
    trials = []
    photos = bundled_photos()
    for image_id, path in enumerate(photos):
        image = load_image(path)
        encoded = encoder.encode(image, image_id=image_id)
        for rate in args.rates:
            for seed in range(args.seeds):
                trials.append(erasure_trial(image, encoded, decoder, rate, seed=1000 * image_id + seed,
                                            pdu_bytes=config.pdu_bytes))
    print(f"{len(photos)} bundled photos x {args.seeds} seeded erasure patterns per rate, "
          f"pipeline key={config.key}, {config.pdu_bytes}-byte PDUs ({time.monotonic() - started:.1f} s)\n")
    print(markdown_table(summarise(trials)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
