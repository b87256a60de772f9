"""Continuous batching: exact answers while requests join and leave, per-request sampling,
and admission by the KV cache budget."""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path

import httpx
import pytest
import torch

from tests.fixtures.models import build_tiny_causal_lm
from tests.fixtures.serving import running_server


@pytest.fixture(scope="module")
def varied_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 whose greedy text varies token to token (a mixed-up KV cache shows)."""
    return build_tiny_causal_lm(
        tmp_path_factory.mktemp("models") / "varied-lm", name="varied-lm", initializer_range=0.5
    )


@pytest.fixture(scope="module")
def varied_llama(varied_lm: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama (rotary positions, two query heads per key/value head) on the same
    tokenizer: the layout most served models have."""
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("models") / "varied-llama"
    tok = AutoTokenizer.from_pretrained(varied_lm)
    eos = tok.eos_token_id
    config = LlamaConfig(
        vocab_size=tok.vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        initializer_range=0.5,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=eos)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / "snowtrain.json").write_text(json.dumps({"task": "pretrain", "name": "varied-llama"}))
    return out


def one_at_a_time(model_dir: Path, prompt: str, max_tokens: int) -> tuple[str, int]:
    """Greedy `generate` over this prompt alone: the text and the number of new tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = tok(prompt, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=max_tokens, do_sample=False)
    new = out[0, ids["input_ids"].shape[1] :].tolist()
    eos = model.generation_config.eos_token_id
    if eos in new:  # the server stops at EOS and does not count it
        new = new[: new.index(eos)]
    return tok.decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False), len(new)


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_every_request_gets_what_greedy_generation_alone_gives(
    architecture: str, request: pytest.FixtureRequest
) -> None:
    """Sixteen requests of mixed prompt and output lengths, arriving staggered at a server
    that runs at most four sequences per step: sequences join and leave the running batch
    at every step, and each answer is token for token what `generate` gives that prompt
    alone (GPT-2, and a Llama with rotary positions and grouped-query attention)."""
    model_dir: Path = request.getfixturevalue(
        "varied_lm" if architecture == "gpt2" else "varied_llama"
    )
    rng = random.Random(7)
    words = [
        "once",
        "upon",
        "a",
        "time",
        "the",
        "movie",
        "was",
        "great",
        "and",
        "numbers",
        "0",
        "1",
        "2",
        "3",
        "followed",
    ]
    cases = [
        (" ".join(rng.choice(words) for _ in range(rng.randint(1, 40))), rng.randint(3, 60))
        for _ in range(16)
    ]

    async def send_all(url: str) -> list[dict]:
        async with httpx.AsyncClient(timeout=120) as client:

            async def one(i: int, prompt: str, max_tokens: int) -> dict:
                await asyncio.sleep(0.02 * i)  # staggered: later ones join a running batch
                body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
                resp = await client.post(f"{url}/v1/completions", json=body)
                assert resp.status_code == 200, resp.text
                return resp.json()

            return await asyncio.gather(*(one(i, p, n) for i, (p, n) in enumerate(cases)))

    with running_server(model_dir, max_batch_size=4, max_new_tokens=100) as url:
        answers = asyncio.run(send_all(url))
    for (prompt, max_tokens), answer in zip(cases, answers, strict=True):
        text, count = one_at_a_time(model_dir, prompt, max_tokens)
        (choice,) = answer["choices"]
        assert choice["text"] == text, prompt
        assert answer["usage"]["completion_tokens"] == count


def test_streamed_and_whole_answers_agree_under_load(varied_lm: Path) -> None:
    """Streams of different lengths share steps; each stream adds up to its whole answer."""
    prompts = [("the movie", 40), ("numbers 0 1", 7), ("once upon a time the", 25)]

    async def run(url: str) -> tuple[list[str], list[str]]:
        async with httpx.AsyncClient(timeout=120) as client:

            async def whole(p: str, n: int) -> str:
                body = {"prompt": p, "max_tokens": n, "temperature": 0}
                r = await client.post(f"{url}/v1/completions", json=body)
                return str(r.json()["choices"][0]["text"])

            async def streamed(p: str, n: int) -> str:
                body = {"prompt": p, "max_tokens": n, "temperature": 0, "stream": True}
                text = ""
                async with client.stream("POST", f"{url}/v1/completions", json=body) as r:
                    async for line in r.aiter_lines():
                        if line.startswith("data: {"):
                            text += json.loads(line[6:])["choices"][0]["text"]
                return text

            wholes = await asyncio.gather(*(whole(p, n) for p, n in prompts))
            streams = await asyncio.gather(*(streamed(p, n) for p, n in prompts))
            return list(wholes), list(streams)

    with running_server(varied_lm, max_batch_size=8) as url:
        wholes, streams = asyncio.run(run(url))
    assert streams == wholes


def test_sampled_rows_draw_from_their_own_distribution_and_greedy_rows_stay_exact() -> None:
    """The processors on a batch mixing a greedy row, a temperature-only row and a nucleus
    row: the greedy row's argmax never changes, draws follow softmax(logits / T), and the
    nucleus row only ever draws tokens inside its top_p."""
    from transformers import TopPLogitsWarper

    from snowtrain.serve.continuous import GumbelDraw, Nucleus, TemperatureScale

    torch.manual_seed(0)
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0, 0.0]] * 3)

    def arg(values: list[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32).view(torch.int32)

    temperature = arg([0.0, 0.7, 1.0])
    top_p = arg([1.0, 1.0, 0.6])
    draws = torch.zeros(3, 5)
    for _ in range(4000):
        scores = TemperatureScale()(logits.clone(), temperature)
        scores = Nucleus()(scores, top_p)
        scores = GumbelDraw()(scores, temperature)
        draws[torch.arange(3), scores.argmax(dim=-1)] += 1
    assert draws[0, 0] == 4000  # greedy: always the argmax
    expected = (logits[1] / 0.7).softmax(dim=-1) * 4000
    assert torch.allclose(draws[1], expected, atol=120), (draws[1], expected)
    kept = TopPLogitsWarper(0.6)(None, logits[2:3].clone()).isfinite()[0]
    assert draws[2][~kept].sum() == 0 and draws[2][kept].min() > 0


def test_the_kv_cache_budget_bounds_what_is_accepted(varied_lm: Path) -> None:
    """A cache of one context (512 tokens): requests booking 400 tokens each are accepted
    up to twice the cache at once (one cache running, one waiting), the rest get 429 naming
    the cache, and every accepted one completes."""

    async def burst(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as client:
            body = {"prompt": "once upon a time", "max_tokens": 390, "temperature": 0}
            return await asyncio.gather(
                *(client.post(f"{url}/v1/completions", json=body) for _ in range(6))
            )

    with running_server(
        varied_lm, kv_cache_tokens=512, max_new_tokens=400, max_batch_size=8
    ) as url:
        responses = asyncio.run(burst(url))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) >= 2 and 429 in codes, codes
    refused = next(r for r in responses if r.status_code == 429)
    assert "KV cache is fully booked" in refused.json()["error"]["message"]
    for r in responses:
        if r.status_code == 200:
            assert r.json()["usage"]["completion_tokens"] >= 1


def test_a_cache_smaller_than_the_context_is_a_clear_load_error(varied_lm: Path) -> None:
    """A cache that cannot hold one context fails the load with the reason and the way out
    (the liveness probe turns 500, so the pod is restarted visibly, not served broken)."""
    with running_server(varied_lm, kv_cache_tokens=100, wait=False) as url:
        deadline = time.monotonic() + 120
        while (health := httpx.get(f"{url}/healthz")).status_code != 500:
            assert time.monotonic() < deadline, f"never failed: {health.text}"
            time.sleep(0.05)  # polls until the load ends; the deadline is the only bound
    message = health.json()["error"]["message"]
    assert "must hold at least one full context (512 tokens)" in message
    assert "--batching lockstep" in message


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_varlen_attention_equals_each_sequence_attending_alone(kv_heads: int) -> None:
    """A pack of a decoding sequence, a fresh prompt and a prompt chunk after cached tokens
    (with and without grouped-query heads): each sequence's output is its own causal
    attention, computed separately, with nothing leaking in from the other sequences."""
    from snowtrain.serve.varlen_attention import varlen_sdpa_forward

    torch.manual_seed(0)
    heads, dim = 4, 16
    seqs = [(1, 9), (5, 5), (3, 11)]  # (new query tokens, all keys) per sequence
    q_total, k_total = sum(q for q, _ in seqs), sum(k for _, k in seqs)
    query = torch.randn(1, heads, q_total, dim)
    key = torch.randn(1, kv_heads, k_total, dim)
    value = torch.randn(1, kv_heads, k_total, dim)
    cu_q = torch.tensor([0, 1, 6, 9], dtype=torch.int32)
    cu_k = torch.tensor([0, 9, 14, 25], dtype=torch.int32)
    out, _ = varlen_sdpa_forward(
        torch.nn.Module(),
        query,
        key,
        value,
        None,
        scaling=0.25,
        cu_seq_lens_q=cu_q,
        cu_seq_lens_k={"full_attention": cu_k},
    )
    assert out.shape == (1, q_total, heads, dim)
    rep = heads // kv_heads
    for i, (q_len, k_len) in enumerate(seqs):
        q = query[0, :, cu_q[i] : cu_q[i + 1]]
        k = key[0, :, cu_k[i] : cu_k[i + 1]].repeat_interleave(rep, dim=0)
        v = value[0, :, cu_k[i] : cu_k[i + 1]].repeat_interleave(rep, dim=0)
        scores = (q @ k.transpose(-1, -2)) * 0.25
        # query j sits at position k_len - q_len + j and sees keys up to there
        visible = torch.arange(k_len)[None, :] <= (k_len - q_len + torch.arange(q_len))[:, None]
        expected = scores.masked_fill(~visible, float("-inf")).softmax(-1) @ v
        got = out[0, cu_q[i] : cu_q[i + 1]].transpose(0, 1)
        assert torch.allclose(got, expected, atol=1e-5), i


def test_the_cpu_server_attends_per_sequence(
    varied_lm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a CPU the engine runs the per-sequence attention (so the exactness test above holds
    for it), for models whose layers all use full attention, and not for a sliding window."""
    from transformers import AttentionInterface, AutoConfig, MistralConfig

    from snowtrain.serve import varlen_attention

    calls = []

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return varlen_attention.varlen_sdpa_forward(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setitem(AttentionInterface._global_mapping, varlen_attention.NAME, counting)
    with running_server(varied_lm) as url:
        body = {"prompt": "once upon a time", "max_tokens": 5, "temperature": 0}
        assert httpx.post(f"{url}/v1/completions", json=body).status_code == 200
    assert calls, "the engine never called the per-sequence attention"
    assert varlen_attention.applies_to(AutoConfig.from_pretrained(varied_lm))
    assert not varlen_attention.applies_to(MistralConfig(sliding_window=64))


def test_a_prompt_without_tokens_is_refused_and_the_engine_serves_on(
    varied_lm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prompt the tokenizer turns into no tokens (some tokenizers drop what they do not
    know) is a 400 naming it, never an empty sequence in the shared engine."""
    from snowtrain.serve.models import CompletionModel

    encode = CompletionModel.encode_many

    def dropping(self: CompletionModel, texts: list[str]) -> list[list[int]]:
        return [
            [] if t == "unknowable" else ids
            for t, ids in zip(texts, encode(self, texts), strict=True)
        ]

    monkeypatch.setattr(CompletionModel, "encode_many", dropping)
    with running_server(varied_lm) as url:
        bad = httpx.post(f"{url}/v1/completions", json={"prompt": ["fine", "unknowable"]})
        good = httpx.post(f"{url}/v1/completions", json={"prompt": "fine", "max_tokens": 3})
    assert bad.status_code == 400
    assert "prompt[1] has no tokens" in bad.json()["error"]["message"]
    assert good.status_code == 200 and good.json()["usage"]["completion_tokens"] >= 1
