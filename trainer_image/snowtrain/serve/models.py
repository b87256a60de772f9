"""Model classes with load/predict (KServe style): one per task the server knows.

`predict` takes a whole batch and runs in the batcher's worker thread; nothing here knows
about HTTP or asyncio. Each model keeps a second tokenizer for the request thread (token
counting for validation), because a fast tokenizer instance must not be used from two threads
at once ("Already borrowed").
"""

from __future__ import annotations

import copy
import logging
import threading
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    StoppingCriteriaList,
)

from snowtrain.serve.generation import Completion, CompletionItem, RowTracker
from snowtrain.serve.grouping import (
    DEFAULT_COST,
    ForwardCost,
    calibration_shapes,
    fit_forward_cost,
    measure,
    optimal_groups,
)
from snowtrain.serve.model_dir import ModelInfo, Task
from snowtrain.serve.runtime import Runtime, quantize_int8

log = logging.getLogger(__name__)


class InvalidInput(ValueError):
    """One item's text could not be tokenized: the client's fault (HTTP 400), not the server's.

    Raised only for a single item: a batch that fails to tokenize raises the tokenizer's own
    error, and the batcher then reruns its items one by one to find the culprit.
    """


def tokenize(tokenizer: Any, texts: list[str], **kwargs: Any) -> Any:
    """`tokenizer(texts, **kwargs)`, with a single text it cannot encode as InvalidInput.

    The request schemas already refuse text that is not valid Unicode; this is the second
    line of defence for anything they miss (the Rust tokenizer raises TypeError on a str it
    cannot turn into UTF-8).
    """
    try:
        return tokenizer(texts, **kwargs)
    except (TypeError, UnicodeError) as exc:
        if len(texts) != 1:
            raise
        raise InvalidInput(
            f"the text could not be tokenized ({type(exc).__name__}); is it valid UTF-8?"
        ) from exc


def _load_weights(cls: Any, info: ModelInfo, runtime: Runtime) -> PreTrainedModel:
    """Load with SDPA attention where the architecture has it, in the runtime's dtype, apply
    an unmerged LoRA adapter (`info.adapter`), then quantize when the runtime says so
    (`--quantize int8`, CPU only)."""
    kwargs: dict[str, Any] = {"dtype": runtime.dtype}
    try:
        model = cls.from_pretrained(info.path, attn_implementation="sdpa", **kwargs)
    except (ValueError, ImportError) as exc:  # architecture without an SDPA implementation
        log.warning("SDPA attention unavailable (%s); using the default", exc)
        model = cls.from_pretrained(info.path, **kwargs)
    model = model.to(runtime.device)
    if info.adapter is not None:
        model = apply_adapter(model, info.adapter)
    model = model.eval()
    if runtime.quantize == "int8":
        model = quantize_int8(model)
    return model


def apply_adapter(model: PreTrainedModel, adapter: Path) -> PreTrainedModel:
    """The base `model` with the LoRA adapter in `adapter` (a peft directory) applied.

    peft loads the adapter (and a classifier's trained head, saved as `modules_to_save`) and
    the adapter is then merged into the weights once, so the server runs a plain model: as
    fast as a merged export, and int8 quantization and generation see ordinary layers. An
    adapter that does not fit the model is an error, never a silent fall back to the base.
    """
    from peft import PeftModel

    with warnings.catch_warnings():
        # peft only warns when adapter weights are missing; serving half an adapter is wrong.
        warnings.filterwarnings("error", message=r"(?i).*missing adapter keys")
        try:
            peft_model = PeftModel.from_pretrained(model, adapter, is_trainable=False)
        except UserWarning as exc:
            raise ValueError(
                f"the LoRA adapter in {adapter} does not fit the model: {exc}"
            ) from exc
    log.info("applied the LoRA adapter in %s (merged into the weights at load)", adapter)
    return peft_model.merge_and_unload()


@dataclass(frozen=True)
class Classification:
    label: str
    scores: dict[str, float]  # label -> probability, in label order


