"""Result types of a data source: what the data looks like, and which data was read."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataProfile:
    """What ``SnowflakeSource.profile`` learned before training.

    ``rows`` counts the training source (both splits when validation is a hashed fraction);
    ``validation_rows`` is known up front only for a separate validation table/query (else
    None: the hashed split is counted during the pass, see ``DataFingerprint``).
    """

    rows: int
    validation_rows: int | None
    labels: list[str] | None
    column_types: dict[str, str]
    """Role -> Snowflake type name of its column (TEXT, FIXED, ...)."""


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
