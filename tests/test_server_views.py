"""The explorer's JSON endpoints, figures and pages (`lanterne.server.views`) over a small random model.

Every endpoint answers what `lanterne.inspect` computes for the same text; every bad request is a 4xx
in OpenAI's error shape, never a 500; every figure is a real PNG or SVG; no page names a network address.
"""

from __future__ import annotations

import io
import math
import re
from importlib import resources
from types import SimpleNamespace

import pytest
import torch
from fastapi.testclient import TestClient

from lanterne.model.config import GPTConfig
from lanterne.inspect import embeddings, logit_lens, next_word
from lanterne.inspect.recording import record
from lanterne.inspect.tokens import tokenization_view
from lanterne.generation.sampling import entropy, next_token_distribution
from lanterne.server.app import create_app
from lanterne.server.limits import Limits
from lanterne.inspect.next_word import SLIDER_TEMPERATURES
from lanterne.server.views import FIGURES
from lanterne.tokenization import train
from lanterne.model.transformer import GPT

TEXT = (
    "Le soleil se lève à l'est et se couche à l'ouest. Le roi et la reine, l'homme et la femme, le chat et le chien. "
    "The sun rises in the east and sets in the west. The king and the queen, the man and the woman, the cat and the dog. "
) * 20
SENTENCE = "Le soleil se lève à l'est et se couche à"
LONG = "Le roi et la reine regardent le soleil. " * 5  # more tokens than the context (64), fewer than the limit (400)
MAP = ["roi", "reine", "homme", "femme"]


@pytest.fixture(scope="module")
def served():
    tokenizer = train("bpe", TEXT, 300)
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("llama", vocab_size=320, context_length=64, d_model=32, n_heads=4, n_kv_heads=2, n_layers=2, d_ff=48))
    app = create_app(model, tokenizer, "tiny", Limits(max_prompt_tokens=400, max_text_characters=2_000))
    with TestClient(app) as client:
        yield SimpleNamespace(client=client, model=model, tokenizer=tokenizer)


def post(served, path: str, body: dict, status: int = 200) -> dict:
    response = served.client.post(path, json=body)
    assert response.status_code == status, response.text
    return response.json()


def test_info_names_the_model_its_shape_and_what_the_page_offers(served):
    info = served.client.get("/api/info").json()
    assert info["model_name"] == "tiny"
    assert info["config"]["n_layers"] == 2 and info["config"]["n_heads"] == 4 and info["config"]["context_length"] == 64
    assert info["languages"] == ["fr", "en"]
    assert info["chat"] is False  # a BPE trained here has no chat template
    assert info["tokenizer"] == {"kind": "bpe", "vocab_size": served.tokenizer.vocab_size}
    assert info["limits"]["max_prompt_tokens"] == 400
    assert set(info["examples"]["murder_mystery"]) == {"fr", "en"}
    assert info["figures"] == list(FIGURES)
    assert info["parameters"] == sum(p.numel() for p in served.model.parameters())


def test_tokenize_answers_the_tokenization_view(served):
    data = post(served, "/api/tokenize", {"text": SENTENCE, "named": []})
    assert data == tokenization_view(SENTENCE, served.tokenizer, named=[]).as_dict(max_tokens=500)
    assert [row["name"] for row in data["rows"]] == ["characters", "words", "model"]
    shown = post(served, "/api/tokenize", {"text": SENTENCE, "named": [], "max_tokens": 3})
    assert all(len(row["tokens"]) <= 3 for row in shown["rows"]) and shown["rows"][0]["count"] == len(SENTENCE)


def test_embeddings_answer_the_word_the_map_and_the_analogy(served):
    data = post(served, "/api/embeddings", {"word": "roi", "neighbours": 5, "map_words": MAP, "analogy": ["roi", "homme", "femme"]})
    assert data["word"] == embeddings.embedding_view(served.model, served.tokenizer, "roi", 5).as_dict()
    assert data["map"]["words"] == MAP and len(data["map"]["x"]) == 4
    assert len(data["analogy"]["neighbours"]) == 5
    alone = post(served, "/api/embeddings", {"word": "roi"})
    assert alone["map"] is None and alone["analogy"] is None and len(alone["word"]["neighbours"]) == 10