class ClassifierModel:
    """Sequence classifier: texts in, the most likely label and every label's probability out.

    A batch is tokenized once, split into forward passes by `optimal_groups` under a cost
    model measured at load (`grouping`), and each pass's tensors are padded with numpy
    straight from the token lists (`pad_rows`), the same tensors `tokenizer.pad` builds.
    """

    task = Task.CLASSIFICATION

    def __init__(self, info: ModelInfo, runtime: Runtime) -> None:
        self.info = info
        self.runtime = runtime
        self.labels: list[str] = list(info.labels or [])
        self.model: PreTrainedModel | None = None
        self.forward_cost: ForwardCost = DEFAULT_COST

    def load(self) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(self.info.path)
        if self.tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no padding token, so batches cannot be padded")
        self.pad_values = padding_values(self.tokenizer)
        self.model = _load_weights(AutoModelForSequenceClassification, self.info, self.runtime)
        n = self.model.config.num_labels
        if len(self.labels) != n:
            raise ValueError(f"{len(self.labels)} labels for a model with {n} outputs")
        self.max_length = int(
            min(
                self.tokenizer.model_max_length,
                getattr(self.model.config, "max_position_embeddings", 512),
            )
        )
        self.predict(["warm up"])  # first-call allocations happen now, not in a request
        self.forward_cost = self.calibrate()

    def calibrate(self) -> ForwardCost:
        """Fit the forward cost model to a few timed passes of this model on this device.

        The passes go through the same code as a request (padding, forward, softmax, copy
        out), so the per-forward constant covers all of a group's fixed cost.
        """
        ids = self.tokenizer("warm up " * 512, truncation=True, max_length=self.max_length)
        enc = {k: list(v) for k, v in ids.items()}

        def run(n: int, length: int) -> None:
            row = {k: v[:length] for k, v in enc.items()}
            self._forward({k: [v] * n for k, v in row.items()}, list(range(n)))

        shapes = [
            (n, min(length, len(enc["input_ids"])))
            for n, length in calibration_shapes(self.max_length)
        ]
        self._forward({k: [v[:8]] for k, v in enc.items()}, [0])  # warm-up, untimed
        samples = measure(run, shapes)
        cost = fit_forward_cost(samples)
        if cost is None:
            log.warning(
                "forward cost calibration unusable (%s); using the default cost model: %s",
                ", ".join(f"{n}x{length}: {s * 1e3:.1f} ms" for n, length, s in samples),
                DEFAULT_COST.describe(),
            )
            return DEFAULT_COST
        log.info("length grouping cost model, measured: %s", cost.describe())
        return cost

    @torch.inference_mode()
    def predict(self, texts: Sequence[str]) -> list[Classification]:
        assert self.model is not None, "load() first"
        enc = tokenize(self.tokenizer, list(texts), truncation=True, max_length=self.max_length)
        lengths = [len(ids) for ids in enc["input_ids"]]
        out: list[Classification | None] = [None] * len(texts)
        for group in optimal_groups(lengths, self.forward_cost):
            for i, row in zip(group, self._forward(enc, group), strict=True):
                best = max(range(len(row)), key=row.__getitem__)
                out[i] = Classification(self.labels[best], dict(zip(self.labels, row, strict=True)))
        return out  # type: ignore[return-value]

    @torch.inference_mode()
    def _forward(self, enc: Mapping[str, Sequence[Sequence[int]]], rows: Sequence[int]) -> list:
        """Probabilities of `rows` of the tokenized batch, run as one padded forward pass."""
        assert self.model is not None, "load() first"
        batch = pad_rows(enc, rows, self.pad_values, self.tokenizer.padding_side)
        batch = {k: v.to(self.runtime.device) for k, v in batch.items()}
        return self.model(**batch).logits.float().softmax(dim=-1).cpu().tolist()


def padding_values(tokenizer: Any) -> dict[str, int]:
    """What `tokenizer.pad` fills each model input with beyond a text's end."""
    return {
        "input_ids": int(tokenizer.pad_token_id),
        "attention_mask": 0,
        "token_type_ids": int(tokenizer.pad_token_type_id),
        "special_tokens_mask": 1,
    }


def pad_rows(
    enc: Mapping[str, Sequence[Sequence[int]]],
    rows: Sequence[int],
    pad_values: Mapping[str, int],
    side: str = "right",
) -> dict[str, torch.Tensor]:
    """`rows` of a tokenized (unpadded) batch as int64 tensors padded to their longest.

    Equal to `tokenizer.pad({k: [enc[k][i] for i in rows]}, return_tensors="pt")`, without
    its per-item Python dict handling; `side` is the tokenizer's `padding_side`.
    """
    ids = enc["input_ids"]
    length = max(len(ids[i]) for i in rows)
    out: dict[str, torch.Tensor] = {}
    for key, seqs in enc.items():
        if key not in pad_values:
            raise KeyError(f"no padding value known for tokenizer output {key!r}")
        arr = np.full((len(rows), length), pad_values[key], dtype=np.int64)
        for r, i in enumerate(rows):
            seq = seqs[i]
            if side == "left":
                arr[r, length - len(seq) :] = seq
            else:
                arr[r, : len(seq)] = seq
        out[key] = torch.from_numpy(arr)
    return out


