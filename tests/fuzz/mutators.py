"""Seeded mutators: bytes, text, JSON values and HDF5 structure. Each takes a numpy Generator
and returns a short label of what it did (so an escape can be reproduced from the seed and
read from the report)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np

# values that break parsers and numerics: huge, tiny, non-finite, wrong types
NASTY_NUMBERS = [0, -1, 1, 2**31, 2**63 - 1, -(2**63), 1e308, -1e308, 1e-320, float("nan"), float("inf"),
                 float("-inf"), 1e6, -7]
NASTY_TEXT_TOKENS = ["nan", "inf", "-inf", "1e400", "-1e999", "abc", "", "-", "0x1F", "1,5", "9" * 40,
                     "\x00", "ü", "1e-400", "-0", "3.", ".", "e5", "NaN", "+"]


# -- bytes ----------------------------------------------------------------------------------

def mutate_bytes(rng: np.random.Generator, data: bytes) -> tuple[bytes, str]:
    """One of: truncate, flip bytes, overwrite a range with noise/zeros/0xff, insert, delete, empty."""
    n = len(data)
    op = rng.choice(["truncate", "flip", "noise", "zeros", "ones", "insert", "delete", "empty", "dup"],
                    p=[0.2, 0.2, 0.15, 0.1, 0.05, 0.1, 0.1, 0.03, 0.07])
    if op == "empty" or n == 0:
        return b"", "empty"
    buf = bytearray(data)
    if op == "truncate":
        k = int(rng.integers(0, n))
        return bytes(buf[:k]), f"truncate@{k}"
    if op == "flip":
        k = int(rng.integers(1, 9))
        pos = rng.integers(0, n, size=k)
        for p in pos:
            buf[p] ^= 1 << int(rng.integers(0, 8))
        return bytes(buf), f"flip{k}"
    a = int(rng.integers(0, n))
    length = int(min(n - a, rng.integers(1, 257)))
    if op in ("noise", "zeros", "ones"):
        fill = {"noise": rng.integers(0, 256, size=length, dtype=np.uint8).tobytes(), "zeros": bytes(length),
                "ones": b"\xff" * length}[op]
        buf[a:a + length] = fill
        return bytes(buf), f"{op}@{a}+{length}"
    if op == "insert":
        return bytes(buf[:a]) + rng.integers(0, 256, size=length, dtype=np.uint8).tobytes() + bytes(buf[a:]), \
            f"insert@{a}+{length}"
    if op == "delete":
        return bytes(buf[:a]) + bytes(buf[a + length:]), f"delete@{a}+{length}"
    return bytes(buf[:a + length]) + bytes(buf[a:]), f"dup@{a}+{length}"


# -- text -----------------------------------------------------------------------------------

_NUM = re.compile(r"-?\d+\.?\d*(?:[eE][-+]?\d+)?")


def mutate_text(rng: np.random.Generator, text: str) -> tuple[str, str]:
    """Line- and token-level damage: drop/duplicate/swap/truncate lines, replace numbers with
    nasty tokens, shuffle tokens of one line, or fall back to byte damage."""
    lines = text.splitlines(keepends=True)
    op = rng.choice(["drop_line", "dup_line", "swap_lines", "cut_line", "number", "numbers", "shuffle", "bytes",
                     "first_line"], p=[0.12, 0.08, 0.08, 0.1, 0.2, 0.1, 0.07, 0.15, 0.1])
    if not lines or op == "bytes":
        data, label = mutate_bytes(rng, text.encode())
        return data.decode("utf-8", errors="replace"), label
    k = int(rng.integers(0, len(lines)))
    if op == "drop_line":
        del lines[k]
    elif op == "dup_line":
        lines.insert(k, lines[k])
    elif op == "swap_lines":
        m = int(rng.integers(0, len(lines)))
        lines[k], lines[m] = lines[m], lines[k]
    elif op == "cut_line":
        lines[k] = lines[k][: int(rng.integers(0, max(1, len(lines[k]))))]
    elif op == "first_line":
        k = 0
        lines[0] = str(rng.choice(NASTY_TEXT_TOKENS + ["-5", "1000000000000", "3.5", "0"])) + "\n"
    elif op in ("number", "numbers"):
        matches = [(i, m) for i, line in enumerate(lines) for m in _NUM.finditer(line)]
        if matches:
            picks = [matches[int(rng.integers(0, len(matches)))] for _ in range(1 if op == "number" else 5)]
            for i, m in sorted(picks, key=lambda t: (t[0], -t[1].start())):
                tok = str(rng.choice(NASTY_TEXT_TOKENS + [repr(x) for x in NASTY_NUMBERS]))
                lines[i] = lines[i][:m.start()] + tok + lines[i][m.end():] if m.end() <= len(lines[i]) else lines[i]
    elif op == "shuffle":
        toks = lines[k].split()
        rng.shuffle(toks)
        lines[k] = " ".join(toks) + "\n"
    return "".join(lines), f"{op}:{k}"


# -- JSON -----------------------------------------------------------------------------------

NASTY_JSON: list[Any] = [None, True, 0, -1, 1e308, -1e308, float("nan"), float("inf"), "", "x", "../../x", [], {},
                         [1, 2], {"a": 1}, 2**70, "nan", [None]]


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, prefix + (i,))
    return out


def mutate_json(rng: np.random.Generator, obj: Any) -> tuple[Any, str]:
    """Replace, delete or retype one node (anywhere in the tree) of a JSON document."""
    obj = json.loads(json.dumps(obj))
    paths = [p for p in _paths(obj) if p]
    path = paths[int(rng.integers(0, len(paths)))]
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    op = rng.choice(["replace", "delete", "wrap", "stringify"], p=[0.6, 0.2, 0.1, 0.1])
    if op == "delete":
        del parent[last]
    elif op == "wrap":
        parent[last] = [parent[last]]
    elif op == "stringify":
        parent[last] = json.dumps(parent[last])
    else:
        parent[last] = NASTY_JSON[int(rng.integers(0, len(NASTY_JSON)))]
    return obj, f"json-{op}:{'/'.join(map(str, path))}"


# -- HDF5 structure --------------------------------------------------------------------------

def _datasets(f: h5py.File) -> list[str]:
    names: list[str] = []
    f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
    return names


def _wrong_value(rng: np.random.Generator, arr: np.ndarray) -> tuple[Any, str]:
    """A replacement for an array: wrong dtype, wrong shape, non-finite or huge values, negatives."""
    ops: list[tuple[str, Callable[[], Any]]] = [
        ("strings", lambda: np.array([b"abc"] * max(1, arr.size))),
        ("float", lambda: arr.astype(np.float64) + 0.5 if arr.dtype.kind in "iub" else arr),
        ("complex", lambda: arr.astype(np.complex128) * 1j if arr.dtype.kind in "iufc" else arr),
        ("bool", lambda: np.ones(arr.shape, dtype=bool)),
        ("drop_last", lambda: arr.reshape(-1)[:-1]),
        ("extra", lambda: np.concatenate([arr.reshape(-1), arr.reshape(-1)[:1]]) if arr.size else np.zeros(1)),
        ("transpose", lambda: arr.T if arr.ndim == 2 else arr[None]),
        ("flat", lambda: arr.reshape(-1)),
        ("scalar", lambda: np.float64(3.0)),
        ("empty", lambda: np.zeros((0,) + arr.shape[1:], dtype=arr.dtype)),
        ("nan", lambda: _poke(rng, arr.astype(np.float64), np.nan)),
        ("inf", lambda: _poke(rng, arr.astype(np.float64), np.inf)),
        ("huge", lambda: _poke(rng, arr.astype(np.float64), 1e308)),
        ("neg", lambda: _poke(rng, arr.copy(), -1) if arr.dtype.kind in "iuf" else arr),
        ("bigint", lambda: _poke(rng, arr.astype(np.int64), 2**62) if arr.dtype.kind in "iuf" else arr),
        ("3d", lambda: np.zeros((2, 2, 2))),
    ]
    name, fn = ops[int(rng.integers(0, len(ops)))]
    return fn(), name


def _poke(rng: np.random.Generator, arr: np.ndarray, value) -> np.ndarray:
    flat = arr.reshape(-1)
    if flat.size:
        k = int(rng.integers(1, min(4, flat.size) + 1))
        flat[rng.integers(0, flat.size, size=k)] = value
    return flat.reshape(arr.shape)


def mutate_hdf5(rng: np.random.Generator, path: Path) -> str:
    """Rewrite one dataset or attribute of an HDF5 file in place (delete, retype, reshape,
    non-finite/huge/negative values, replace by a group) and return what was done."""
    with h5py.File(path, "a") as f:
        names = _datasets(f)
        attrs = list(f.attrs)
        if attrs and rng.random() < 0.3:
            key = attrs[int(rng.integers(0, len(attrs)))]
            op = rng.choice(["delete", "garble", "number", "array", "json"])
            if op == "delete":
                del f.attrs[key]
            elif op == "garble":
                f.attrs[key] = "{not json"
            elif op == "number":
                f.attrs[key] = NASTY_NUMBERS[int(rng.integers(0, len(NASTY_NUMBERS)))]
            elif op == "array":
                f.attrs[key] = np.arange(3)
            else:
                obj, _ = mutate_json(rng, json.loads(f.attrs[key])) if _is_json(f.attrs[key]) else ("x", "")
                f.attrs[key] = json.dumps(obj)
            return f"attr-{op}:{key}"
        key = names[int(rng.integers(0, len(names)))]
        if rng.random() < 0.12:
            del f[key]
            if rng.random() < 0.5:
                f.create_group(key)
                return f"group:{key}"
            return f"delete:{key}"
        value, label = _wrong_value(rng, f[key][()] if f[key].shape != () else np.asarray(f[key][()]))
        del f[key]
        f[key] = value
        return f"{label}:{key}"


def _is_json(v) -> bool:
    try:
        json.loads(v)
        return True
    except (TypeError, ValueError):
        return False
