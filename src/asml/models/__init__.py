"""Segmentation models from real zoos behind one builder: ``asml.models.build(name, num_classes, ...)``.

* ``fcn``: torchvision's FCN head on a torchvision ResNet backbone (resnet18/34/50/101). ResNet-50
  and -101 use dilation in the last two stages (output stride 8) as torchvision's FCN does; ResNet-18
  and -34 have basic blocks, which torchvision cannot dilate, so they run at output stride 32
  (the original FCN-32s) and the head upsamples.
* every segmentation-models-pytorch architecture by name (``unet``, ``unetplusplus``, ``fpn``,
  ``pspnet``, ``deeplabv3``, ``deeplabv3plus``, ``linknet``, ``manet``, ``pan``, ``upernet``,
  ``segformer``, ``dpt``), with aliases such as ``deeplab``, ``deeplabv3+``, ``unet++``, ``psp``.

The returned ``SegmentationModel`` takes images of any size: it pads them to the multiple its
encoder needs and crops the logits back, so the output is ``[B, C, H, W]`` at the input size.
"""

from asml.models.builder import (
    ARCHITECTURES,
    SegmentationModel,
    available_architectures,
    build,
    canonical_architecture,
)

__all__ = ["ARCHITECTURES", "SegmentationModel", "available_architectures", "build", "canonical_architecture"]
