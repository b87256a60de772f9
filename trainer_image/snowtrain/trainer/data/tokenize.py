"""Arrow batches -> disk-backed token datasets, one batch at a time.

Each batch is tokenized with the fast tokenizer's Rust backend (``Encoder``), flattened into
numpy arrays and appended to a ``StoreWriter``. Batches are converted on ``ingest_threads``
threads at once, in order (``ordered_map``; see ``snowtrain.trainer.cpus``), while a
background thread already fetches the next batch from the source (``prefetch``). Nothing
accumulates across batches, so peak memory is a few batches however many rows the source
streams. The three builders match the three tasks: classification (text -> label id),
causal-LM fine-tuning (prompt + completion + EOS, loss on the completion only) and
pretraining (documents packed into fixed-length blocks).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import stop_requests
from ..allocator import release_freed_memory
from ..cpus import ingest_threads
from ..errors import DataError, InvalidConfig
from .gc_freeze import frozen_long_lived_objects
from .ordered_map import ordered_map
from .prefetch import prefetch
from .store import PackedDataset, StoreWriter, TokenDataset


class BatchSource(Protocol):
    """What the builders read: ``SnowflakeSource`` or anything yielding role-named batches."""

    def iter_batches(self, split: Any = "train") -> Iterator[pa.RecordBatch]: ...


def _column_name(source: Any, role: str) -> str:
    """The user's column name for a role (for error messages), else the role."""
    cfg = getattr(source, "cfg", None)
    return getattr(cfg, "columns", {}).get(role, role) if cfg is not None else role


def _pad_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id
    if pad is None:
        raise InvalidConfig("the tokenizer has neither a pad nor an EOS token")
    return int(pad)


def _eos_id(tokenizer: Any) -> int:
    if tokenizer.eos_token_id is None:
        raise InvalidConfig("the tokenizer has no EOS token (needed to end completions/documents)")
    return int(tokenizer.eos_token_id)


#: Encoded once per Encoder with both paths; the numpy special tokens are used only if equal.
_PROBES = ["", "a", "Hello, world!", "ünïcödé text 123 ?!", "tokens " * 300]


def _private_copy(backend: Any, max_len: int | None, side: str) -> Any:
    """A copy of a Rust tokenizer to configure freely (settings are state on the original)."""
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(backend.to_str())
    copy.no_padding()
    if max_len is None:
        copy.no_truncation()
    else:
        copy.enable_truncation(max_len, direction=side)
    return copy


