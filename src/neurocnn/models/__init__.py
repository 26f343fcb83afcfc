"""The model zoo: every network of the four seed systems behind one registry.

>>> from neurocnn import models
>>> models.available()[:3]
['sequential_1', 'sequential_2', 'sequential_3']
>>> models.info("mrinet").default_input_shape
(58, 70, 58)
>>> net = models.build("mrinet")  # doctest: +SKIP

Every built model returns logits (B, num_classes), has `gradcam_layer` (a dotted module name for
`get_submodule`, the last convolutional block's output) and uses activation modules that are not
in-place, each used once. See `build` for the multimodal (`modalities=k`) version.
"""

# Importing the family modules registers their models (listed in seed order by `available`).
from neurocnn.models import densenet, eitel2019, hu2020, resnet, slices2d, xin2019  # noqa: F401
from neurocnn.models.blocks import MultiBranch, NeuroNet
from neurocnn.models.features2d import extract_deep_features
from neurocnn.models.pif import PIFLayer
from neurocnn.models.registry import ModelInfo, available, build, count_parameters, info
from neurocnn.models.slices2d import ChannelDimensionNet, SliceModel, SliceVote

__all__ = [
    "ChannelDimensionNet",
    "ModelInfo",
    "MultiBranch",
    "NeuroNet",
    "PIFLayer",
    "SliceModel",
    "SliceVote",
    "available",
    "build",
    "count_parameters",
    "extract_deep_features",
    "info",
]
