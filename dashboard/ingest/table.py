"""A small columnar table: numpy columns, string columns as codes into a vocabulary.

Why not pandas here: importing pandas costs ~0.4 s, more than parsing a typical
trace, and ``rankscope report`` must start fast enough to beat HTA on small
traces too. The analysis engine works on these tables with numpy; the
dashboard turns them into DataFrames with ``to_pandas()`` when it draws.

A string column ``c`` is stored as int32 codes in ``cols[c]`` and its values
in ``vocab[c]`` (``strings(c)`` decodes). Every other column is a 1-D array.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa


def distinct(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values of a 1-D array.

    Not np.unique: its first call imports numpy.ma (~25 ms), a fifth of a small
    report's whole run time.
    """
    if len(values) == 0:
        return values
    s = np.sort(values, kind="stable")
    keep = np.empty(len(s), dtype=bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


def isin(values: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """``values`` that occur in ``candidates``, by binary search (np.isin imports numpy.ma)."""
    if len(values) == 0 or len(candidates) == 0:
        return np.zeros(len(values), dtype=bool)
    pool = distinct(np.asarray(candidates))
    idx = np.clip(np.searchsorted(pool, values), 0, len(pool) - 1)
    return pool[idx] == values


def first_indices(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values and the index of each one's first occurrence."""
    if len(values) == 0:
        return values, np.zeros(0, dtype=np.int64)
    order = np.argsort(values, kind="stable")
    s = values[order]
    keep = np.empty(len(s), dtype=bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep], order[keep]


@dataclass
class Table:
    cols: dict[str, np.ndarray]
    vocab: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def build(cls, data: dict[str, Any], strings: Iterable[str] = ()) -> Table:
        """Columns from lists/arrays; those named in ``strings`` are dictionary-encoded."""
        cols: dict[str, np.ndarray] = {}
        vocab: dict[str, list[str]] = {}
        string_cols = set(strings)
        for name, values in data.items():
            if name in string_cols:
                # Codes in order of first appearance (a dict, not np.unique: see distinct()).
                index: dict[str, int] = {}
                codes = [index.setdefault(str(v), len(index)) for v in values]
                cols[name] = np.asarray(codes, dtype=np.int32)
                vocab[name] = list(index)
            else:
                cols[name] = np.asarray(values)
        return cls(cols, vocab)

    def __len__(self) -> int:
        return len(next(iter(self.cols.values()))) if self.cols else 0

    def __getitem__(self, name: str) -> np.ndarray:
        return self.cols[name]

    def __contains__(self, name: str) -> bool:
        return name in self.cols

    @property
    def columns(self) -> list[str]:
        return list(self.cols)

    def strings(self, name: str) -> np.ndarray:
        """A string column decoded to an object array."""
        voc = np.asarray(self.vocab[name], dtype=object)
        return voc[self.cols[name]] if len(voc) else np.array([], dtype=object)

    def code_of(self, name: str, value: str) -> int:
        try:
            return self.vocab[name].index(value)
        except ValueError:
            return -1

    def vocab_mask(self, name: str, predicate: Any) -> np.ndarray:
        """Rows whose string ``name`` satisfies ``predicate`` (called once per distinct value)."""
        hits = np.fromiter(
            (bool(predicate(v)) for v in self.vocab[name]), dtype=bool, count=len(self.vocab[name])
        )
        return hits[self.cols[name]] if len(hits) else np.zeros(len(self), dtype=bool)

    def filter(self, mask: np.ndarray) -> Table:
        return Table({k: v[mask] for k, v in self.cols.items()}, self.vocab)

    def sort(self, by: str) -> Table:
        order = np.argsort(self.cols[by], kind="stable")
        return Table({k: v[order] for k, v in self.cols.items()}, self.vocab)

    @staticmethod
    def concat(tables: Sequence[Table]) -> Table:
        """Row-wise concatenation; vocabularies are merged and codes remapped."""
        tables = [t for t in tables if t.cols]
        if not tables:
            return Table({})
        if len(tables) == 1:
            return tables[0]
        first = tables[0]
        vocab: dict[str, list[str]] = {}
        remaps: list[dict[str, np.ndarray]] = [{} for _ in tables]
        for name in first.vocab:
            merged: dict[str, int] = {}
            for i, t in enumerate(tables):
                remaps[i][name] = np.array(
                    [merged.setdefault(v, len(merged)) for v in t.vocab[name]], dtype=np.int32
                )
            vocab[name] = list(merged)
        cols = {}
        for name in first.cols:
            parts = []
            for i, t in enumerate(tables):
                col = t.cols[name]
                if name in vocab:
                    col = remaps[i][name][col] if len(col) else col
                parts.append(col)
            cols[name] = np.concatenate(parts)
        return Table(cols, vocab)

    def to_pandas(self) -> pd.DataFrame:
        import pandas as pd

        data: dict[str, Any] = {}
        for name, col in self.cols.items():
            if name in self.vocab:
                data[name] = (
                    pd.Categorical.from_codes(col, categories=pd.Index(self.vocab[name]))
                    if len(self.vocab[name])
                    else pd.Categorical([])
                )
            else:
                data[name] = col
        return pd.DataFrame(data)

    def to_arrow(self) -> pa.Table:
        # Built from raw buffers: pa.array() would import pandas (~0.3 s) on first use.
        import pyarrow as pa

        arrays = []
        bools = []
        for name, col in self.cols.items():
            if name in self.vocab:
                arrays.append(
                    pa.DictionaryArray.from_arrays(
                        _arrow_numeric(col), _arrow_strings(self.vocab[name])
                    )
                )
                continue
            if col.dtype == np.bool_:
                bools.append(name)
                col = col.astype(np.uint8)
            arrays.append(_arrow_numeric(col))
        schema_meta = {b"rankscope_bool": ",".join(bools).encode()}
        return pa.Table.from_arrays(arrays, names=list(self.cols), metadata=schema_meta)

    @classmethod
    def from_arrow(cls, table: pa.Table) -> Table:
        import pyarrow as pa

        meta = table.schema.metadata or {}
        bools = set(meta.get(b"rankscope_bool", b"").decode().split(","))
        cols: dict[str, np.ndarray] = {}
        vocab: dict[str, list[str]] = {}
        for name in table.column_names:
            chunked = table.column(name)
            if chunked.num_chunks == 0:
                # combine_chunks() of no chunks calls pa.array([]), which imports pandas.
                is_dict = pa.types.is_dictionary(chunked.type)
                value_type = chunked.type.index_type if is_dict else chunked.type
                empty = np.zeros(0, dtype=np.dtype(value_type.to_pandas_dtype()))
                cols[name] = empty.astype(np.int32) if is_dict else empty
                if is_dict:
                    vocab[name] = []
                elif name in bools:
                    cols[name] = empty.astype(bool)
                continue
            col = chunked.combine_chunks()
            if pa.types.is_dictionary(col.type):
                cols[name] = _numpy_of(col.indices).astype(np.int32)
                vocab[name] = col.dictionary.to_pylist()
            else:
                arr = _numpy_of(col)
                cols[name] = arr.astype(bool) if name in bools else arr
        return cls(cols, vocab)


def _numpy_of(arr: pa.Array) -> np.ndarray:
    """A numeric Arrow array without nulls as numpy, straight from its data buffer."""
    if arr.null_count:
        return np.asarray(arr.to_pylist(), dtype=np.float64)
    dtype = np.dtype(arr.type.to_pandas_dtype())
    buf = arr.buffers()[1]
    if buf is None:
        return np.zeros(0, dtype=dtype)
    return np.frombuffer(
        buf, dtype=dtype, count=len(arr), offset=arr.offset * dtype.itemsize
    ).copy()


def _arrow_numeric(col: np.ndarray) -> pa.Array:
    import pyarrow as pa

    col = np.ascontiguousarray(col)
    return pa.Array.from_buffers(
        pa.from_numpy_dtype(col.dtype), len(col), [None, pa.py_buffer(col)]
    )


def _arrow_strings(values: list[str]) -> pa.Array:
    import pyarrow as pa

    encoded = [v.encode("utf-8", "surrogatepass") for v in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int32)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    data = pa.py_buffer(b"".join(encoded))
    return pa.Array.from_buffers(pa.string(), len(encoded), [None, pa.py_buffer(offsets), data])