def test_next_word_sends_what_the_page_needs_for_the_exact_distribution_at_every_temperature(served):
    data = post(served, "/api/next-word", {"text": SENTENCE, "top": 30})
    recording = record(served.model, served.tokenizer, SENTENCE)
    assert data["table"] == next_word.next_word_view(recording, served.tokenizer, top=20).as_dict()
    slider = data["slider"]
    logits = recording.logits[-1][: served.tokenizer.vocab_size].double()
    assert slider["vocab_size"] == served.tokenizer.vocab_size and len(slider["logits"]) == 30
    assert slider["rest_count"] == slider["vocab_size"] - 30 and slider["temperatures"] == list(SLIDER_TEMPERATURES)
    top = torch.tensor(slider["logits"], dtype=torch.float64)
    for temperature in (0.05, 0.3, 1.0, 1.37, 2.0):
        index = slider["temperatures"].index(temperature)
        rest_lse, rest_mean = slider["rest_lse"][index], slider["rest_mean_logit"][index]
        # What explorer.js computes: Z = logsumexp(top / T, rest_lse); p = exp(top / T - Z); H = Z - E[logit] / T.
        z = torch.logsumexp(torch.cat([top / temperature, torch.tensor([rest_lse], dtype=torch.float64)]), dim=0)
        shown = torch.exp(top / temperature - z)
        rest = math.exp(rest_lse - float(z))
        nats = float(z) - (float((shown * top).sum()) + rest * rest_mean) / temperature
        expected = next_token_distribution(logits, temperature=temperature).double()  # float32 there
        assert torch.allclose(shown, expected[slider["ids"]], atol=1e-6)
        assert rest == pytest.approx(1 - float(expected[slider["ids"]].sum()), abs=1e-5)
        assert nats / math.log(2) == pytest.approx(float(entropy(expected)), abs=1e-6)


def test_attention_answers_a_head_the_average_or_the_most_focused_head(served):
    chosen = post(served, "/api/attention", {"text": SENTENCE, "layer": 1, "head": 3})
    assert (chosen["layer"], chosen["head"], chosen["key_value_head"], chosen["query_groups"]) == (1, 3, 1, 2)
    weights = torch.tensor(chosen["weights"])
    assert torch.allclose(weights.sum(dim=1), torch.ones(len(weights)), atol=1e-3)
    assert torch.equal(torch.triu(weights, 1), torch.zeros_like(weights))  # nothing looks ahead
    assert chosen["looks"][0]["weight"] == pytest.approx(max(chosen["weights"][-1]), abs=1e-4)  # where the last token looks most
    average = post(served, "/api/attention", {"text": SENTENCE, "layer": -1, "average": True})
    assert average["head"] is None and average["layer"] == 1 and average["scores"] is None
    focused = post(served, "/api/attention", {"text": SENTENCE})
    assert [focused["layer"], focused["head"]] == focused["most_focused"]
    mystery = post(served, "/api/attention", {"text": served.client.get("/api/info").json()["examples"]["murder_mystery"]["fr"]})
    assert mystery["dropped"] > 0 and len(mystery["weights"]) == 64 and mystery["shown_from"] == 0


def test_lens_answers_the_logit_lens_and_the_feedforward_contributions(served):
    data = post(served, "/api/lens", {"text": SENTENCE})
    recording = record(served.model, served.tokenizer, SENTENCE)
    assert data["lens"] == logit_lens.logit_lens(served.model, recording, served.tokenizer).as_dict()
    assert data["lens"]["layers"] == ["embeddings", "layer 0", "layer 1"]
    ff = data["feedforward"]
    assert ff["shape"]["d_ff"] == 48 and ff["shape"]["gated"] and len(ff["feedforward_norms"]) == 2
    assert len(ff["feedforward_norms"][0]) == len(recording.ids) and ff["layer"] == 1
    cut = post(served, "/api/lens", {"text": LONG, "layer": 0})
    assert cut["dropped"] > 0 and cut["feedforward"]["layer"] == 0 and len(cut["lens"]["tokens"]) == 64


def test_context_answers_the_fit_the_table_and_the_cost(served):
    fits = post(served, "/api/context", {"text": SENTENCE, "measure_cost": False})
    assert fits["fits"] and fits["context_length"] == 64 and fits["cost"] == [] and fits["model_name"] == "tiny"
    assert any(row["name"] == "GPT-4" for row in fits["rows"]) and any(row["source"] == "model" for row in fits["rows"])
    cut = post(served, "/api/context", {"text": LONG, "cost_tokens": 32})
    assert not cut["fits"] and cut["dropped_tokens"] > 0 and cut["dropped_text"]
    assert [cost["length"] for cost in cut["cost"]] == [16, 32]


