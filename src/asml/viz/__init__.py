"""Pictures and plots: dataset previews (and, later, reports)."""

from asml.viz.preview import label_colormap, save_dataset_preview

__all__ = ["label_colormap", "save_dataset_preview"]
