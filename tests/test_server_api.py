"""The OpenAI-compatible API: every endpoint against the library's own answers, every refused input, the limits,
streaming, a client that hangs up, and the real `openai` package talking to a real uvicorn server on loopback."""

from __future__ import annotations

import copy
import json
import logging
import socket
import threading
import time

import httpx
import pytest
import torch
import uvicorn
from fastapi.testclient import TestClient

from lanterne.chat import chat_text
from lanterne.model.config import GPTConfig
from lanterne.generation import generate
from lanterne.server.app import create_app
from lanterne.server.limits import Limits
from lanterne.tokenization import train
from lanterne.model.transformer import GPT

NAME = "tiny-llama"
TEXT = "le petit chat dort sur le tapis. the cat sleeps on the mat! " * 8
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LIMITS = Limits(max_prompt_tokens=48, max_text_characters=400, max_new_tokens=40, max_completions=3, max_body_bytes=2000)
CHAT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "le chat"}]


@pytest.fixture(scope="module")
def tokenizer():
    tokenizer = train("bpe", TEXT, 300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tokenizer.chat_template = CHATML
    return tokenizer


def tiny_model(model_class=GPT):
    torch.manual_seed(0)
    config = GPTConfig.preset("llama", vocab_size=320, context_length=64, d_model=32, n_heads=4, n_kv_heads=2, n_layers=2, d_ff=48)
    return model_class(config).eval()


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def client(model, tokenizer):
    with TestClient(create_app(model, tokenizer, NAME, LIMITS)) as client:
        yield client


def events(response) -> list:
    """The JSON of each server-sent event, and "[DONE]" for the last."""
    lines = [line for line in response.text.split("\n\n") if line]
    assert all(line.startswith("data: ") for line in lines)
    return [line[6:] if line == "data: [DONE]" else json.loads(line[6:]) for line in lines]


# -- answers ---------------------------------------------------------------------------------------


def test_models_lists_the_loaded_model(client):
    listing = client.get("/v1/models").json()
    assert listing["object"] == "list" and len(listing["data"]) == 1
    card = listing["data"][0]
    assert card["id"] == NAME and card["object"] == "model" and card["owned_by"] == "lanterne" and isinstance(card["created"], int)
    assert client.get(f"/v1/models/{NAME}").json() == card


def test_a_completion_is_what_the_library_generates(client, model, tokenizer):
    body = {"model": NAME, "prompt": "le petit", "max_tokens": 12, "temperature": 0.8, "top_p": 0.9, "seed": 7}
    answer = client.post("/v1/completions", json=body).json()
    assert answer["object"] == "text_completion" and answer["model"] == NAME and answer["id"].startswith("cmpl-")
    (choice,) = answer["choices"]
    expected = generate(model, tokenizer, "le petit", 12, temperature=0.8, top_p=0.9, seed=7)
    assert choice["text"] == expected and choice["index"] == 0 and choice["logprobs"] is None
    usage = answer["usage"]
    assert usage["prompt_tokens"] == len(tokenizer.encode("le petit"))
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    if choice["finish_reason"] == "length":
        assert usage["completion_tokens"] == 12
    assert client.post("/v1/completions", json={**body, "prompt": ["le petit"]}).json()["choices"] == answer["choices"]
    special = client.post("/v1/completions", json={**body, "prompt": "<|endoftext|>le petit"}).json()
    assert special["usage"]["prompt_tokens"] == usage["prompt_tokens"] + 1, "a special token's text is that token"


def test_n_choices_are_seeded_one_after_the_other(client, model, tokenizer):
    answer = client.post("/v1/completions", json={"prompt": "le", "max_tokens": 6, "n": 3, "seed": 10}).json()
    assert [choice["index"] for choice in answer["choices"]] == [0, 1, 2]
    for index, choice in enumerate(answer["choices"]):
        assert choice["text"] == generate(model, tokenizer, "le", 6, seed=10 + index)


def test_a_stop_string_ends_the_completion(client, model, tokenizer):
    full = generate(model, tokenizer, "le chat", 30, temperature=0)
    stop = full[6:9]
    answer = client.post("/v1/completions", json={"prompt": "le chat", "max_tokens": 30, "temperature": 0, "stop": stop}).json()
    assert answer["choices"][0]["text"] == full[: full.find(stop)] and answer["choices"][0]["finish_reason"] == "stop"


def test_logprobs_in_openais_legacy_shape(client):
    answer = client.post("/v1/completions", json={"prompt": "le petit", "max_tokens": 10, "temperature": 0, "logprobs": 2}).json()
    choice = answer["choices"][0]
    logprobs = choice["logprobs"]
    assert set(logprobs) == {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
    assert len(logprobs["tokens"]) == answer["usage"]["completion_tokens"] == 10
    for token, logprob, top in zip(logprobs["tokens"], logprobs["token_logprobs"], logprobs["top_logprobs"]):
        assert logprob <= 0 and len(top) <= 2
        assert top[token] == pytest.approx(logprob) and logprob == pytest.approx(max(top.values())), "greedy takes the likeliest"
    offsets = logprobs["text_offset"]
    assert offsets[0] == 0 and offsets == sorted(offsets) and offsets[-1] < len(choice["text"])


def test_chat_fills_in_the_models_template(client, model, tokenizer):
    answer = client.post("/v1/chat/completions", json={"model": NAME, "messages": CHAT, "max_tokens": 10, "seed": 5}).json()
    assert answer["object"] == "chat.completion" and answer["id"].startswith("chatcmpl-")
    (choice,) = answer["choices"]
    prompt = chat_text(tokenizer, CHAT)
    assert prompt.startswith("<|im_start|>system\nbe brief<|im_end|>\n")
    assert choice["message"] == {"role": "assistant", "content": generate(model, tokenizer, prompt, 10, seed=5, allow_special=True)}
    assert choice["finish_reason"] in ("stop", "length")
    assert answer["usage"]["prompt_tokens"] == len(tokenizer.encode(prompt, allowed_special="all"))
    parts = [{"role": "user", "content": [{"type": "text", "text": "le "}, {"type": "text", "text": "chat"}]}]
    same = client.post("/v1/chat/completions", json={"messages": parts, "max_tokens": 5, "seed": 5}).json()
    assert same["choices"][0]["message"]["content"] == generate(
        model, tokenizer, chat_text(tokenizer, [{"role": "user", "content": "le chat"}]), 5, seed=5, allow_special=True
    )


def test_a_model_without_a_chat_template_is_a_400(model, tokenizer):
    base = copy.copy(tokenizer)
    base.chat_template = None
    response = TestClient(create_app(model, base, NAME, LIMITS)).post("/v1/chat/completions", json={"messages": CHAT})
    assert response.status_code == 400 and "no chat template" in response.json()["error"]["message"]


# -- streaming -------------------------------------------------------------------------------------


def test_streamed_completions_join_to_the_answer_and_end_with_done(client):
    body = {"prompt": "le petit", "max_tokens": 15, "seed": 3, "logprobs": 1}
    answer = client.post("/v1/completions", json=body).json()["choices"][0]
    response = client.post("/v1/completions", json={**body, "stream": True, "stream_options": {"include_usage": True}})
    assert response.headers["content-type"].startswith("text/event-stream")
    *chunks, usage, done = events(response)
    assert done == "[DONE]" and usage["choices"] == [] and usage["usage"]["completion_tokens"] > 0
    assert all(chunk["object"] == "text_completion" for chunk in chunks)
    assert "".join(chunk["choices"][0]["text"] for chunk in chunks) == answer["text"]
    assert [chunk["choices"][0]["finish_reason"] for chunk in chunks][-1] == answer["finish_reason"]
    assert all(chunk["choices"][0]["finish_reason"] is None for chunk in chunks[:-1])
    tokens = [token for chunk in chunks for token in chunk["choices"][0]["logprobs"]["tokens"]]
    assert tokens == answer["logprobs"]["tokens"]


def test_streamed_chat_sends_deltas_and_ends_with_done(client):
    body = {"messages": CHAT, "max_tokens": 12, "seed": 4}
    answer = client.post("/v1/chat/completions", json=body).json()["choices"][0]
    *chunks, done = events(client.post("/v1/chat/completions", json={**body, "stream": True}))
    assert done == "[DONE]" and all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks]
    assert deltas[0] == {"role": "assistant", "content": ""} and deltas[-1] == {}
    assert "".join(delta.get("content", "") for delta in deltas) == answer["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == answer["finish_reason"]


# -- refused requests ------------------------------------------------------------------------------

COMPLETIONS, CHATS = "/v1/completions", "/v1/chat/completions"


@pytest.mark.parametrize(
    "path, body, status, message",
    [
        (COMPLETIONS, b'{"prompt": "le", ', 400, "not valid JSON (at character"),
        (COMPLETIONS, b"[1, 2]", 422, "dictionary"),
        (COMPLETIONS, {}, 422, "prompt: Field required"),
        (COMPLETIONS, {"prompt": 5}, 422, "prompt"),
        (COMPLETIONS, b'{"prompt": "\\ud800"}', 422, "lone surrogate"),
        (COMPLETIONS, {"prompt": [101, 102]}, 422, "prompt"),
        (COMPLETIONS, {"prompt": ["one", "two"]}, 422, "one prompt per request"),
        (COMPLETIONS, {"prompt": "le", "temperature": "hot"}, 422, "temperature"),
        (COMPLETIONS, {"prompt": "le", "temperature": 2.5}, 422, "temperature"),
        (COMPLETIONS, {"prompt": "le", "temperature": -0.1}, 422, "temperature"),
        (COMPLETIONS, {"prompt": "le", "top_p": 0}, 422, "top_p"),
        (COMPLETIONS, {"prompt": "le", "top_p": 1.5}, 422, "top_p"),
        (COMPLETIONS, {"prompt": "le", "max_tokens": -1}, 422, "max_tokens"),
        (COMPLETIONS, {"prompt": "le", "max_tokens": "10"}, 422, "max_tokens"),
        (COMPLETIONS, {"prompt": "le", "max_tokens": 41}, 400, "over this server's limit of 40"),
        (COMPLETIONS, {"prompt": "le", "n": 0}, 422, "n"),
        (COMPLETIONS, {"prompt": "le", "n": 4}, 400, "limit of 3 completions"),
        (COMPLETIONS, {"prompt": "le", "logprobs": 6}, 422, "logprobs"),
        (COMPLETIONS, {"prompt": "le", "stop": ["a", "b", "c", "d", "e"]}, 422, "at most 4 stop strings"),
        (COMPLETIONS, {"prompt": "le", "stop": "x" * 65}, 422, "at most 64 characters"),
        (COMPLETIONS, {"prompt": "le", "seed": -1}, 422, "seed"),
        (COMPLETIONS, {"prompt": "le", "stream": "yes"}, 422, "stream"),
        (COMPLETIONS, {"prompt": "le", "echo": True}, 400, "'echo' is not implemented"),
        (COMPLETIONS, {"prompt": "le", "model": "gpt-4"}, 404, "'gpt-4' is not served here"),
        (CHATS, {}, 422, "messages: Field required"),
        (CHATS, {"messages": []}, 422, "messages"),
        (CHATS, {"messages": [{"role": "robot", "content": "hi"}]}, 422, "role"),
        (CHATS, {"messages": [{"role": "user", "content": 5}]}, 422, "content"),
        (CHATS, {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]}, 422, "content"),
        (CHATS, {"messages": CHAT, "temperature": 3}, 422, "temperature"),
        (CHATS, {"messages": CHAT, "max_completion_tokens": 100}, 400, "max_completion_tokens is 100"),
        (CHATS, {"messages": CHAT, "logprobs": True}, 422, "not implemented"),
        (CHATS, {"messages": CHAT, "model": "../../etc/passwd"}, 404, "not served here"),
    ],
)
def test_a_bad_request_is_a_4xx_that_says_why(client, path, body, status, message):
    options = {"content": body, "headers": {"content-type": "application/json"}} if isinstance(body, bytes) else {"json": body}
    response = client.post(path, **options)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error["message"] and error["type"] == "invalid_request_error"
    if status == 404:
        assert error["code"] == "model_not_found"


def test_an_unknown_model_is_404(client):
    response = client.get("/v1/models/gpt-4")
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"


def test_a_prompt_over_the_limits_keeps_its_last_tokens_and_a_text_over_the_characters_is_refused(client, model, tokenizer):
    many_tokens = "qx zj " * 20  # 120 characters, but letters the tokenizer never merged: about 60 tokens
    assert len(tokenizer.encode(many_tokens)) > LIMITS.max_prompt_tokens
    answer = client.post(COMPLETIONS, json={"prompt": many_tokens, "max_tokens": 3, "seed": 1}).json()
    assert answer["usage"]["prompt_tokens"] == LIMITS.max_prompt_tokens  # as `generate` without strict: the last ones
    last = tokenizer.decode(tokenizer.encode(many_tokens)[-LIMITS.max_prompt_tokens:])
    assert answer["choices"][0]["text"] == generate(model, tokenizer, last, 3, seed=1)
    answer = client.post(CHATS, json={"messages": [{"role": "user", "content": many_tokens}], "max_tokens": 2}).json()
    assert answer["usage"]["prompt_tokens"] == LIMITS.max_prompt_tokens
    response = client.post(COMPLETIONS, json={"prompt": "é" * 401})  # the schema's maxLength, in characters
    assert response.status_code == 400 and "401 characters, over this server's limit of 400" in response.json()["error"]["message"]
    wide = TestClient(create_app(model, tokenizer, NAME, Limits()))  # the model's context (64) is the tighter bound
    answer = wide.post(COMPLETIONS, json={"prompt": many_tokens * 2, "max_tokens": 1}).json()
    assert answer["usage"]["prompt_tokens"] == 63  # the context, less one new token
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    assert schema["CompletionRequest"]["properties"]["n"]["anyOf"][0]["maximum"] == LIMITS.max_completions


def test_a_body_too_large_is_413(client):
    response = client.post(COMPLETIONS, json={"prompt": "a" * 3000})
    assert response.status_code == 413 and "over 2,000 bytes" in response.json()["error"]["message"]


def test_each_request_is_logged_with_the_tokens_it_generated(client, caplog):
    with caplog.at_level(logging.INFO, logger="lanterne.server"):
        client.post(COMPLETIONS, json={"prompt": "le", "max_tokens": 5, "stop": "never seen", "seed": 1})
        client.post(COMPLETIONS, json={"prompt": "le", "max_tokens": 4, "stop": "never seen", "seed": 1, "stream": True})
    lines = [record.getMessage() for record in caplog.records if record.name == "lanterne.server"]
    assert len(lines) == 2
    assert lines[0].startswith("POST /v1/completions 200 tokens=") and lines[1].startswith("POST /v1/completions 200 tokens=")
    counts = [int(line.split("tokens=")[1].split()[0]) for line in lines]
    assert 1 <= counts[0] <= 5 and 1 <= counts[1] <= 4


# -- time, the queue and clients that hang up: a model slowed down to 20 ms a token ----------------


class SlowGPT(GPT):
    """The tiny model at 20 ms a step, that never ends its text (no end-of-text token): it generates as long as asked.
    Its output layer is slowed, so that the plain loop and the decoder's step both are."""

    end_of_text = None
    steps = 0

    def __init__(self, *args, **options):
        super().__init__(*args, **options)
        self.lm_head.register_forward_hook(self._slowly)

    @staticmethod
    def _slowly(module, inputs, logits):
        time.sleep(0.02)
        SlowGPT.steps += 1
        logits[..., SlowGPT.end_of_text] = -1e9
        return logits


@pytest.fixture(scope="module")
def slow_model(tokenizer):
    SlowGPT.end_of_text = tokenizer.eos_id
    return tiny_model(SlowGPT)


def test_past_the_time_limit_the_text_ends_with_length(slow_model, tokenizer):
    limits = Limits(max_new_tokens=500, seconds_per_request=0.3)
    client = TestClient(create_app(slow_model, tokenizer, NAME, limits))
    answer = client.post(COMPLETIONS, json={"prompt": "le", "max_tokens": 500, "n": 2}).json()
    assert [choice["finish_reason"] for choice in answer["choices"]] == ["length", "length"]
    assert 0 < answer["usage"]["completion_tokens"] < 100


@pytest.fixture(scope="module")
def slow_server(slow_model, tokenizer):
    """A real uvicorn server: one generation at a time, no queue."""
    app = create_app(slow_model, tokenizer, NAME, Limits(slots=1, max_waiting=0, retry_after_seconds=3))
    with running(app) as base_url:
        yield app, base_url


class running:
    """A uvicorn server for `app` in a background thread, on a free loopback port; stopped on exit."""

    def __init__(self, app) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        return f"http://127.0.0.1:{self.socket.getsockname()[1]}"

    def __exit__(self, *exception) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.socket.close()


def wait_until(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def first_event(lines) -> dict:
    """The first event of a stream's lines, leaving the stream open (closing `lines` would hang up)."""
    for line in lines:
        if line:
            return json.loads(line[len("data: "):])


def test_a_full_queue_is_429_with_retry_after(slow_server):
    app, base_url = slow_server
    with httpx.Client(base_url=base_url, trust_env=False) as http:
        with http.stream("POST", COMPLETIONS, json={"prompt": "le", "max_tokens": 200, "stream": True}) as held:
            lines = held.iter_lines()
            first_event(lines)
            assert app.state.engine.running == 1
            refused = http.post(COMPLETIONS, json={"prompt": "le", "max_tokens": 2})
            assert refused.status_code == 429 and refused.headers["Retry-After"] == "3"
            assert "retry in 3 s" in refused.json()["error"]["message"]
    assert wait_until(lambda: app.state.engine.running == 0, 2)


def test_a_client_that_hangs_up_frees_its_slot_and_stops_the_model(slow_server):
    app, base_url = slow_server
    with httpx.Client(base_url=base_url, trust_env=False) as http:
        for path, body in ((COMPLETIONS, {"prompt": "le"}), (CHATS, {"messages": CHAT})):
            with http.stream("POST", path, json={**body, "max_tokens": 200, "stream": True}) as response:
                lines = response.iter_lines()
                first_event(lines)
                time.sleep(0.1)
                assert app.state.engine.running == 1, "still generating while the client listens"
            # 200 tokens would hold the slot for 4 s: hanging up frees it at once, and the model stops after its step.
            assert wait_until(lambda: app.state.engine.running == 0, 1.0)
            steps = SlowGPT.steps
            time.sleep(0.2)
            assert SlowGPT.steps - steps <= 1
            assert http.post(COMPLETIONS, json={"prompt": "le", "max_tokens": 2}).status_code == 200


# -- the real openai package against a real server -------------------------------------------------


def test_the_openai_client_talks_to_lanterne(model, tokenizer):
    openai = pytest.importorskip("openai")
    with running(create_app(model, tokenizer, NAME, LIMITS)) as base_url:
        with httpx.Client(trust_env=False) as http:
            client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=30, http_client=http)
            assert [card.id for card in client.models.list()] == [NAME]

            completion = client.completions.create(model=NAME, prompt="le petit", max_tokens=10, seed=3, temperature=0.7)
            assert completion.choices[0].text == generate(model, tokenizer, "le petit", 10, temperature=0.7, seed=3)
            assert completion.usage.completion_tokens > 0
            pieces = client.completions.create(model=NAME, prompt="le petit", max_tokens=10, seed=3, temperature=0.7, stream=True)
            assert "".join(chunk.choices[0].text for chunk in pieces) == completion.choices[0].text

            messages = [{"role": "user", "content": "le chat"}]
            chat = client.chat.completions.create(model=NAME, messages=messages, max_tokens=10, seed=3)
            expected = generate(model, tokenizer, chat_text(tokenizer, messages), 10, seed=3, allow_special=True)
            assert chat.choices[0].message.role == "assistant" and chat.choices[0].message.content == expected
            deltas = client.chat.completions.create(model=NAME, messages=messages, max_tokens=10, seed=3, stream=True)
            assert "".join(chunk.choices[0].delta.content or "" for chunk in deltas) == expected

            with pytest.raises(openai.NotFoundError, match="not served here"):
                client.completions.create(model="gpt-4", prompt="le")
            with pytest.raises(openai.BadRequestError, match="over this server's limit"):
                client.completions.create(model=NAME, prompt="le", max_tokens=1000)
            with pytest.raises(openai.UnprocessableEntityError, match="temperature"):
                client.chat.completions.create(model=NAME, messages=messages, temperature=3.0)


def test_serve_binds_loopback_by_default_and_warns_otherwise(model, tokenizer, monkeypatch, capsys):
    import uvicorn

    from lanterne.server import serve as serving

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **options: calls.append((host, port)))
    serving.serve(model, tokenizer, "tiny", compile=False)
    assert calls[-1] == ("127.0.0.1", 8000) and "warning" not in capsys.readouterr().err
    serving.serve(model, tokenizer, "tiny", host="0.0.0.0", port=8123, compile=False)
    assert calls[-1] == ("0.0.0.0", 8123) and "warning: listening on 0.0.0.0" in capsys.readouterr().err
    assert serving.is_loopback("::1") and serving.is_loopback("localhost") and not serving.is_loopback("192.168.1.5")


