"""What defines a synthetic cohort (`SynthSpec`) and the demo's default (`default_spec`).

The model the spec parametrises is described in :mod:`neurocnn.data.synthetic`, which builds the
cohort; planted effects are :class:`neurocnn.data.effects.Effect`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from neurocnn.data.effects import Effect

__all__ = ["SynthSpec", "default_spec"]


class SynthSpec(BaseModel):
    """Everything that defines a synthetic cohort; see the module docstring for the model."""

    model_config = ConfigDict(extra="forbid")

    n_subjects: int = Field(default=200, ge=4)
    voxel_size: float = Field(default=3.0, ge=1.0, le=8.0, description="mm, isotropic")
    modalities: tuple[Literal["gm", "wm", "fa"], ...] = ("gm",)
    effects: list[Effect] = Field(default_factory=list)
    class_balance: float = Field(default=0.5, gt=0.0, lt=1.0, description="fraction of patients")
    labels: tuple[str, str] = ("control", "patient")
    seed: int = Field(default=0, ge=0)
    noise: float = Field(default=0.25, ge=0.0, description="voxel noise sd at 3 mm, unsmoothed")
    smoothing_fwhm: float = Field(default=6.0, ge=0.0, description="mm")
    deformation: float = Field(default=2.0, ge=0.0, description="displacement sd, mm")
    anatomy_sd: float = Field(default=0.08, ge=0.0, description="sd of the log anatomy field")
    field_spacing_mm: float = Field(default=24.0, gt=0.0, description="control point spacing")
    global_sd: float = Field(default=0.05, ge=0.0, lt=0.3)
    age_range: tuple[float, float] = (20.0, 80.0)
    age_effect: float = Field(default=0.02, ge=0.0, lt=0.2, description="GM loss per decade")
    age_shift: float = Field(default=0.0, description="patients older by this many years")
    compress: bool = Field(default=True, description=".nii.gz (True) or .nii")

    @model_validator(mode="after")
    def _check(self) -> SynthSpec:
        if not self.modalities or len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"modalities must be distinct and not empty, got {self.modalities}")
        for effect in self.effects:
            for part in effect.parts or [effect]:
                if part.modality not in self.modalities:
                    raise ValueError(
                        f"effect {part.name or part.kind!r} changes modality {part.modality!r}, "
                        f"which is not generated (modalities={list(self.modalities)})"
                    )
        if self.labels[0] == self.labels[1] or not all(s.strip() for s in self.labels):
            raise ValueError(f"labels must be two distinct names, got {self.labels}")
        if not self.age_range[0] <= self.age_range[1]:
            raise ValueError(f"age_range must be (low, high), got {self.age_range}")
        return self


def default_spec(
    n_subjects: int = 200,
    voxel_size: float = 3.0,
    *,
    modalities: tuple[str, ...] = ("gm", "wm", "fa"),
    interaction: bool = False,
    effect_size: float = 0.10,
    seed: int = 0,
) -> SynthSpec:
    """The demo cohort: grey-matter reduction in three AAL2 regions, lower FA in white matter.

    Parameters
    ----------
    n_subjects, voxel_size, seed
        Cohort size, isotropic voxel size in mm, random seed.
    modalities
        Modalities to generate; the FA effect is left out without ``"fa"``.
    interaction
        Add an XOR interaction of two further AAL2 regions (invisible to linear models).
    effect_size
        Fractional reduction of the grey-matter and FA effects (the interaction's parts get 1.2×);
        small quick cohorts may want more than the default 0.10.

    Returns
    -------
    SynthSpec
    """
    effects = [
        Effect(
            kind="atlas",
            name="gm_reduction",
            atlas="aal2",
            regions=["Hippocampus_L", "Insula_R", "Cingulate_Ant_L"],
            modality="gm",
            size=effect_size,
        )
    ]
    if "fa" in modalities:
        # left centrum semiovale / superior corona radiata: white matter probability ~0.98
        effects.append(
            Effect(
                kind="sphere",
                name="fa_reduction",
                center_mm=(-28.0, -10.0, 30.0),
                radius_mm=10.0,
                modality="fa",
                size=effect_size,
            )
        )
    if interaction:
        effects.append(
            Effect(
                kind="interaction",
                name="gm_interaction",
                parts=[
                    Effect(kind="atlas", atlas="aal2", regions=[region], size=1.2 * effect_size)
                    for region in ("Precuneus_R", "Temporal_Mid_L")
                ],
            )
        )
    return SynthSpec(
        n_subjects=n_subjects,
        voxel_size=voxel_size,
        modalities=tuple(modalities),  # type: ignore[arg-type]
        effects=effects,
        seed=seed,
    )
