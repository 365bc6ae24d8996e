"""Metrics that measure what ASM claims to improve: regions, boundaries and context.

``asml.metrics.functional`` holds the exact definitions as batched torch functions;
``SegmentationMetrics`` accumulates them over a dataset (sum states, distributed-ready);
``NormalMetrics`` and ``DepthMetrics`` do the same for surface normals and depth.
"""

from asml.metrics import functional
from asml.metrics.regression import (
    DepthMetrics,
    NormalMetrics,
    format_depth_table,
    format_normals_table,
    regression_to_json,
)
from asml.metrics.segmentation import SegmentationMetrics, format_table, to_json

__all__ = [
    "DepthMetrics",
    "NormalMetrics",
    "SegmentationMetrics",
    "format_depth_table",
    "format_normals_table",
    "format_table",
    "functional",
    "regression_to_json",
    "to_json",
]
