"""The catalogue of built-in datasets, computed here by real electronic-structure codes.

    zoo data build a-hfo2 --size small      # build into the cache (resumable, progress bar)
    dataset_path("a-hfo2")                   # where it lives (size "small" unless "a-hfo2@paper")
    ensure_built("a-hfo2")                   # build if missing (used by `zoo bench`)

Cache: $ZOO_CACHE, else ~/.cache/zoo/datasets; layout <cache>/<name>/<size>/. Each build
writes into a staging directory, one structure file at a time (atomic), so an interrupted
build keeps its finished structures and a re-run continues where it stopped. Periodic tblite
data are Gamma-folded (image_convention "gamma-folded") in cells at least 2 x cutoff wide;
`zoo data build a-hfo2 --engine cp2k` ("a-hfo2+cp2k") computes the seed's level of theory with
real per-image blocks ("explicit") beside it.

Modules: `entries` (the table: Entry, Size, CATALOGUE, card text, recipes for other engines),
`recipes` (structure recipes and plans), `contamination` (measured Gamma-folding errors quoted in cards), `paths` (cache
layout), `build` (the resumable builder), `pool` (its worker processes), `spectrum` (generalized
or H-only, measured), `table` (`zoo data list`), `fixtures` (tiny datasets for tests).
"""

from zoo.data.catalogue.build import build, ensure_built, structure_stats, unfold_repeat
from zoo.data.catalogue.contamination import IMAGE_CONTAMINATION
from zoo.data.catalogue.entries import CATALOGUE, SIZES, EngineRecipe, Entry, Size, parse_name, split_variant
from zoo.data.catalogue.fixtures import build_fixture
from zoo.data.catalogue.paths import cache_dir, card_name, dataset_path, is_built
from zoo.data.catalogue.pool import OPENBLAS
from zoo.data.catalogue.spectrum import card_spectrum, measure_spectrum
from zoo.data.catalogue.table import catalogue_table

__all__ = ["CATALOGUE", "IMAGE_CONTAMINATION", "OPENBLAS", "SIZES", "EngineRecipe", "Entry", "Size", "build",
           "build_fixture", "cache_dir", "card_name", "card_spectrum", "catalogue_table", "dataset_path",
           "ensure_built", "is_built", "measure_spectrum", "parse_name", "split_variant", "structure_stats",
           "unfold_repeat"]