def _constant_affixes(backend: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """The special tokens the post-processor puts before and after a single text, if any.

    Found by encoding a probe with and without special tokens: [CLS] x [SEP] gives
    ([CLS], [SEP]). None when the post-processor adds nothing or is not of that shape.
    """
    probe = "hello world"
    plain = backend.encode(probe, add_special_tokens=False).ids
    full = backend.encode(probe, add_special_tokens=True).ids
    if full == plain or not plain:
        return None
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            prefix, suffix = full[:start], full[start + len(plain) :]
            return np.array(prefix, dtype=np.int32), np.array(suffix, dtype=np.int32)
    return None


def _wrap(
    ids: np.ndarray, lengths: np.ndarray, prefix: np.ndarray, suffix: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Put ``prefix`` before and ``suffix`` after every row of a flat (ids, lengths) batch."""
    out_lengths = lengths + np.int32(len(prefix) + len(suffix))
    ends = np.cumsum(out_lengths, dtype=np.int64)
    starts = ends - out_lengths
    out = np.empty(int(ends[-1]) if len(ends) else 0, dtype=np.int32)
    content = np.ones(len(out), dtype=bool)
    for j, token in enumerate(prefix):
        out[starts + j] = token
        content[starts + j] = False
    for j, token in enumerate(suffix):
        out[ends - len(suffix) + j] = token
        content[ends - len(suffix) + j] = False
    out[content] = ids
    return out, out_lengths


class Encoder:
    """Batch-encode texts to flat numpy ids with a fast tokenizer's Rust backend.

    Output equals ``tokenizer(texts, truncation=True, max_length=max_len,
    add_special_tokens=special)["input_ids"]``, at a fraction of the cost:

    - The backend's ``encode_batch_fast`` (no character offsets) on a private copy configured
      for this job's truncation skips the per-row Python objects that the Hugging Face call
      builds (a ``BatchEncoding`` with masks and token type ids), which cost as much as the
      tokenization itself for short texts.
    - Special tokens that a post-processor adds around every text ([CLS] x [SEP], <s> x </s>)
      are added here with numpy around the content tokens instead: the Rust post-processor
      copies and merges every encoding, a noticeable share of the tokenizing time
      (``bench/bench_ingest.py`` measures it). Content is truncated to ``max_len``
      minus those tokens, as the backend does.
      Used only when both ways give the same ids on probe texts; otherwise the backend's
      post-processor runs as usual.

    Safe to call from several threads at once (ingest does): encoding only reads the
    tokenizer. Tokenizers without a Rust backend fall back to the Hugging Face call.
    """

    def __init__(self, tokenizer: Any, *, special: bool, max_len: int | None = None) -> None:
        self.tokenizer, self.special, self.max_len = tokenizer, special, max_len
        self._backend: Any = None
        self._affixes: tuple[np.ndarray, np.ndarray] | None = None
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None or not hasattr(backend, "encode_batch_fast"):
            return
        side = getattr(tokenizer, "truncation_side", "right")
        self._backend = _private_copy(backend, max_len, side)
        if not special:
            return
        content = _private_copy(backend, None, side)  # untruncated: the probe must fit
        affixes = _constant_affixes(content)
        if affixes is None:
            return
        added = len(affixes[0]) + len(affixes[1])
        if max_len is not None:
            if max_len <= added:
                return
            content.enable_truncation(max_len - added, direction=side)
        content.post_processor = None
        reference, self._backend = self._backend, content
        self._affixes = affixes
        expected = [e.ids for e in reference.encode_batch_fast(_PROBES, add_special_tokens=True)]
        ids, lengths = self(_PROBES)
        if ids.tolist() != [i for e in expected for i in e] or lengths.tolist() != [
            len(e) for e in expected
        ]:
            self._backend, self._affixes = reference, None

    def _content(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text from the backend (without the affixes, when those are ours)."""
        special = self.special and self._affixes is None
        encodings = self._backend.encode_batch_fast(texts, add_special_tokens=special)
        return [e.ids for e in encodings]

    def lists(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text."""
        if self._backend is None:
            return self.tokenizer(
                texts,
                add_special_tokens=self.special,
                truncation=self.max_len is not None,
                max_length=self.max_len,
                return_attention_mask=False,
                return_token_type_ids=False,
            )["input_ids"]
        rows = self._content(texts)
        if self._affixes is not None:
            prefix, suffix = (a.tolist() for a in self._affixes)
            rows = [[*prefix, *row, *suffix] for row in rows]
        return rows

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(flat int32 ids, int32 lengths) for a batch of texts."""
        rows = self._content(texts) if self._backend is not None else self.lists(texts)
        lengths = np.fromiter(map(len, rows), dtype=np.int32, count=len(rows))
        ids = np.fromiter(
            itertools.chain.from_iterable(rows), dtype=np.int32, count=int(lengths.sum())
        )
        if self._affixes is not None:
            ids, lengths = _wrap(ids, lengths, *self._affixes)
        return ids, lengths


def _meta(source: Any, split: str, tokenizer: Any, task: str, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "task": task,
        "split": split,
        "pad_token_id": _pad_id(tokenizer),
        "eos_token_id": tokenizer.eos_token_id,
        "vocab_size": len(tokenizer),
        **extra,
    }
    if split == "train":
        # A SnowflakeSource knows its fingerprint once the pass is complete.
        with contextlib.suppress(AttributeError, RuntimeError):
            meta["data"] = source.fingerprint.to_wire()
    return meta


Converted = tuple[tuple[np.ndarray, ...], dict[str, np.ndarray]]


def _build(
    writer: StoreWriter,
    batches: Iterable[pa.RecordBatch],
    convert: Callable[[pa.RecordBatch], Converted],
    meta: Callable[[], dict[str, Any]],
    threads: int | None,
) -> Path:
    """Convert and append every batch in order, then publish; a failure leaves no partial
    store behind.

    The source is read one batch ahead on a thread (``prefetch``) and up to ``threads``
    batches are converted at once (``ordered_map``; default ``ingest_threads()``), so
    fetching, tokenizing and appending overlap. ``convert`` is stateless per batch, which is
    what makes that safe. A failure stops the threads before it propagates. A stop request
    (SIGTERM) waits for the next batch (``stop_requests``).
    """
    if threads is None:
        threads = ingest_threads()
    try:
        with (
            stop_requests.deferred(),  # the waits below are on threads: stop between batches
            frozen_long_lived_objects(),
            contextlib.closing(prefetch(batches, ahead=1)) as stream,
            contextlib.closing(ordered_map(convert, stream, threads)) as converted,
        ):
            for args, extras in converted:
                stop_requests.check()
                writer.append(*args, **extras)
    except BaseException:
        writer.abort()
        raise
    finally:
        release_freed_memory()
    return writer.finish(meta())


def build_classification(
    source: BatchSource,
    split: str,
    tokenizer: Any,
    label2id: Mapping[str, int],
    max_len: int,
    workdir: str | Path,
    *,
    threads: int | None = None,
) -> TokenDataset:
    """Texts truncated to ``max_len`` tokens (with special tokens) and label ids."""
    names = sorted(label2id, key=label2id.__getitem__)
    value_set = pa.array(names, pa.string())
    ids_by_index = np.array([label2id[n] for n in names], dtype=np.int64)
    label_col = _column_name(source, "label")
    encode = Encoder(tokenizer, special=True, max_len=max_len)

    def convert(batch: pa.RecordBatch) -> Converted:
        labels = batch.column("label")
        if not pa.types.is_string(labels.type):
            labels = pc.cast(labels, pa.string())
        index = pc.index_in(labels, value_set=value_set)
        if index.null_count:
            unknown = pc.filter(labels, pc.is_null(index)).unique().to_pylist()[:10]
            raise DataError(
                f"column {label_col}: {index.null_count} {split} row(s) in this batch have "
                f"labels not in the label map: {unknown}",
                column=label_col,
                bad_rows=index.null_count,
            )
        ids, lengths = encode(batch.column("text").to_pylist())
        return (ids, lengths), {"label": ids_by_index[index.to_numpy(zero_copy_only=False)]}

    out = Path(workdir) / f"classification-{split}"
    writer = StoreWriter(out, extras={"label": np.int64})
    # meta is computed after the pass, when the source's fingerprint exists.
    meta = partial(_meta, source, split, tokenizer, "classification", max_len=max_len, labels=names)
    return TokenDataset(_build(writer, source.iter_batches(split), convert, meta, threads))


def _join_prompt_completion(
    prompts: list[list[int]], completions: list[list[int]], eos: int, max_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """prompt + completion + EOS per row, cut to ``max_len`` from the prompt's start.

    The completion is what the loss trains, so it is kept whole when it fits; the prompt loses
    its oldest tokens first (those farthest from the completion).
    """
    ids: list[int] = []
    lengths = np.empty(len(prompts), dtype=np.int32)
    prompt_lengths = np.empty(len(prompts), dtype=np.int32)
    for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        c = [*c, eos]
        if len(c) >= max_len:
            p, c = [], c[:max_len]
        elif len(p) + len(c) > max_len:
            p = p[len(p) + len(c) - max_len :]
        ids += p
        ids += c
        lengths[i] = len(p) + len(c)
        prompt_lengths[i] = len(p)
    return np.array(ids, dtype=np.int32), lengths, prompt_lengths


def build_causal_lm(
    source: BatchSource,
    split: str,
    tokenizer: Any,
    max_len: int,
    workdir: str | Path,
    *,
    threads: int | None = None,
) -> TokenDataset:
    """Prompt/completion rows; labels are -100 on prompt tokens (and padding, in ``collate``)."""
    eos = _eos_id(tokenizer)
    prompt_encoder = Encoder(tokenizer, special=True)
    completion_encoder = Encoder(tokenizer, special=False)

    def convert(batch: pa.RecordBatch) -> Converted:
        ids, lengths, plens = _join_prompt_completion(
            prompt_encoder.lists(batch.column("prompt").to_pylist()),
            completion_encoder.lists(batch.column("completion").to_pylist()),
            eos,
            max_len,
        )
        return (ids, lengths), {"prompt_length": plens}

    out = Path(workdir) / f"causal-lm-{split}"
    writer = StoreWriter(out, extras={"prompt_length": np.int32})
    meta = partial(_meta, source, split, tokenizer, "causal-lm", max_len=max_len)
    return TokenDataset(_build(writer, source.iter_batches(split), convert, meta, threads))


def build_packed(
    source: BatchSource,
    split: str,
    tokenizer: Any,
    seq_len: int,
    workdir: str | Path,
    *,
    threads: int | None = None,
) -> PackedDataset:
    """Documents (no special tokens) each followed by EOS, as one stream cut into blocks."""
    eos = _eos_id(tokenizer)
    encode = Encoder(tokenizer, special=False)

    def convert(batch: pa.RecordBatch) -> Converted:
        ids, lengths = encode(batch.column("text").to_pylist())
        ids = np.insert(ids, np.cumsum(lengths), eos)  # EOS after every document
        return (ids, lengths + 1), {}

    out = Path(workdir) / f"packed-{split}"
    writer = StoreWriter(out)
    meta = partial(_meta, source, split, tokenizer, "pretrain", seq_len=seq_len)
    return PackedDataset(_build(writer, source.iter_batches(split), convert, meta, threads))
