"""Gamma-folding contamination of the tblite sets, measured once and quoted in their cards.

Each figure is the change of the labelled blocks when the cell is replaced by a larger supercell
(zoo.data.engines.image_contamination, run by benchmarks/image_contamination.py; discussed in
docs/datasets.md). The builder copies the entry for (dataset, size) into `provenance.image_contamination`
of folded tblite builds; the values are measurements, so they change only when re-measured.
"""

from __future__ import annotations

_CRYSTAL_CONTAMINATION = {
    "measured_on": "m-HfO2 2x2x2 (96 atoms, 10.1 A wide), 4.9 A cutoff, vs 3x3x3 (324 atoms)",
    "max_abs_diff_H_edges_hartree": 0.0232, "median_abs_diff_H_edges_hartree": 1.4e-4,
    "max_abs_diff_H_edges_below_3A_hartree": 1.6e-4, "max_abs_diff_H_onsite_hartree": 6.5e-4,
    "max_abs_diff_S_edges": 0.0254, "median_abs_diff_S_edges": 2.4e-5,
}
IMAGE_CONTAMINATION: dict[tuple[str, str], dict] = {
    ("c-hfo2", "small"): _CRYSTAL_CONTAMINATION,
    # benchmarks/image_contamination.py on the test cell of each built small set
    ("a-hfo2", "small"): {
        "measured_on": "a-hfo2 small test-0 (192 atoms, 10.5 A wide), 5 A cutoff, vs its 1x2x2 supercell (768 atoms)",
        "max_abs_diff_H_edges_hartree": 0.152, "median_abs_diff_H_edges_hartree": 7.8e-7,
        "p99_abs_diff_H_edges_hartree": 4.1e-3, "max_abs_diff_H_edges_below_3A_hartree": 2.4e-4,
        "max_abs_diff_H_onsite_hartree": 7.0e-4, "max_abs_diff_S_edges": 0.179, "p99_abs_diff_S_edges": 4.3e-3,
    },
    ("a-ptge", "small"): {
        "measured_on": "a-ptge small test-0 (192 atoms, 12.4 A wide), 6 A cutoff, vs its 1x2x1 supercell (384 atoms; "
                       "images through the y faces only)",
        "max_abs_diff_H_edges_hartree": 0.0698, "median_abs_diff_H_edges_hartree": 1.7e-5,
        "p99_abs_diff_H_edges_hartree": 0.0112, "max_abs_diff_H_edges_below_3A_hartree": 0.0123,
        "max_abs_diff_H_onsite_hartree": 5.7e-3, "max_abs_diff_S_edges": 0.192, "p99_abs_diff_S_edges": 0.029,
    },
    ("a-gst", "small"): {
        "measured_on": "a-gst small test-0 (112 atoms, 12.3 A wide), 6 A cutoff, vs its 1x2x1 supercell (224 atoms; "
                       "images through the y faces only)",
        "max_abs_diff_H_edges_hartree": 0.0515, "median_abs_diff_H_edges_hartree": 5.2e-6,
        "p99_abs_diff_H_edges_hartree": 3.5e-3, "max_abs_diff_H_edges_below_3A_hartree": 5.5e-3,
        "max_abs_diff_H_onsite_hartree": 5.2e-3, "max_abs_diff_S_edges": 0.178, "p99_abs_diff_S_edges": 0.0106,
    },
}
