"""The explorer page driven in a real headless Chromium, against a real uvicorn server on loopback.

Every tab is drawn and photographed (not blank), the temperature slider redraws the bars with no
request and gives the exact distribution, the language button switches French and English, a
figure downloads, generation streams, the page fits a phone, and nothing is asked of the network.
Skipped where Debian's chromium is absent (`apt-get install chromium`); Playwright's own browser
download is never used.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
import torch

from lanterne.model.config import GPTConfig
from lanterne.inspect.recording import record
from lanterne.generation.sampling import entropy, next_token_distribution
from lanterne.server.app import create_app
from lanterne.tokenization import train
from lanterne.model.transformer import GPT

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TEXT = (
    "Le soleil se lève à l'est et se couche à l'ouest. Le roi et la reine, l'homme et la femme, le chat et le chien. "
    "The sun rises in the east and sets in the west. The king and the queen, the man and the woman, the cat and the dog. "
) * 20
SENTENCE = "The sun rises in the east and sets in the"
WAIT_MS = 60_000

sync_api = pytest.importorskip("playwright.sync_api")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    import uvicorn

    tokenizer = train("bpe", TEXT, 300)
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("llama", vocab_size=320, context_length=64, d_model=32, n_heads=4, n_kv_heads=2, n_layers=2, d_ff=48))
    app = create_app(model, tokenizer, "tiny")
    port = free_port()
    uvicorn_server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uvicorn_server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uvicorn_server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the uvicorn server did not start")
        time.sleep(0.05)
    yield {"url": f"http://127.0.0.1:{port}", "model": model, "tokenizer": tokenizer}
    uvicorn_server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium (apt-get install chromium) to run the browser test")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    """A page in English, with every request outside the server refused and recorded, and every script error recorded."""
    context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.outside, page.errors, page.api_calls = [], [], []

    def only_the_server(route):
        if route.request.url.startswith(server["url"] + "/") or route.request.url.startswith("data:"):
            route.continue_()
        else:
            page.outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_server)
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.on("console", lambda message: page.errors.append(message.text) if message.type == "error" else None)
    page.on("request", lambda request: page.api_calls.append(request.url) if "/api/" in request.url else None)
    yield page
    assert page.outside == [], f"the page asked the network for {page.outside}"
    assert page.errors == [], page.errors
    context.close()


def open_tab(page, tab: str, ready: str) -> None:
    page.click(f"[data-tab={tab}]")
    page.wait_for_selector(f"#tab-{tab}.active")
    page.wait_for_selector(ready, state="attached")


def assert_not_blank(path: Path) -> None:
    import matplotlib.image

    image = matplotlib.image.imread(path)
    assert image.std() > 0.05, f"{path.name} looks blank (std {image.std():.3f})"


def test_every_tab_draws_its_slide(page, server, tmp_path):
    page.goto(server["url"] + "/")
    page.wait_for_selector("#tokens-rows .token")
    assert page.locator("#model-name").inner_text() == "tiny"
    page.fill("#text", SENTENCE)
    page.click("#compute")
    page.wait_for_function("document.querySelector('#tokens-rows').textContent.includes('␣sun') || "
                           "document.querySelector('#tokens-rows').textContent.includes('sun')")
    assert page.locator("#tokens-table tbody tr").count() >= 3  # characters, words, this model (and the published ones here)
    tabs = {
        "tokens": "#tokens-table td",
        "embeddings": "#embedding-map svg circle",
        "next": "#next-bars .bar",
        "attention": "#attention-tokens .token-choice",
        "layers": "#lens-table td",
        "context": "#context-cost-chart svg path",
        "generate": "#generate-prompt",
    }
    for tab, ready in tabs.items():
        open_tab(page, tab, ready)
        page.wait_for_function("!document.body.classList.contains('busy')")
        shot = tmp_path / f"{tab}.png"
        page.screenshot(path=str(shot), full_page=True)
        assert_not_blank(shot)
    assert page.locator("#embedding-map svg circle").count() == 10  # the map's ten words
    assert page.locator("#embedding-neighbours .bar-row").count() == 10
    assert page.locator("#lens-table tbody tr").count() == 3  # embeddings and the two layers
    assert page.locator("#ff-table tbody tr").count() == 2 + 2 * 2  # two sections of two layers
    assert "fits in the context" in page.locator("#context-summary").inner_text()
    assert page.locator("#generate-prompt").input_value() == SENTENCE  # carried over from the shared text


def test_the_temperature_slider_redraws_the_exact_distribution_without_a_request(page, server):
    page.goto(server["url"] + "/#next")
    page.fill("#text", SENTENCE)
    page.click("#compute")
    page.wait_for_function(f"window.Lanterne.explorer.results.next && window.Lanterne.explorer.results.next.table.prompt === {SENTENCE!r}")
    widths = lambda: page.eval_on_selector_all("#next-bars .bar", "bars => bars.map(bar => parseFloat(bar.style.width))")  # noqa: E731
    before, calls = widths(), len(page.api_calls)
    page.locator("#temperature").fill("0.3")
    sharp = widths()
    page.locator("#temperature").fill("1.8")
    flat = widths()
    assert page.locator("#temperature-value").inner_text() == "1.80"
    assert before != sharp != flat and len(sharp) == 16  # 15 candidates and the others
    assert len(page.api_calls) == calls, "moving the slider sent a request"
    page.locator("#temperature").fill("0")
    assert "greedy" in page.locator("#next-summary").inner_text()
    assert widths()[0] == 100

    # The page's arithmetic against the sampling code's, on the server's own model.
    recording = record(server["model"], server["tokenizer"], SENTENCE)
    logits = recording.logits[-1][: server["tokenizer"].vocab_size]
    for temperature, top_k in ((0.3, 0), (1.0, 0), (1.7, 0), (1.0, 5), (0.05, 3)):
        shown = page.evaluate("([t, k]) => { const s = Lanterne.explorer.results.next.slider; const d = Lanterne.distribution(s, t, k, 1);"
                              " return {ids: s.ids, p: d.probabilities, rest: d.rest, entropy: d.entropy, kept: d.kept}; }", [temperature, top_k])
        expected = next_token_distribution(logits, temperature=temperature, top_k=top_k)
        assert torch.allclose(torch.tensor(shown["p"], dtype=torch.float64), expected[shown["ids"]].double(), atol=1e-6)
        assert shown["rest"] == pytest.approx(1 - float(expected[shown["ids"]].sum()), abs=1e-5)
        assert shown["entropy"] == pytest.approx(float(entropy(next_token_distribution(logits, temperature=temperature))), abs=1e-4)
        assert shown["kept"] == int((expected > 0).sum())
    # Top-p, where the kept set lies within the candidates sent: exactly the sampling code's.
    for temperature, top_p in ((0.05, 0.5), (0.1, 0.9)):
        shown = page.evaluate("([t, p]) => { const s = Lanterne.explorer.results.next.slider; const d = Lanterne.distribution(s, t, 0, p);"
                              " return {ids: s.ids, p: d.probabilities, exact: d.exact, kept: d.kept}; }", [temperature, top_p])
        expected = next_token_distribution(logits, temperature=temperature, top_p=top_p)
        if shown["exact"]:
            assert torch.allclose(torch.tensor(shown["p"], dtype=torch.float64), expected[shown["ids"]].double(), atol=1e-6)
            assert shown["kept"] == int((expected > 0).sum())
        else:
            assert int((expected > 0).sum()) > len(shown["ids"])  # the page says "more than": true
    page.locator("#temperature").fill("1")
    page.locator("#top-k").fill("3")
    assert sum(width > 0 for width in widths()[:15]) == 3 and widths()[-1] == 0  # three kept, the others cut


def test_the_language_follows_the_browser_and_the_button_switches_it(page, server, browser):
    page.goto(server["url"] + "/")
    page.wait_for_selector("#tokens-rows .token")
    assert page.locator("[data-tab=tokens]").inner_text() == "1. Tokenization"
    assert page.locator("html").get_attribute("lang") == "en"
    page.click("#language")
    assert page.locator("[data-tab=tokens]").inner_text() == "1. Tokenisation"
    assert page.locator("#compute").inner_text() == "Calculer"
    assert page.locator("html").get_attribute("lang") == "fr"
    assert "jetons" in page.locator("#tokens-table thead").inner_text()  # drawn again, in French
    assert page.locator("#text").input_value().startswith("Le chat")  # the example follows the language
    page.click("#language")
    assert page.locator("[data-tab=next]").inner_text() == "3. Next word"
    french = browser.new_context(locale="fr-FR")
    try:
        other = french.new_page()
        other.goto(server["url"] + "/")
        other.wait_for_selector("#tokens-rows .token", timeout=WAIT_MS)
        assert other.locator("[data-tab=context]").inner_text() == "6. Longueur de contexte"
    finally:
        french.close()


def test_the_murder_mystery_and_a_head_are_one_click_away(page, server):
    page.goto(server["url"] + "/#attention")
    page.wait_for_selector("#attention-tokens .token-choice")
    page.click("#murder-mystery")
    page.wait_for_function("document.querySelectorAll('#attention-tokens .token-choice').length === 64")
    assert "murderer was" in page.locator("#text").input_value()
    assert "(the last 64 of" not in page.locator("#attention-summary").inner_text()  # the model read 64: all shown
    page.select_option("#attention-layer", "0")
    page.select_option("#attention-head", "2")
    page.wait_for_function("window.Lanterne.explorer.results.attention.layer === 0 && window.Lanterne.explorer.results.attention.head === 2")
    assert page.locator("#attention-summary").inner_text().startswith("Layer 0, head 2 (keys/values of head 1")
    page.select_option("#attention-head", "average")
    page.wait_for_function("window.Lanterne.explorer.results.attention.head === null")
    page.locator("#attention-tokens .token-choice").nth(10).click()
    assert "#10" in page.locator("#attention-looks").inner_text() or page.locator("#attention-looks .bar-row").count() > 1
    with page.expect_download() as download:
        page.locator("#tab-attention a[data-figure=attention][data-format=png]").click()
    path = download.value.path()
    assert download.value.suggested_filename == "lanterne-attention.png"
    assert Path(path).read_bytes().startswith(b"\x89PNG")
    assert_not_blank(Path(path))


def test_generation_streams_into_the_page(page, server):
    import httpx

    assert httpx.post(server["url"] + "/v1/completions", json={}).status_code != 404, "the OpenAI-compatible /v1/completions is not there"
    page.goto(server["url"] + "/#generate")
    page.fill("#generate-prompt", SENTENCE)
    page.fill("#generate-max", "12")
    page.fill("#generate-seed", "7")
    page.click("#generate-start")
    page.wait_for_function("document.querySelector('#generate-status').textContent.includes('pieces in')")
    first = page.locator("#generate-output .generated").inner_text()
    assert first and page.locator("#generate-output .prompt-echo").inner_text() == SENTENCE
    page.click("#generate-start")  # the same seed: the same text
    page.wait_for_function("document.querySelector('#generate-start').disabled === false && "
                           "document.querySelector('#generate-status').textContent.includes('pieces in')")
    assert page.locator("#generate-output .generated").inner_text() == first


def test_the_page_fits_a_phone(browser, server):
    context = browser.new_context(locale="en-US", viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.goto(server["url"] + "/")
        page.wait_for_selector("#tokens-rows .token")
        for tab in ("tokens", "next", "context", "generate"):
            page.evaluate(f"window.Lanterne.showTab({tab!r})")
            page.wait_for_function("!document.body.classList.contains('busy')")
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"the {tab} tab is {overflow} px wider than a phone"
    finally:
        context.close()


def test_the_api_page_draws_the_openapi_schema_offline(page, server):
    import httpx

    if "/static/docs.js" not in httpx.get(server["url"] + "/docs").text:
        pytest.fail("/docs is FastAPI's Swagger UI, loaded from a CDN: create_app must pass docs_url=None, redoc_url=None")
    page.goto(server["url"] + "/docs")
    page.wait_for_selector(".operation")
    assert "/api/next-word" in page.locator("#operations").inner_text()
    assert page.locator(".operation").count() >= 10
