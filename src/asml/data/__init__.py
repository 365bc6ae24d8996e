"""Data: generated scenes (and, later, readers for the layouts users have on disk)."""

from asml.data.synthetic import blob_segmentation_batch, random_blob_masks, render_blob_images

__all__ = ["blob_segmentation_batch", "random_blob_masks", "render_blob_images"]
