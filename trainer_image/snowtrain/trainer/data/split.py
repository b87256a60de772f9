"""The hashed validation split, the fingerprint of a pass, and the spill that joins them.

A row's split follows from a stable hash of its split key (the prompt or text), so the same
row lands in the same split in every run and identical texts never straddle the split. The
same per-row hashes feed the fingerprint, so a pass costs one hashing of the data. One query
serves both splits: the training pass spills the held-out rows to a local parquet file that
the validation pass then reads instead of querying again.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

_SPLIT_BUCKETS = 1_000_000
_SPILL_FILE = "validation.parquet"


def row_hashes(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Stable 64-bit hash per value (pandas' SipHash with its fixed key: same across runs)."""
    return pd.util.hash_array(column.to_numpy(zero_copy_only=False), categorize=False)


def held_out(key_hashes: np.ndarray, fraction: float) -> np.ndarray:
    """True for rows held out for validation: a fixed fraction of the hash space of the key."""
    return (key_hashes % _SPLIT_BUCKETS) < round(fraction * _SPLIT_BUCKETS)


@dataclass(frozen=True)
class DataFingerprint:
    """Lineage of one full pass: rows per split, the query id, and a content hash.

    The hash is a SHA-256 over per-row 64-bit hashes of the role columns in stream order, so it
    does not depend on how the result was chunked.
    """

    rows: int
    validation_rows: int
    query_id: str | None
    content_sha256: str

    def to_wire(self) -> dict[str, object]:
        """camelCase dict for the ``data`` progress event, lineage and termination message."""
        return {
            "rows": self.rows,
            "validationRows": self.validation_rows,
            "queryId": self.query_id,
            "fingerprint": f"sha256:{self.content_sha256}",
        }


class ContentHash:
    """The running SHA-256 of a pass (see ``DataFingerprint``).

    A rank reading one share of a sharded pass keeps its rows' hashes instead (``keep``):
    the digest over every rank's :meth:`part`, in rank order, is the one-rank digest."""

    def __init__(self, *, keep: bool = False) -> None:
        self._sha = hashlib.sha256()
        self._kept: list[bytes] | None = [] if keep else None

    def add(self, table: pa.Table, roles: Sequence[str]) -> np.ndarray:
        """Hash the rows of ``table`` into the digest; return the per-row hashes (rows x roles)."""
        hashes = np.stack([row_hashes(table.column(r)) for r in roles], axis=1)
        raw = np.ascontiguousarray(hashes).tobytes()
        if self._kept is None:
            self._sha.update(raw)
        else:
            self._kept.append(raw)
        return hashes

    def hexdigest(self) -> str:
        return self._sha.hexdigest()

    def part(self) -> bytes:
        """This share's row hashes (16 bytes a row for two roles), for :meth:`of_parts`;
        taken once (the pieces are let go)."""
        part, self._kept = b"".join(self._kept or []), []
        return part

    @staticmethod
    def of_parts(parts: Sequence[bytes | memoryview]) -> str:
        """The digest of a pass read in shares, from every share's :meth:`part` in order."""
        sha = hashlib.sha256()
        for part in parts:
            sha.update(part)
        return sha.hexdigest()


class ValidationSpill:
    """Held-out rows of the training pass, on local disk until the validation pass reads them.

    Usable only once a training pass has finished (``sealed``): a pass cut short leaves no
    file, so the validation pass queries again rather than read part of the split.
    """

    def __init__(self) -> None:
        self._dir: Path | None = None
        self._file: Path | None = None
        self._writer: pq.ParquetWriter | None = None

    @property
    def sealed(self) -> bool:
        return self._file is not None

    def write(self, part: pa.Table) -> None:
        """Append held-out rows; the first write of a pass creates the file."""
        if self._writer is None:
            self._dir = Path(tempfile.mkdtemp(prefix="snowtrain-validation-"))
            self._file = None
            # Removed by discard(), or when the spill is garbage-collected without one.
            weakref.finalize(self, shutil.rmtree, self._dir, True)
            self._writer = pq.ParquetWriter(self._dir / _SPILL_FILE, part.schema)
        self._writer.write_table(part)

    def end_pass(self, *, complete: bool) -> None:
        """Close the file; a ``complete`` pass makes it the validation split."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if complete and self._dir is not None:
            self._file = self._dir / _SPILL_FILE

    def batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """The spilled rows, ``batch_rows`` at a time."""
        assert self._file is not None, "read a spill only once its pass is complete"
        # pre_buffer would cache every row group read, growing with the file.
        pf = pq.ParquetFile(self._file, pre_buffer=False)
        yield from pf.iter_batches(batch_size=batch_rows)

    def discard(self) -> None:
        """Delete the spill (a new training pass writes its own)."""
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = self._file = None
