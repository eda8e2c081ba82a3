"""Prediction rows on disk: CSV, JSON Lines or Parquet, written a batch at a time so an
interrupted run leaves a valid file of complete rows, and reopened with `resume` to skip what is
already there. Numbers are written the same way whichever process computed them (float32 as
9 significant digits, the shortest that round-trips), so two runs that agree agree byte for byte."""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np

from ..compiler.errors import NetcError, plain

FORMATS = (".csv", ".jsonl", ".parquet")


def _text(v) -> str:
    if isinstance(v, (float, np.floating)):
        return "" if np.isnan(v) else f"{float(v):.9g}"
    return str(v)


def _json(v):
    if isinstance(v, np.ndarray):
        return [_json(e) for e in v]
    if isinstance(v, (float, np.floating)):
        return None if np.isnan(v) else float(f"{float(v):.9g}")
    if isinstance(v, np.integer):
        return int(v)
    return v


class Rows:
    """open_rows' writer: `done` holds the paths already in the file (with resume), `write`
    appends a batch of columns, `close` finishes the file."""

    def __init__(self, path: Path, resume: bool):
        self.path, self.resume = path, resume
        self.done: set[str] = set()
        self.columns: list[str] | None = None
        self.written = 0

    def check_columns(self, names: list[str]) -> None:
        if self.columns is not None and self.columns != names:
            raise NetcError(f"{plain(str(self.path))} has the columns {', '.join(self.columns)}; this run writes "
                            f"{', '.join(names)} (another --top or --blobs?): --resume needs the same ones")
        self.columns = names


class TextRows(Rows):
    """CSV or JSON Lines, flushed after every batch."""

    def __init__(self, path: Path, resume: bool):
        super().__init__(path, resume)
        self.csv = path.suffix.lower() == ".csv"
        if resume and path.exists():
            self._read_done()
            self.f = open(path, "a", encoding="utf-8", newline="")
        else:
            self.f = open(path, "w", encoding="utf-8", newline="")

    def _read_done(self) -> None:
        raw = self.path.read_bytes()
        end = raw.rfind(b"\n") + 1
        if end < len(raw):                       # a row cut by a hard kill: dropped, done again
            with open(self.path, "r+b") as f:
                f.truncate(end)
            raw = raw[:end]
        text = raw.decode("utf-8")
        if self.csv:
            rows = list(csv.reader(io.StringIO(text)))
            if rows:
                self.columns = rows[0]
                if "path" not in self.columns:
                    raise NetcError(f"{plain(str(self.path))} has no path column: not netc's predictions")
                at = self.columns.index("path")
                self.done = {r[at] for r in rows[1:] if len(r) > at}
        else:
            for line in text.splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise NetcError(f"{plain(str(self.path))}: a line is not JSON ({e.msg}); not netc's predictions") from None
                self.columns = self.columns or list(row)
                self.done.add(row.get("path"))

    def write(self, cols: dict) -> None:
        names = list(cols)
        fresh = self.columns is None
        self.check_columns(names)
        n = len(cols["path"])
        out = io.StringIO()
        if self.csv:
            arrays = [k for k in names if getattr(cols[k], "ndim", 1) > 1]
            if arrays:
                raise NetcError(f"--blobs {arrays[0]} is an array per image: write Parquet or JSON Lines, not CSV")
            w = csv.writer(out, lineterminator="\n")
            if fresh:
                w.writerow(names)
            for i in range(n):
                w.writerow([_text(cols[k][i]) for k in names])
        else:
            for i in range(n):
                out.write(json.dumps({k: _json(cols[k][i]) for k in names}, ensure_ascii=False) + "\n")
        self.f.write(out.getvalue())             # whole rows in one write, then flushed
        self.f.flush()
        self.written += n

    def close(self) -> None:
        self.f.close()


class ParquetRows(Rows):
    """Parquet, a row group per batch, into PATH.part, renamed onto PATH when closed (so the
    file is always whole: the earlier rows are copied in first on resume)."""

    def __init__(self, path: Path, resume: bool):
        super().__init__(path, resume)
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise NetcError("writing Parquet needs pyarrow: pip install pyarrow (or write .csv / .jsonl)") from None
        self.pq, self.writer, self.old = pq, None, None
        self.part = path.with_name(path.name + ".part")
        if resume and path.exists():
            try:
                self.old = pq.read_table(path)
            except Exception as e:       # noqa: BLE001 -- pyarrow's errors: not a Parquet file
                raise NetcError(f"cannot read {plain(str(path))} to resume: {e}") from None
            self.columns = self.old.column_names
            self.done = set(self.old.column("path").to_pylist()) if "path" in self.columns else set()

    def write(self, cols: dict) -> None:
        import pyarrow as pa
        self.check_columns(list(cols))
        arrays = []
        for k, v in cols.items():
            v = np.asarray(v)
            if v.ndim > 1:
                arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1), pa.float32()), v.shape[1]))
            elif v.dtype == object:
                arrays.append(pa.array([str(e) for e in v], pa.string()))
            else:
                arrays.append(pa.array(v))
        table = pa.Table.from_arrays(arrays, names=list(cols))
        if self.writer is None:
            schema = self.old.schema if self.old is not None else table.schema
            self.writer = self.pq.ParquetWriter(self.part, schema)
            if self.old is not None:
                self.writer.write_table(self.old)
        self.writer.write_table(table.cast(self.writer.schema))
        self.written += len(cols["path"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            os.replace(self.part, self.path)


def open_rows(path: str, resume: bool = False) -> Rows:
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in FORMATS:
        raise NetcError(f"cannot tell how to write predictions to {plain(p.name)}: name it "
                        f"{', '.join('.' + f.lstrip('.') for f in FORMATS)}")
    return ParquetRows(p, resume) if suffix == ".parquet" else TextRows(p, resume)
