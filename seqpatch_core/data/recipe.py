"""The synthetic recipe: every constant that the numpy (``synth``) and torch (``synth_torch``) generators
and the training batches share, in one place.

A :class:`Recipe` is frozen and recorded whole in each checkpoint's JSON record (``training.recipe``), so
a checkpoint says what data it saw. Two recipes exist:

* :data:`LESIONS` -- the recipe of the shipped weights' nine phases and of every evaluation and
  benchmark set (``synth.benchmark_set``, ``batches.validation_set``): lesions of nominal radius
  5-25 mm (75 %) or 1.5-30 mm, on a 0.6-1.1 mm working grid, clicks at the mass centre moved by up to
  30 % of the equivalent radius. The golden test values depend on it: it never changes.
* :data:`ALL_SIZES` -- ``train``'s default since issue 27: objects of 3-80 mm radius on every grid of
  the Predictor's pyramid (1, 2, 4, 8 mm, each times 0.6-1.1), so a large object appears as it does on
  a coarse grid; more lobulated (organ-like) shapes, more touching neighbours of the target's
  intensity and more leak organs, vessels inside the object, and clicks anywhere in the object's
  inner half (up to half-way from the mass centre to the boundary along a random direction).

Units: ``_mm`` fields are millimetres, ``_px`` pixels of the slice's working grid, intensities are
fractions of the display window [0, 1], probabilities are per slice. Nothing runs on import.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

__all__ = ["ALL_SIZES", "LESIONS", "RECIPES", "Recipe", "recipe"]


@dataclass(frozen=True)
class Recipe:
    """Constants of one synthetic recipe (units in the module docstring)."""

    name: str
    # ---- working grid of a training slice: spacing = a grid (drawn with grid_p) x U(spacing_factor)
    grids_mm: tuple[float, ...] = (1.0,)
    grid_p: tuple[float, ...] = (1.0,)
    spacing_factor: tuple[float, float] = (0.6, 1.1)
    #: Atlas structures (1 mm templates, areas from 40 mm^2) are taken no coarser than this: a coarser
    #: draw is halved until it fits, so small structures keep a few pixels.
    atlas_max_spacing_mm: float = 2.2
    # ---- backgrounds
    bank_prob_phantom: float = 0.4  # procedural background even when a bank is given
    lung_prob: float = 0.5  # share of procedural backgrounds that are lung-like
    centre_jitter_px: float = 15.0  # the target's nominal centre lies this close to the slice centre
    # ---- target size: nominal radius drawn log-uniform in radius_main_mm with radius_main_p, else in
    # radius_wide_mm; then limited to [min_radius_px, fit_frac x size] px.
    radius_main_mm: tuple[float, float] = (5.0, 25.0)
    radius_main_p: float = 0.75
    radius_wide_mm: tuple[float, float] = (1.5, 30.0)
    min_radius_px: float = 1.5
    fit_frac: float = 0.22
    #: True: the mm range is cut to the pixel limits *before* the draw, so every grid gets objects of
    #: every size it can hold (no pile-up at the limits); False: the draw is clipped after (LESIONS).
    radius_fit_to_grid: bool = False
    # ---- target shape kinds (seqpatch_core.data.shapes): noise, fourier, lobes, spiculated
    shape_p: tuple[float, float, float, float] = (0.3, 0.35, 0.25, 0.1)
    blur_px: tuple[float, float] = (0.3, 3.0)  # partial-volume border: Gaussian sigma of the target
    # ---- contrast to the background under the target: |delta| log-uniform, narrow or wide
    contrast_low_p: float = 0.5
    contrast_low: tuple[float, float] = (0.03, 0.12)
    contrast_wide: tuple[float, float] = (0.03, 0.6)
    nodule_p: float = 0.8  # in a lung background: a solid (bright) nodule
    nodule_mag: tuple[float, float] = (0.25, 0.75)
    # ---- neighbours
    leak_p: float = 0.2  # a large organ of the target's intensity touching it
    neighbour_p: float = 0.6  # 1..max_neighbours blobs / tubes of similar intensity, some touching
    max_neighbours: int = 4
    # ---- inner structure
    texture_amp: float = 0.1  # correlated texture, standard deviation up to this
    rim_p: float = 0.2  # enhancing rim around a necrotic core
    inner_vessel_p: float = 0.0  # 1..max_inner_vessels tubes inside the target (label unchanged)
    max_inner_vessels: int = 4
    inner_vessel_width_mm: tuple[float, float] = (2.0, 8.0)
    inner_vessel_contrast: tuple[float, float] = (0.3, 1.0)  # x |delta|, either sign
    inner_vessel_min_radius_px: float = 6.0
    # ---- acquisition
    noise_sd_max: float = 0.05
    bias_max: float = 0.1
    # ---- clicks (training augmentation): moved with click_move_p, by the rule click_rule:
    # "jitter": up to click_frac x the equivalent radius sqrt(area / pi) from the mass centre;
    # "inner": up to click_frac of the way from the mass centre to the boundary along a random ray.
    click_move_p: float = 0.8
    click_rule: str = "jitter"
    click_frac: float = 0.3
    #: Training validation: this share of the synthetic validation slices are large objects of
    #: val_large_radius_mm at val_large_spacing_mm (0: none), so checkpoints are chosen on them too.
    val_large_share: float = 0.0
    val_large_radius_mm: tuple[float, float] = (20.0, 80.0)
    val_large_spacing_mm: float = 2.0

    def draw_spacing(self, rng: np.random.Generator) -> float:
        """A working spacing in mm (one grid, times a factor); a single grid draws the factor alone."""
        grid = self.grids_mm[0]
        if len(self.grids_mm) > 1:
            grid = self.grids_mm[int(rng.choice(len(self.grids_mm), p=list(self.grid_p)))]
        return float(grid * rng.uniform(*self.spacing_factor))

    def atlas_spacing(self, spacing_mm: float) -> float:
        """The spacing an atlas structure is drawn at for a slice drawn at ``spacing_mm`` (halved to fit)."""
        while spacing_mm > self.atlas_max_spacing_mm:
            spacing_mm /= 2.0
        return spacing_mm

    def radius_limits_mm(self, size: int, spacing_mm: float) -> tuple[float, float]:
        """(lo, hi) radius in mm that a slice of ``size`` px at ``spacing_mm`` holds."""
        return self.min_radius_px * spacing_mm, self.fit_frac * size * spacing_mm

    def record(self) -> dict:
        """The recipe as a JSON-able dict (tuples as lists), for the checkpoint record."""
        return asdict(self)


LESIONS = Recipe(name="lesions")

ALL_SIZES = replace(
    LESIONS,
    name="all-sizes",
    grids_mm=(1.0, 2.0, 4.0, 8.0),
    grid_p=(0.4, 0.25, 0.2, 0.15),
    radius_main_mm=(3.0, 80.0),
    radius_main_p=1.0,
    fit_frac=0.4,
    radius_fit_to_grid=True,
    shape_p=(0.2, 0.3, 0.4, 0.1),
    leak_p=0.3,
    neighbour_p=0.75,
    inner_vessel_p=0.5,
    click_rule="inner",
    click_frac=0.5,
    val_large_share=1 / 3,
)

RECIPES = {r.name: r for r in (LESIONS, ALL_SIZES)}


def recipe(name: str) -> Recipe:
    """The recipe called ``name`` (ValueError listing the names otherwise)."""
    if name not in RECIPES:
        raise ValueError(f"unknown synthetic recipe {name!r}; choose from {', '.join(RECIPES)}")
    return RECIPES[name]