def test_temperature_answers_the_curves_the_filters_and_samples(served):
    data = post(served, "/api/temperature", {"text": SENTENCE, "top": 3, "samples": True, "max_new_tokens": 4, "seed": 1})
    assert len(data["curves"]["candidates"]) == 3 and data["curves"]["temperatures"][-1] == 2.0
    assert {effect["filter"] for effect in data["filters"]["effects"]} == {"top-k", "top-p", "min-p"}
    assert len(data["samples"]["texts"]) == 3
    assert post(served, "/api/temperature", {"text": SENTENCE})["samples"] is None


@pytest.mark.parametrize(
    "path, body, status, message",
    [
        ("/api/tokenize", {"text": ""}, 422, "the text is empty"),
        ("/api/next-word", {"text": "   "}, 422, "the text is empty"),
        ("/api/attention", {"text": "é" * 2_001}, 400, "2,001 characters; this server reads at most 2,000"),
        ("/api/lens", {"text": "roi " * 501}, 400, "this server reads at most 2,000"),
        ("/api/attention", {"text": SENTENCE, "layer": 2}, 400, "layer 2 does not exist: this model has layers 0 to 1"),
        ("/api/attention", {"text": SENTENCE, "layer": -3}, 400, "layer -3 does not exist"),
        ("/api/attention", {"text": SENTENCE, "layer": 0, "head": 4}, 400, "head 4 does not exist: this model has heads 0 to 3"),
        ("/api/attention", {"text": SENTENCE, "head": -1}, 400, "head -1 does not exist"),
        ("/api/lens", {"text": SENTENCE, "layer": 7}, 400, "layer 7 does not exist"),
        ("/api/attention", {"text": SENTENCE, "layer": "one"}, 422, "layer"),
        ("/api/next-word", {"text": SENTENCE, "top": 0}, 422, "top"),
        ("/api/next-word", {"text": SENTENCE, "temperature": 1}, 422, "temperature: Extra inputs are not permitted"),
        ("/api/next-word", {}, 422, "text: Field required"),
        ("/api/tokenize", {"text": SENTENCE, "named": ["klingon"]}, 422, "unknown vocabulary 'klingon'"),
        ("/api/tokenize", {"text": SENTENCE, "lang": "de"}, 422, "lang"),
        ("/api/embeddings", {"word": ""}, 422, "word"),
        ("/api/embeddings", {"word": "   "}, 422, "the text is empty"),
        ("/api/embeddings", {"word": "roi", "map_words": ["roi", "reine"]}, 422, "a map needs no words or at least 3"),
        ("/api/embeddings", {"word": "roi", "analogy": ["roi", "homme"]}, 422, "analogy"),
        ("/api/context", {"text": SENTENCE, "cost_tokens": 1_000_000}, 422, "cost_tokens"),
        ("/api/temperature", {"text": SENTENCE, "max_new_tokens": 0}, 422, "max_new_tokens"),
    ],
)
def test_bad_requests_are_4xx_errors_in_openai_shape_with_a_message(served, path, body, status, message):
    error = post(served, path, body, status)["error"]
    assert message in error["message"] and error["type"] == "invalid_request_error"


def test_a_body_that_is_not_json_is_refused(served):
    for path in ("/api/tokenize", "/api/figure/tokenization.png"):
        response = served.client.post(path, content=b"{not json", headers={"Content-Type": "application/json"})
        assert response.status_code == 400, path
        assert response.json()["error"]["message"] == "the request body is not valid JSON (at character 1); send a JSON object"


FIGURE_BODIES = {
    "tokenization": {"text": SENTENCE, "named": []},
    "embedding-neighbours": {"word": "roi"},
    "embedding-map": {"word": "roi", "map_words": MAP},
    "next-word": {"text": SENTENCE},
    "attention": {"text": SENTENCE, "layer": 0, "head": 1},
    "attention-looks": {"text": SENTENCE, "average": True, "position": 3},
    "lens": {"text": SENTENCE},
    "feedforward": {"text": SENTENCE},
    "context": {"text": LONG, "measure_cost": False},
    "context-cost": {"text": SENTENCE, "cost_tokens": 16},
    "temperature": {"text": SENTENCE},
    "filters": {"text": SENTENCE},
}


def test_every_figure_has_a_request_in_this_test():
    assert set(FIGURE_BODIES) == set(FIGURES)


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_every_figure_comes_as_a_real_png_and_svg(served, name):
    import matplotlib.image

    png = served.client.post(f"/api/figure/{name}.png", json={**FIGURE_BODIES[name], "lang": "fr"})
    assert png.status_code == 200, png.text
    assert png.headers["content-type"] == "image/png" and png.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert f'filename="lanterne-{name}.png"' in png.headers["content-disposition"]
    assert matplotlib.image.imread(io.BytesIO(png.content), format="png").std() > 0.05, f"{name} is blank"
    svg = served.client.post(f"/api/figure/{name}.svg", json={**FIGURE_BODIES[name], "lang": "en"})
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    assert b"<svg" in svg.content[:2_000] and svg.content.rstrip().endswith(b"</svg>") and len(svg.content) > 5_000


