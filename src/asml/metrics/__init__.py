"""Metrics that measure what ASM claims to improve: regions, boundaries and context.

``asml.metrics.functional`` holds the exact definitions as batched torch functions;
``SegmentationMetrics`` accumulates them over a dataset (sum states, distributed-ready).
"""

from asml.metrics import functional
from asml.metrics.segmentation import SegmentationMetrics, format_table, to_json

__all__ = ["SegmentationMetrics", "format_table", "functional", "to_json"]