# -- a class at once --------------------------------------------------------------------------------


def test_views_are_answered_while_eight_generations_run_and_identical_views_share_one_computation(slow_model, tokenizer):
    app = create_app(slow_model, tokenizer, NAME, Limits(slots=8, max_new_tokens=300))
    with running(app) as base_url, httpx.Client(base_url=base_url, trust_env=False, timeout=30) as http:
        streams = [http.stream("POST", COMPLETIONS, json={"prompt": "le", "max_tokens": 300, "stream": True, "seed": index})
                   for index in range(8)]
        responses = [stream.__enter__() for stream in streams]
        try:
            assert wait_until(lambda: app.state.engine.running == 8, 10)
            first = http.post("/api/next-word", json={"text": "le petit chat"})
            # 300 tokens at 20 ms a step: the view is answered between two of their steps, while all 8 still run.
            assert first.status_code == 200 and app.state.engine.running == 8
            computed = app.state.view_cache.misses
            assert http.post("/api/next-word", json={"text": "le petit chat"}).json() == first.json()
            assert app.state.view_cache.misses == computed and app.state.view_cache.hits >= 1
            status = http.get("/api/status").json()
            assert status["running"] == 8 and status["waiting"] == 0 and status["slots"] >= 8 and status["view_cache_hits"] >= 1
            metrics = http.get("/metrics")
            assert metrics.headers["content-type"].startswith("text/plain")
            assert "lanterne_generations_running 8" in metrics.text and "# TYPE lanterne_tokens_per_second gauge" in metrics.text
        finally:
            for stream in streams:
                stream.__exit__(None, None, None)
        assert wait_until(lambda: app.state.engine.running == 0, 2), "hanging up frees every slot at the next step"


def test_a_seeded_completion_is_the_same_alone_and_among_eight(model, tokenizer):
    app = create_app(model, tokenizer, NAME, Limits(slots=8))
    body = {"prompt": "le petit", "max_tokens": 12, "temperature": 0.9, "seed": 3}
    with running(app) as base_url, httpx.Client(base_url=base_url, trust_env=False, timeout=30) as http:
        alone = http.post(COMPLETIONS, json=body).json()["choices"][0]["text"]

        def ask(seed):
            return http.post(COMPLETIONS, json={**body, "seed": seed}).json()["choices"][0]["text"]

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(8) as pool:
            together = list(pool.map(ask, range(8)))
    assert together[3] == alone
