"""U-Net models: the architecture spec, safe checkpoints and the bundled default model."""

from __future__ import annotations

from crystalseg.models.checkpoint import (
    DEFAULT_DECODER_CHANNELS,
    DEFAULT_ENCODER,
    FORMAT_VERSION,
    ModelSpec,
    build_model,
    check_encoder_name,
    convert_state_dict,
    default_checkpoint_path,
    find_imagenet_weights,
    load_checkpoint,
    load_encoder_weights,
    normalise,
    prepare_batch,
    read_checkpoint_meta,
    save_checkpoint,
    to_unit,
)

__all__ = [
    "DEFAULT_DECODER_CHANNELS",
    "DEFAULT_ENCODER",
    "FORMAT_VERSION",
    "ModelSpec",
    "build_model",
    "check_encoder_name",
    "convert_state_dict",
    "default_checkpoint_path",
    "find_imagenet_weights",
    "load_checkpoint",
    "load_encoder_weights",
    "normalise",
    "prepare_batch",
    "read_checkpoint_meta",
    "save_checkpoint",
    "to_unit",
]
