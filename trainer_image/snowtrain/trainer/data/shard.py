"""One rank's share of a pass over the data: ingest divided over the ranks of a job.

Without it every rank of every pod reads and tokenizes every row (eight GPUs, eight times the
warehouse egress and the tokenizer's CPU, eight copies in memory). With it, rank 0 alone runs
the query and hands the result's batches to the others (the connector's ``ResultBatch``
objects: each a chunk on Snowflake's storage, pickled with what downloading it needs); every
rank downloads and tokenizes only its contiguous range of rows of the ordered result, so the
ranks' shares, in rank order, are exactly the one-rank pass. Ranges follow row counts, not
chunk boundaries, so a rerun that Snowflake chunks differently still gives every rank the
same rows (an exact resume). What the ranks must agree on (the profile, row counts, the
fingerprint over every row) goes through an :class:`Exchange`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import pyarrow as pa

T = TypeVar("T")
#: Chunks downloaded ahead of the reader (the connector's own default is 4 threads).
PREFETCH = 3


class Exchange(Protocol):
    """Collectives over the ranks (``distributed.GroupExchange`` in the trainer)."""

    def broadcast(self, obj: Any) -> Any: ...

    def all_gather(self, obj: Any) -> list[Any]: ...

    def gather_bytes(self, data: bytes) -> Sequence[Any] | None: ...


@dataclass(frozen=True)
class Shard:
    """This rank's place among ``ranks`` and how they talk."""

    rank: int
    ranks: int
    exchange: Exchange

    def bounds(self, total: int) -> tuple[int, int]:
        """This rank's rows ``[start, stop)`` of ``total``: contiguous, sizes within one."""
        return total * self.rank // self.ranks, total * (self.rank + 1) // self.ranks

    def agree(self, work: Callable[[], T]) -> T:
        """``work()`` on rank 0, its result on every rank; its error raised on every rank
        (the others would otherwise wait for a broadcast that never comes)."""
        if self.rank == 0:
            try:
                value: Any = work()
            except Exception as exc:
                self.exchange.broadcast(exc)
                raise
            return self.exchange.broadcast(value)  # type: ignore[no-any-return]
        value = self.exchange.broadcast(None)
        if isinstance(value, Exception):
            raise value
        return value  # type: ignore[no-any-return]

    def total(self, count: int) -> int:
        return sum(self.exchange.all_gather(count))

    def digest(self, part: bytes, of_parts: Callable[[Sequence[Any]], str]) -> str:
        """``of_parts`` of every rank's ``part`` in rank order, computed on rank 0 (which
        alone holds them all) and known to every rank."""
        parts = self.exchange.gather_bytes(part)
        return str(self.exchange.broadcast(of_parts(parts) if parts is not None else None))


def rows_in_range(
    batches: Iterable[Any], start: int, stop: int, batch_rows: int
) -> Iterator[pa.Table]:
    """Rows ``[start, stop)`` of a result given as connector ``ResultBatch``es (each knows
    its ``rowcount`` before it is downloaded), re-sliced to ``batch_rows``; only the chunks
    that overlap the range are downloaded, ``PREFETCH`` at once as the connector does.

    The first is read on the calling thread before any other starts: the connector's Arrow
    reader initialises itself on first use, and two threads doing that at once deadlock (the
    connector's own prefetch also reads its first chunk before it starts threads)."""
    wanted: list[tuple[Any, int, int]] = []
    offset = 0
    for batch in batches:
        rows = int(batch.rowcount)
        lo, hi = max(start - offset, 0), min(stop - offset, rows)
        offset += rows
        if lo < hi:
            wanted.append((batch, lo, hi))
    if not wanted:
        return
    first = wanted[0][0].to_arrow()
    with ThreadPoolExecutor(PREFETCH, thread_name_prefix="snowtrain-chunk") as pool:
        ahead = [pool.submit(batch.to_arrow) for batch, _, _ in wanted[1 : 1 + PREFETCH]]
        for i, (_, lo, hi) in enumerate(wanted):
            table = first if i == 0 else ahead.pop(0).result()
            if i + 1 + PREFETCH < len(wanted):
                ahead.append(pool.submit(wanted[i + 1 + PREFETCH][0].to_arrow))
            table = table.slice(lo, hi - lo)
            for at in range(0, table.num_rows, batch_rows):
                yield table.slice(at, batch_rows)
