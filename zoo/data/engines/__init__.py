"""Electronic-structure engines: one small adapter per code, one interface.

    engine = get_engine("tblite")             # or "pyscf"
    rec = engine.record(structure, cutoff=5.0, name="a-hfo2-train")

Every adapter turns a `Structure` into dense H and S in its code's orbital order
(`Engine.compute`); `Engine.record` converts them to the internal convention and cuts them
into the ragged block format (`zoo.data.format.Record`), Hartree / Angstrom.
"""

from zoo.data.engines.base import (Engine, EngineError, EngineOutput, dense_to_record, get_engine, image_contamination,
                                  list_engines)

__all__ = ["Engine", "EngineError", "EngineOutput", "dense_to_record", "get_engine", "image_contamination", "list_engines"]
