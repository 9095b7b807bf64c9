"""Tiny random Hugging Face models built from configs, saved with ``save_pretrained``: no download.

They have the real architectures (BLIP, SD VAE with the 8x downsampling of SD, SD inpainting UNet with
9 input channels, CLIP text encoder, Mask2Former) at a few hundred kB each, so that tests, the
benchmark and ``semcom finetune --tiny`` exercise the real loading, quantization and LoRA code here,
offline. Their outputs are noise: they check plumbing, not quality.
"""

from __future__ import annotations

from pathlib import Path

from semcom.codec.hf import require

_SEED = 0
# Word-level vocabulary of the tiny BLIP tokenizer (BERT WordPiece format).
_BLIP_WORDS = ("[PAD] [UNK] [CLS] [SEP] [MASK] [DEC] a an the of on in with and at by cat dog person man woman "
               "sky grass tree trees water sea road wall room table sofa field street building house cloud "
               "clouds snow sand beach red green blue brown grey white black dark light sitting standing "
               "lying next to front picture photo view background large small").split()
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _done(directory: Path, marker: str) -> bool:
    return (directory / marker).is_file()


def build_tiny_blip(directory: str | Path, hidden_size: int = 32) -> Path:
    """BLIP captioner + processor (32x32 input, 2-layer vision and text transformers of ``hidden_size``).

    bitsandbytes 0.50 repacks NF4 weights for CPUs with AVX512-BF16 and fails on layers narrower than its
    64-value block: NF4 tests on such CPUs need ``hidden_size`` 64 (real BLIP layers are 768 wide)."""
    directory = Path(directory)
    if _done(directory, "config.json"):
        return directory
    torch = require("torch")
    transformers = require("transformers")
    vocab = {w: i for i, w in enumerate(_BLIP_WORDS)}
    tokenizer = transformers.BertTokenizerFast(vocab=vocab, do_lower_case=True, bos_token="[DEC]")
    config = transformers.BlipConfig(
        vision_config=dict(hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=2,
                           num_attention_heads=4, image_size=32, patch_size=8),
        text_config=dict(vocab_size=len(vocab), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=64, bos_token_id=vocab["[DEC]"],
                         pad_token_id=vocab["[PAD]"], sep_token_id=vocab["[SEP]"], eos_token_id=vocab["[SEP]"]),
        projection_dim=hidden_size)
    torch.manual_seed(_SEED)
    model = transformers.BlipForConditionalGeneration(config).eval()
    image_processor = transformers.BlipImageProcessorPil(size={"height": 32, "width": 32})
    processor = transformers.BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def _tiny_clip_tokenizer(transformers):
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in _LETTERS:
        vocab[c] = len(vocab)
    for c in _LETTERS:
        vocab[c + "</w>"] = len(vocab)
    return transformers.CLIPTokenizer(vocab=vocab, merges=[], model_max_length=32), len(vocab)


def _tiny_vae(diffusers):
    # Four blocks: the 8x spatial downsampling of the real SD VAE, so latent sizes match the real thing.
    return diffusers.AutoencoderKL(block_out_channels=(8, 8, 16, 16), in_channels=3, out_channels=3,
                                   down_block_types=("DownEncoderBlock2D",) * 4,
                                   up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4,
                                   norm_num_groups=8, layers_per_block=1, sample_size=64)


def build_tiny_sd_inpaint(directory: str | Path) -> Path:
    """A StableDiffusionInpaintPipeline directory (vae/, unet/, text_encoder/, tokenizer/, scheduler/)."""
    directory = Path(directory)
    if _done(directory, "model_index.json"):
        return directory
    torch = require("torch")
    transformers = require("transformers")
    diffusers = require("diffusers")
    tokenizer, vocab_size = _tiny_clip_tokenizer(transformers)
    torch.manual_seed(_SEED)
    text_encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=32, projection_dim=32, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    unet = diffusers.UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=9, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, norm_num_groups=8, attention_head_dim=4)
    scheduler = diffusers.DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                        clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = diffusers.StableDiffusionInpaintPipeline(vae=_tiny_vae(diffusers), text_encoder=text_encoder,
                                                    tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                                    safety_checker=None, feature_extractor=None,
                                                    requires_safety_checker=False)
    pipe.save_pretrained(directory)
    return directory


def build_tiny_mask2former(directory: str | Path) -> Path:
    """Mask2Former (tiny Swin backbone) with labels person, cat, sky, grass, + its image processor."""
    directory = Path(directory)
    if _done(directory, "config.json"):
        return directory
    torch = require("torch")
    transformers = require("transformers")
    labels = {0: "person", 1: "cat", 2: "sky", 3: "grass"}
    backbone = transformers.SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=4,
                                       image_size=64, out_features=["stage1", "stage2", "stage3", "stage4"])
    config = transformers.Mask2FormerConfig(
        backbone_config=backbone, hidden_dim=32, mask_feature_size=32, feature_size=32, encoder_feedforward_dim=64,
        dim_feedforward=64, num_queries=8, encoder_layers=1, decoder_layers=2, num_attention_heads=2,
        id2label=labels, label2id={v: k for k, v in labels.items()}, common_stride=4, num_labels=len(labels))
    torch.manual_seed(_SEED)
    transformers.Mask2FormerForUniversalSegmentation(config).eval().save_pretrained(directory)
    transformers.Mask2FormerImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 96},
                                              num_labels=len(labels)).save_pretrained(directory)
    return directory


def build_tiny_models(directory: str | Path) -> dict[str, Path]:
    """All tiny models under ``directory`` (reused when already there): keys blip, sd, mask2former."""
    directory = Path(directory)
    return {"blip": build_tiny_blip(directory / "blip"), "sd": build_tiny_sd_inpaint(directory / "sd"),
            "mask2former": build_tiny_mask2former(directory / "mask2former")}
