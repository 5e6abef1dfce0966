// The Generate tab: streamed text from the OpenAI-compatible API (/v1/completions, or /v1/chat/completions
// when the model has a chat template), read as server-sent events with fetch and a ReadableStream.
"use strict";

const Generate = {
  info: null,
  controller: null,

  setup(info) {
    this.info = info;
    const chat = $("generate-chat");
    chat.disabled = !info.chat;
    chat.checked = false;
    chat.parentElement.title = info.chat ? "" : t("no_chat");
    $("generate-max").max = String(info.limits.max_new_tokens);
  },

  refresh() {
    if (this.info) $("generate-chat").parentElement.title = this.info.chat ? "" : t("no_chat");
  },

  // The request: OpenAI's fields, and Lanterne's other sampling settings only where they change something.
  body() {
    const number = (id) => Number($(id).value);
    const prompt = $("generate-prompt").value;
    const body = {
      model: this.info.model_name,
      max_tokens: number("generate-max"),
      temperature: number("generate-temperature"),
      top_p: number("generate-top-p"),
      stream: true,
    };
    if ($("generate-seed").value !== "") body.seed = number("generate-seed");
    if (number("generate-top-k") > 0) body.top_k = number("generate-top-k");
    if (number("generate-min-p") > 0) body.min_p = number("generate-min-p");
    if (number("generate-repetition") !== 1) body.repetition_penalty = number("generate-repetition");
    if ($("generate-chat").checked) body.messages = [{ role: "user", content: prompt }];
    else body.prompt = prompt;
    return body;
  },

  async start() {
    const chat = $("generate-chat").checked;
    const body = this.body();
    const output = $("generate-output");
    output.querySelector(".prompt-echo").textContent = chat ? "" : body.prompt;
    const generated = output.querySelector(".generated");
    generated.textContent = "";
    const status = $("generate-status");
    status.classList.remove("error");
    status.textContent = t("generating");
    this.controller = new AbortController();
    $("generate-start").disabled = true;
    $("generate-stop").disabled = false;
    const started = performance.now();
    let pieces = 0;
    try {
      const response = await fetch(chat ? "/v1/chat/completions" : "/v1/completions", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), signal: this.controller.signal,
      });
      if (!response.ok) {
        const data = await response.json().catch(() => null);
        throw new Error((data && data.error && data.error.message) || `${response.status} ${response.statusText}`);
      }
      for await (const event of this.events(response)) {
        if (event.error) throw new Error(event.error.message || String(event.error));
        const choice = event.choices && event.choices[0];
        const piece = choice ? (chat ? (choice.delta && choice.delta.content) || "" : choice.text || "") : "";
        if (piece) {
          generated.textContent += piece;
          pieces += 1;
        }
      }
      status.textContent = t("generated", pieces, I18N.number((performance.now() - started) / 1000, 1));
    } catch (error) {
      if (error.name === "AbortError") status.textContent = t("stopped");
      else {
        status.textContent = t("error", error.message);
        status.classList.add("error");
      }
    } finally {
      $("generate-start").disabled = false;
      $("generate-stop").disabled = true;
      this.controller = null;
    }
  },

  // Each `data: {json}` event of the stream, until `data: [DONE]`.
  async *events(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
      const blocks = buffer.split(/\r?\n\r?\n/);
      buffer = done ? "" : blocks.pop();
      for (const block of blocks) {
        const data = block.split(/\r?\n/).filter((line) => line.startsWith("data:")).map((line) => line.slice(5).trim()).join("\n");
        if (!data) continue;
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
      if (done) return;
    }
  },

  stop() {
    if (this.controller) this.controller.abort();
  },
};

window.Generate = Generate;
$("generate-start").addEventListener("click", () => Generate.start());
$("generate-stop").addEventListener("click", () => Generate.stop());