def test_a_figure_can_be_asked_for_by_a_plain_link(served):
    response = served.client.get("/api/figure/embedding-map.svg", params=[("word", "roi"), *[("map_words", word) for word in MAP], ("lang", "fr")])
    assert response.status_code == 200 and b"ACP" in response.content  # the French label
    response = served.client.get("/api/figure/attention.png", params={"text": SENTENCE, "layer": "1", "head": "0"})
    assert response.status_code == 200 and response.content.startswith(b"\x89PNG")


@pytest.mark.parametrize(
    "method, path, body, status, message",
    [
        ("post", "/api/figure/nothing.png", {"text": SENTENCE}, 404, "no figure 'nothing'; the figures are tokenization"),
        ("get", "/api/figure/attention.jpg", None, 404, "NAME.png or NAME.svg"),
        ("post", "/api/figure/attention", {"text": SENTENCE}, 404, "NAME.png or NAME.svg"),
        ("post", "/api/figure/attention.png", {"text": SENTENCE, "layer": 9}, 400, "layer 9 does not exist"),
        ("post", "/api/figure/attention.png", {"text": ""}, 422, "the text is empty"),
        ("post", "/api/figure/attention.png", {"text": SENTENCE, "lang": "de"}, 422, "lang"),
        ("post", "/api/figure/attention.png", [1, 2], 422, "a JSON object"),
        ("post", "/api/figure/embedding-map.png", {"word": "roi"}, 400, "this figure needs map_words"),
        ("post", "/api/figure/context-cost.png", {"text": SENTENCE, "measure_cost": False}, 400, "the cost was not measured"),
        ("get", "/api/figure/attention.png?text=roi&colour=red", None, 422, "colour: Extra inputs are not permitted"),
    ],
)
def test_bad_figure_requests_are_refused_with_a_message(served, method, path, body, status, message):
    response = served.client.post(path, json=body) if method == "post" else served.client.get(path)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]["message"]


def static_files() -> list[str]:
    return sorted(entry.name for entry in (resources.files("lanterne.server") / "static").iterdir() if entry.is_file())


def test_the_page_and_everything_it_loads_come_from_the_package_with_no_network_address(served):
    page = served.client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    loaded = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    assert {"/static/explorer.js", "/static/generate.js", "/static/explorer.css", "/static/i18n.js", "/static/charts.js"} <= set(loaded)
    for path in loaded:
        assert served.client.get(path).status_code == 200, path
    assert static_files() == sorted(["charts.js", "docs.css", "docs.html", "docs.js", "explorer.css", "explorer.js", "generate.js", "i18n.js", "index.html"])
    for name in static_files():
        response = served.client.get(f"/static/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"].split(";")[0] in ("text/html", "text/javascript", "text/css")
        assert "http://" not in response.text and "https://" not in response.text, name
        assert not re.search(r"""(src|href|action)\s*=\s*["']?//|url\(\s*["']?//|@import""", response.text), name  # nor //host/...
    for tab in ("tokens", "embeddings", "next", "attention", "layers", "context", "generate"):
        assert f'data-tab="{tab}"' in page.text and f'id="tab-{tab}"' in page.text


def test_the_api_documentation_is_offline(served):
    docs = served.client.get("/docs")
    assert docs.status_code == 200 and "http://" not in docs.text and "https://" not in docs.text
    assert "/static/docs.js" in docs.text
    redoc = served.client.get("/redoc")  # FastAPI's other page, from a CDN too: absent
    assert redoc.status_code == 404 or ("http://" not in redoc.text and "https://" not in redoc.text)
    schema = served.client.get("/openapi.json").json()
    for path in ("/api/info", "/api/tokenize", "/api/embeddings", "/api/next-word", "/api/attention", "/api/lens", "/api/context",
                 "/api/temperature", "/api/figure/{name}"):
        assert path in schema["paths"], path
    assert "http://" not in str(schema) and "https://" not in str(schema)


@pytest.mark.parametrize("name", ["../views.py", ".hidden.js", "nothing.js", "index.py", "%2e%2e%2fviews.py"])
def test_only_the_explorer_files_are_served(served, name):
    assert served.client.get(f"/static/{name}").status_code == 404
