"""Interpretation of trained networks: attribution maps, group maps, atlas scores and sanity checks.

Methods (each takes a model and an (N, C, *spatial) batch and returns (N, *spatial) maps; none
computes weight gradients and none leaves the model changed):

>>> from neurocnn.interpret import grad_cam, guided_backprop, meaningful_perturbation  # doctest: +SKIP
>>> maps = grad_cam(net, x)                       # predicted class, net.gradcam_layer  # doctest: +SKIP
>>> mp = meaningful_perturbation(net, x[:1])      # S3's settings; mp.saliency           # doctest: +SKIP

Analyses: `group_maps`/`conjoined_map` (S3), `region_scores` on any atlas resampled through the
affines, `agreement_table` (real Dice, rank correlation), `masked_accuracy`, `first_layer_features`,
`voxelwise_ttest`, `model_randomisation` and ground-truth `localisation`. `interpret_run` does it all for
a training run folder (``neurocnn interpret RUN``).
"""

from neurocnn.interpret.agreement import (
    DEFAULT_THRESHOLDS,
    agreement_table,
    dice,
    rank_correlation,
    voxel_agreement,
)
from neurocnn.interpret.attribution import attribution_mode, predicted_classes
from neurocnn.interpret.captum_methods import integrated_gradients, occlusion
from neurocnn.interpret.first_layer import compare_features, first_layer_features, plot_first_layer
from neurocnn.interpret.gradcam import grad_cam
from neurocnn.interpret.group import (
    binarize,
    conjoined_map,
    group_maps,
    load_map,
    save_map,
    save_subject_maps,
    scale_unit,
)
from neurocnn.interpret.guided_backprop import guided_backprop
from neurocnn.interpret.masked_eval import masked_accuracy
from neurocnn.interpret.perturbation import PerturbationConfig, PerturbationResult, meaningful_perturbation
from neurocnn.interpret.regions import AtlasOnGrid, atlas_on_grid, region_scores, top_regions
from neurocnn.interpret.sanity import (
    localisation,
    model_randomisation,
    planted_regions,
    randomised_copy,
    region_ranks,
)
from neurocnn.interpret.separable import gaussian_blur
from neurocnn.interpret.voxel_stats import VoxelTest, voxelwise_ttest

__all__ = [
    "DEFAULT_THRESHOLDS",
    "AtlasOnGrid",
    "PerturbationConfig",
    "PerturbationResult",
    "VoxelTest",
    "agreement_table",
    "atlas_on_grid",
    "attribution_mode",
    "binarize",
    "compare_features",
    "conjoined_map",
    "dice",
    "first_layer_features",
    "gaussian_blur",
    "grad_cam",
    "group_maps",
    "guided_backprop",
    "integrated_gradients",
    "load_map",
    "localisation",
    "masked_accuracy",
    "meaningful_perturbation",
    "model_randomisation",
    "occlusion",
    "planted_regions",
    "plot_first_layer",
    "predicted_classes",
    "randomised_copy",
    "rank_correlation",
    "region_ranks",
    "region_scores",
    "save_map",
    "save_subject_maps",
    "scale_unit",
    "top_regions",
    "voxel_agreement",
    "voxelwise_ttest",
]
