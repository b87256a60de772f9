"""Disk-backed token datasets: append batch by batch while building, memory-map to train.

Tokens never sit in Python lists for the whole table: each tokenized batch is appended to flat
binary files (``ids.bin`` int32 token ids, ``lengths.bin`` int32 per-row lengths, plus per-row
extras such as labels), and training reads them through ``numpy.memmap``, so resident memory is
one batch while building and the OS page cache while training. A store is written into a
temporary directory and renamed into place with its ``meta.json``, so a half-built store (a
killed pod) is never mistaken for a complete one.

Items are dicts of LongTensors; ``collate`` pads a list of them to the longest item. Order in
an epoch is ``epoch_order(seed, epoch)``, a seeded permutation, so a resumed run continues from
the exact position it stopped at.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch.utils.data import Dataset

META = "meta.json"
IGNORE_INDEX = -100
"""Label value the loss ignores (PyTorch's cross-entropy default)."""


def _map(path: Path, dtype: Any) -> np.ndarray:
    """Memory-map a flat array file (an empty file maps to an empty array)."""
    if path.stat().st_size == 0:
        return np.empty(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")


class StoreWriter:
    """Append tokenized batches to flat files in a temp dir; ``finish`` renames it into place."""

    def __init__(self, directory: str | Path, extras: dict[str, Any] | None = None) -> None:
        self.directory = Path(directory)
        self._tmp = self.directory.with_name(f"{self.directory.name}.tmp-{os.getpid()}")
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._tmp.mkdir(parents=True)
        self._extras = {name: np.dtype(dt) for name, dt in (extras or {}).items()}
        self._files: dict[str, BinaryIO] = {
            name: open(self._tmp / f"{name}.bin", "ab")  # noqa: SIM115 -- closed in finish()
            for name in ("ids", "lengths", *self._extras)
        }
        self.rows = 0
        self.tokens = 0

    def append(self, ids: np.ndarray, lengths: np.ndarray, **extras: np.ndarray) -> None:
        """Add ``len(lengths)`` rows whose tokens are ``ids`` concatenated."""
        np.ascontiguousarray(ids, dtype=np.int32).tofile(self._files["ids"])
        np.ascontiguousarray(lengths, dtype=np.int32).tofile(self._files["lengths"])
        for name, dtype in self._extras.items():
            np.ascontiguousarray(extras[name], dtype=dtype).tofile(self._files[name])
        self.rows += len(lengths)
        self.tokens += len(ids)

    def finish(self, meta: dict[str, Any]) -> Path:
        """Close files, write ``meta.json`` and atomically replace ``directory``."""
        for f in self._files.values():
            f.close()
        meta = {
            **meta,
            "rows": self.rows,
            "tokens": self.tokens,
            "extras": {k: v.str for k, v in self._extras.items()},
        }
        (self._tmp / META).write_text(json.dumps(meta, indent=2))
        if self.directory.exists():
            shutil.rmtree(self.directory)
        os.replace(self._tmp, self.directory)
        return self.directory

    def abort(self) -> None:
        """Drop the partial store."""
        for f in self._files.values():
            f.close()
        shutil.rmtree(self._tmp, ignore_errors=True)


class _Store(Dataset):
    """Shared machinery: meta, lazily opened memmaps (re-opened in DataLoader workers)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.meta: dict[str, Any] = json.loads((self.directory / META).read_text())
        self.pad_token_id: int = int(self.meta["pad_token_id"])
        self._arrays: dict[str, np.ndarray] | None = None

    def _open(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            self._arrays = self._open()
        return self._arrays

    def __getstate__(self) -> dict[str, Any]:
        # Pickling a memmap copies the whole array; workers re-open the files instead.
        return {**self.__dict__, "_arrays": None}

    def epoch_order(self, seed: int, epoch: int) -> np.ndarray:
        """The item order of one epoch: a permutation seeded by (seed, epoch)."""
        return np.random.default_rng([seed, epoch]).permutation(len(self))

    @property
    def num_tokens(self) -> int:
        """Tokens stored (padding excluded)."""
        return int(self.meta["tokens"])

    def collate(self, batch: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Pad to the longest item: input_ids with pad_token_id, attention_mask 0, labels -100.

        A batch with nothing to pad (every packed pretraining block, or equal-length rows) gets
        no ``attention_mask``: Hugging Face models read a missing mask as all ones, and without
        one SDPA runs causal attention with ``is_causal=True`` (the FlashAttention kernel on
        GPUs). An all-ones mask costs a device-to-host sync per forward in eager mode, and under
        ``torch.compile`` it is materialised as a (seq x seq) mask that rules Flash out.
        """
        longest = max(len(item["input_ids"]) for item in batch)
        if all(len(item["input_ids"]) == longest for item in batch):  # items are never padded
            return {
                "input_ids": torch.stack([item["input_ids"] for item in batch]),
                "labels": torch.stack([item["labels"] for item in batch]),
            }
        n = len(batch)
        input_ids = torch.full((n, longest), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((n, longest), dtype=torch.long)
        token_labels = batch[0]["labels"].dim() == 1
        labels = (
            torch.full((n, longest), IGNORE_INDEX, dtype=torch.long)
            if token_labels
            else torch.stack([item["labels"] for item in batch])
        )
        for i, item in enumerate(batch):
            k = len(item["input_ids"])
            input_ids[i, :k] = item["input_ids"]
            attention[i, :k] = item["attention_mask"]
            if token_labels:
                labels[i, :k] = item["labels"]
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


class TokenDataset(_Store):
    """One variable-length row per item (classification or prompt/completion).

    Classification items: ``input_ids``, ``attention_mask`` (1-D) and ``labels`` (0-d class
    id; ``collate`` stacks them to shape [batch]). Causal-LM items: ``labels`` is 1-D, the
    input ids with the prompt tokens set to -100 so the loss covers the completion (+EOS) only.
    """

    def _open(self) -> dict[str, np.ndarray]:
        lengths = _map(self.directory / "lengths.bin", np.int32)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        arrays = {"ids": _map(self.directory / "ids.bin", np.int32), "offsets": offsets}
        for name, dtype in self.meta["extras"].items():
            arrays[name] = _map(self.directory / f"{name}.bin", np.dtype(dtype))
        return arrays

    @property
    def task(self) -> str:
        return str(self.meta["task"])

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per item (e.g. for length-grouped batching or token counting)."""
        return np.diff(self.arrays["offsets"])

    def __len__(self) -> int:
        return int(self.meta["rows"])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        a = self.arrays
        start, end = int(a["offsets"][index]), int(a["offsets"][index + 1])
        ids = torch.from_numpy(a["ids"][start:end].astype(np.int64))
        item = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if "label" in a:
            item["labels"] = torch.tensor(int(a["label"][index]), dtype=torch.long)
        else:
            labels = ids.clone()
            labels[: int(a["prompt_length"][index])] = IGNORE_INDEX
            item["labels"] = labels
        return item


class PackedDataset(_Store):
    """Pretraining: documents joined with EOS and cut into blocks of ``seq_len`` tokens.

    ``labels`` equal ``input_ids`` (Hugging Face causal LMs shift them inside the model). The
    tail shorter than ``seq_len`` is kept as a last, padded block when it has >= 2 tokens, so a
    small validation split still yields at least one block.
    """

    def _open(self) -> dict[str, np.ndarray]:
        return {"ids": _map(self.directory / "ids.bin", np.int32)}

    @property
    def seq_len(self) -> int:
        return int(self.meta["seq_len"])

    def __len__(self) -> int:
        full, tail = divmod(self.num_tokens, self.seq_len)
        return full + (1 if tail >= 2 else 0)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        start = index * self.seq_len
        block = self.arrays["ids"][start : start + self.seq_len]
        ids = torch.from_numpy(block.astype(np.int64))
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
