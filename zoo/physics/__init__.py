"""Physics shared by every layer: units, orbital bases, conventions, Wigner-D, Wigner-Eckart
coupling, sparse assembly and spectra. Depends on numpy/scipy/torch/e3nn only."""
