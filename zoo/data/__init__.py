"""Datasets: one on-disk format, lazy reading, atomic writing, validation, graphs, torch Data.

Public API::

    from zoo.data import Dataset
    ds = Dataset.open("path/to/dataset")
    rec = ds.read(ds.split("test")[0])   # numpy arrays, internal convention, Hartree, Angstrom
    eigs = rec.eigvalsh()                # assemble H (and S) at Gamma and diagonalize
"""

from zoo.data.format import SCHEMA_VERSION, Dataset, DatasetCard, DatasetWriter, Record, Structure, read_record, write_record

__all__ = ["SCHEMA_VERSION", "Dataset", "DatasetCard", "DatasetWriter", "Record", "Structure", "read_record", "write_record"]
