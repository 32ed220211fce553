"""Training U-Nets on annotated frames: data, augmentation, the learner, ``train_model``,
and their settings (:mod:`crystalseg.train.config`)."""

from __future__ import annotations

from crystalseg.train.augment import Augmenter, AugmentSettings, make_augmenter
from crystalseg.train.config import DataSettings, LearnerSettings, ScheduleSettings
from crystalseg.train.data import PairItem, SegmentationData, discover_pairs, pairs, read_image
from crystalseg.train.learner import Learner, LRFindResult, unet_learner
from crystalseg.train.losses import LOSS_NAMES, make_loss
from crystalseg.train.masks import MaskRule, parse_mask_values, read_mask, to_class_indices
from crystalseg.train.settings import TrainResult, TrainSettings, train_model

__all__ = [
    "LOSS_NAMES",
    "AugmentSettings",
    "Augmenter",
    "DataSettings",
    "LRFindResult",
    "Learner",
    "LearnerSettings",
    "MaskRule",
    "PairItem",
    "ScheduleSettings",
    "SegmentationData",
    "TrainResult",
    "TrainSettings",
    "discover_pairs",
    "make_augmenter",
    "make_loss",
    "pairs",
    "parse_mask_values",
    "read_image",
    "read_mask",
    "to_class_indices",
    "train_model",
    "unet_learner",
]
