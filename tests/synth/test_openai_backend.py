"""The openai backend against a real OpenAI-compatible server on 127.0.0.1 that serves the default model through
the transformers backend: completions, chat, retries on 503, the error after the last retry, and MAGPIE over HTTP."""

from __future__ import annotations

import polars as pl
import pytest

from alignmix.pipeline.store import MixStore
from alignmix.synth.backends import GenerationRequest, SamplingParams, get_backend
from alignmix.synth.backends.openai import OpenAIBackend, OpenAIBackendError
from alignmix.synth.magpie import run_magpie
from tests.synth.openai_server import OpenAICompatibleServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server():
    local = get_backend({"backend": "transformers", "model": "default", "batch_size": 16})
    with OpenAICompatibleServer(local) as srv:
        yield srv


def test_completions_and_chat_match_the_local_backend(server):
    client = OpenAIBackend("smollm2", base_url=server.base_url, tokenizer="default", concurrency=2, backoff_s=0.01)
    greedy = SamplingParams(max_new_tokens=8, temperature=0.0, stop=("<|im_end|>",))
    reqs = [
        GenerationRequest(prompt="<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n", params=greedy),
        GenerationRequest(messages=[{"role": "user", "content": "What is the capital of France?"}], params=greedy),
    ]
    remote = client.generate(reqs)
    local = server.backend.generate(reqs)
    assert [r.text for r in remote] == [r.text for r in local]
    assert [r.completion_tokens for r in remote] == [r.completion_tokens for r in local]
    assert all(r.text for r in remote)
    assert client.render_chat([{"role": "user", "content": "x"}]).endswith("<|im_start|>assistant\n")


def test_retries_then_gives_up(server):
    client = OpenAIBackend("smollm2", base_url=server.base_url, max_retries=2, backoff_s=0.01, concurrency=1)
    req = GenerationRequest(prompt="<|im_start|>user\n", params=SamplingParams(max_new_tokens=4, seed=3))
    server.fail_next, start = 2, server.requests
    assert client.generate([req])[0].completion_tokens > 0
    assert server.requests - start == 3  # two 503s, then the answer
    server.fail_next = 3
    with pytest.raises(OpenAIBackendError, match="failed after 3 tries .*HTTP 503"):
        client.generate([req])
    dead = OpenAIBackend("smollm2", base_url="http://127.0.0.1:9/v1", max_retries=1, backoff_s=0.01, timeout_s=2)
    with pytest.raises(OpenAIBackendError, match="ConnectError"):
        dead.generate([req])


def test_magpie_over_http(server, tmp_path):
    client = OpenAIBackend("smollm2", base_url=server.base_url, tokenizer="default", concurrency=2)
    spec = {"name": "magpie-http", "count": 2, "backend": "openai", "model": "smollm2",
            "instruction": {"max_new_tokens": 16}, "response": {"max_new_tokens": 16}}  # fmt: skip
    stats = run_magpie(spec, tmp_path, backend=client)
    assert stats["rows_in"] == 2 and stats["template"] == "derived" and stats["backend"] == "openai"
    store = MixStore(tmp_path)
    assert store.read().height + pl.read_parquet(store.rejected_path("magpie")).height == 2