class CompletionModel:
    """Causal LM: prompts in, completions out; one batch may mix sampling settings."""

    task = Task.COMPLETION

    def __init__(self, info: ModelInfo, runtime: Runtime) -> None:
        self.info = info
        self.runtime = runtime
        self.model: PreTrainedModel | None = None
        self.last_generated_tokens = 0
        """Tokens the latest predict() generated (read by the batch metrics observer)."""

    def load(self) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(
            self.info.path, padding_side="left", truncation_side="left"
        )
        self._count_tokenizer = AutoTokenizer.from_pretrained(self.info.path)
        self._count_lock = threading.Lock()  # requests count from a thread pool
        self._decode_tokenizer = AutoTokenizer.from_pretrained(self.info.path)
        self.model = _load_weights(AutoModelForCausalLM, self.info, self.runtime)
        cfg = self.model.config
        self.context_length = int(
            getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", 2048)
        )
        gen = self.model.generation_config
        eos = gen.eos_token_id if gen.eos_token_id is not None else cfg.eos_token_id
        ids = eos if isinstance(eos, list) else [] if eos is None else [eos]
        self.eos_token_ids: set[int] = {int(i) for i in ids}  # id 0 is a valid EOS
        if self.tokenizer.pad_token_id is None:  # GPT-2 style: pad with EOS (masked anyway)
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.predict([CompletionItem("warm up", max_tokens=1, temperature=0)])

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        """The prompt the model's own chat template makes of a conversation (ending where
        the assistant speaks next). InvalidInput when the model has no template, or when its
        template refuses the conversation (many raise on roles out of order)."""
        from jinja2.exceptions import TemplateError

        tokenizer = self._count_tokenizer
        if not getattr(tokenizer, "chat_template", None):
            raise InvalidInput(
                f"model {self.info.name!r} has no chat template (its tokenizer's "
                "chat_template); use POST /v1/completions"
            )
        with self._count_lock:
            try:
                prompt = tokenizer.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=True
                )
            except (TemplateError, ValueError, TypeError) as exc:
                raise InvalidInput(f"messages: the chat template refused them: {exc}") from exc
        return str(prompt)

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        """Each prompt's tokens (InvalidInput naming the prompt it cannot tokenize);
        thread-safe, never the worker's tokenizer.

        Long prompts take a while to tokenize, so routes call this in a thread, not on the
        event loop; the lock keeps concurrent requests off the one tokenizer instance.
        """
        with self._count_lock:
            out = []
            for i, text in enumerate(texts):
                try:
                    out.append(list(tokenize(self._count_tokenizer, [text])["input_ids"][0]))
                except InvalidInput as exc:
                    raise InvalidInput(f"prompt[{i}]: {exc}") from exc
            return out

    def decode(self, ids: list[int]) -> str:
        """Generated tokens as text (special tokens left out). Continuous batching calls
        this on the event loop only; the lockstep worker has its own tokenizer."""
        return str(
            self._decode_tokenizer.decode(
                ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
        )

    def predict(self, items: Sequence[CompletionItem]) -> list[Completion | BaseException]:
        groups: dict[tuple[float, float], list[int]] = defaultdict(list)
        for i, item in enumerate(items):
            groups[item.sampling_key].append(i)
        results: list[Completion | BaseException] = [None] * len(items)  # type: ignore[list-item]
        for (temperature, top_p), idx in groups.items():
            done = self._generate_isolating([items[i] for i in idx], temperature, top_p)
            for i, res in zip(idx, done, strict=True):  # one bad group never fails the others
                results[i] = res
        self.last_generated_tokens = sum(
            r.completion_tokens for r in results if isinstance(r, Completion)
        )
        return results

    def _generate_isolating(
        self, items: list[CompletionItem], temperature: float, top_p: float
    ) -> list[Completion | BaseException]:
        """Generate for a group; if it fails, retry its rows alone so only the bad one fails.

        A row that already streamed text is not retried (its client would see the text
        twice): it fails with the group's error.
        """
        try:
            return list(self._generate(items, temperature, top_p))
        except Exception as exc:
            if len(items) == 1:
                return [exc]
            log.warning(
                "generating a group of %d failed (%s); retrying its rows one at a time",
                len(items),
                type(exc).__name__,
            )
            group_error = exc
        out: list[Completion | BaseException] = []
        for item in items:
            if item.streamed:
                out.append(group_error)
                continue
            try:
                out.extend(self._generate([item], temperature, top_p))
            except Exception as exc:
                out.append(exc)
        return out

    @torch.inference_mode()
    def _generate(
        self, items: list[CompletionItem], temperature: float, top_p: float
    ) -> list[Completion]:
        assert self.model is not None, "load() first"
        max_new = max(it.max_tokens for it in items)
        enc = tokenize(
            self.tokenizer,
            [it.prompt for it in items],
            padding=True,
            truncation=True,
            max_length=max(1, self.context_length - max_new),
            return_tensors="pt",
        ).to(self.runtime.device)
        prompt_tokens = enc["attention_mask"].sum(dim=1).tolist()
        tracker = RowTracker(
            items,
            prompt_tokens,
            lambda ids: self.tokenizer.decode(
                ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
            ),
            self.eos_token_ids,
        )
        cfg = copy.deepcopy(self.model.generation_config)
        cfg.max_new_tokens = max_new
        cfg.max_length = None
        cfg.min_length = 0
        cfg.pad_token_id = self.tokenizer.pad_token_id
        cfg.top_k = None  # OpenAI semantics: only temperature and top_p shape sampling
        if temperature == 0:
            cfg.do_sample, cfg.temperature, cfg.top_p = False, None, None
        else:
            cfg.do_sample, cfg.temperature, cfg.top_p = True, temperature, top_p
        self.model.generate(
            **enc, generation_config=cfg, stopping_criteria=StoppingCriteriaList([tracker])
        )
        return tracker.finish()


def build_model(info: ModelInfo, runtime: Runtime) -> ClassifierModel | CompletionModel:
    """The model class for the directory's task (not loaded yet)."""
    if info.task is Task.CLASSIFICATION:
        return ClassifierModel(info, runtime)
    return CompletionModel(info, runtime)
