"""Data: readers for the layouts users have on disk, built-in generated sets (label maps; depth and
surface normals of rendered scenes), joint transforms."""

from asml.data.builtin import BUILTIN_DATASETS, SPLIT_SIZES, BuiltinSegmentation, builtin_dataset
from asml.data.dense_transforms import DenseEvalTransform, DenseTrainTransform
from asml.data.readers import (
    CityscapesSegmentation,
    DatasetError,
    FolderSegmentation,
    SegmentationFiles,
    VOCSegmentation,
    WeizmannHorse,
)
from asml.data.scenes import SCENE_TASKS, BuiltinScenes, render_scene
from asml.data.synthetic import blob_segmentation_batch, random_blob_masks, render_blob_images
from asml.data.transforms import EvalTransform, TrainTransform

__all__ = [
    "BUILTIN_DATASETS",
    "SCENE_TASKS",
    "SPLIT_SIZES",
    "BuiltinScenes",
    "BuiltinSegmentation",
    "CityscapesSegmentation",
    "DatasetError",
    "DenseEvalTransform",
    "DenseTrainTransform",
    "EvalTransform",
    "FolderSegmentation",
    "SegmentationFiles",
    "TrainTransform",
    "VOCSegmentation",
    "WeizmannHorse",
    "blob_segmentation_batch",
    "builtin_dataset",
    "random_blob_masks",
    "render_blob_images",
    "render_scene",
]
