"""A class at once: simulated students against `lanterne serve` and llama.cpp's OpenAI-compatible server.

Each server runs in its own process on loopback, on the same GGUF file, with 2 threads. Each student
(an asyncio task with its own httpx connection) asks `/api/next-word` and `/api/attention` for one of 6
sentences (Lanterne only: llama.cpp has no slides), then streams a 48-token `/v1/completions` at
T = 0.8 with their own seed. All press the button together. Measured per student: every status, the
time to the first streamed token, the whole answer, and whether it came whole (48 tokens,
finish_reason "length").

1. one student alone, on the same server (the reference for the aggregate: its completion's tokens/s);
2. 30 students (the goals below), and the same 30 with their completions only (the peer's scenario);
3. 100 students (Lanterne): no 5xx, every refusal a 429 with Retry-After, nobody waiting past
   queue_seconds, the server's peak memory;
4. the peer, llama.cpp's server (`python -m llama_cpp.server --n_threads 2`), with its default and with
   `--interrupt_requests False`, on the 30 students' completions, and one student alone.

    .venv/bin/python benchmarks/classroom.py            # writes benchmarks/results/classroom.json
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib.util
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

SENTENCES = [
    "Le soleil se lève à l'est et se couche à",
    "The cat sat on the mat because it was",
    "La capitale de la France est",
    "Once upon a time, in a small village,",
    "Le chat dort sur le tapis parce qu'il",
    "Attention is all you",
]
NEW_TOKENS = 48
TEMPERATURE = 0.8
GOALS = {"refused_or_5xx": 0, "complete": "30 of 30", "first_token_p95_s": 10.0, "whole_class_s": 60.0, "aggregate_vs_alone": 4.0,
         "peer": "first-token p95 and whole class >= 3x better than llama.cpp one at a time"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """A server process on loopback; `ready()` waits for its first answer; stopped on exit, its peak memory read first."""

    def __init__(self, command: list[str], port: int, probe: str, log: Path) -> None:
        self.command, self.port, self.probe, self.log = command, port, probe, log
        self.base_url = f"http://127.0.0.1:{port}"

    def __enter__(self) -> "Server":
        self.started = time.monotonic()
        self.output = open(self.log, "w")
        self.process = subprocess.Popen(self.command, stdout=self.output, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def ready(self, seconds: float = 900) -> float:
        import httpx

        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.command[0]} exited ({self.process.returncode}); see {self.log}")
            try:
                if httpx.get(self.base_url + self.probe, timeout=2, trust_env=False).status_code == 200:
                    return time.monotonic() - self.started
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the server did not answer within {seconds:.0f} s; see {self.log}")

    def peak_memory_bytes(self) -> int | None:
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def __exit__(self, *exception) -> None:
        self.peak = self.peak_memory_bytes()
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.output.close()


async def student(http, index: int, views: bool, seed_base: int = 0) -> dict:
    """One student's clicks; every status and time, relative to the moment the whole class pressed the button."""
    start = time.monotonic()
    text = SENTENCES[index % len(SENTENCES)]
    record: dict = {"index": index, "statuses": [], "retry_after": [], "view_seconds": []}

    def note(response) -> None:
        record["statuses"].append(response.status_code)
        if response.status_code == 429:
            record["retry_after"].append(response.headers.get("Retry-After"))

    if views:
        for path in ("/api/next-word", "/api/attention"):
            began = time.monotonic()
            response = await http.post(path, json={"text": text})
            note(response)
            record["view_seconds"].append(time.monotonic() - began)
    body = {"prompt": text, "max_tokens": NEW_TOKENS, "temperature": TEMPERATURE, "seed": seed_base + index, "stream": True}
    began = time.monotonic()
    tokens, finish, first, text_out = 0, None, None, []
    async with http.stream("POST", "/v1/completions", json=body) as response:
        note(response)
        if response.status_code == 200:
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[len("data: "):])
                for choice in event.get("choices", []):
                    if choice.get("text"):
                        tokens += 1
                        text_out.append(choice["text"])
                        if first is None:
                            first = time.monotonic() - start
                    finish = choice.get("finish_reason") or finish
        else:
            await response.aread()
    record.update(first_token_s=first, completion_s=time.monotonic() - began, whole_s=time.monotonic() - start, chunks=tokens,
                  finish_reason=finish, text="".join(text_out))
    return record


async def classroom(base_url: str, students: int, views: bool, first: int = 0) -> dict:
    import httpx

    limits = httpx.Limits(max_connections=students + 10, max_keepalive_connections=students + 10)
    async with httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(300), limits=limits, trust_env=False) as http:
        start = time.monotonic()
        records = await asyncio.gather(*(student(http, index, views) for index in range(first, first + students)))
        elapsed = time.monotonic() - start
    return summary(records, elapsed)


def percentile(values: list[float], share: float) -> float | None:
    values = sorted(value for value in values if value is not None)
    if not values:
        return None
    return values[min(len(values) - 1, max(0, round(share * (len(values) - 1))))]


def summary(records: list[dict], elapsed: float) -> dict:
    statuses = [status for record in records for status in record["statuses"]]
    complete = [record for record in records if record["finish_reason"] == "length" and record["chunks"] >= NEW_TOKENS * 0.9]
    tokens = sum(record["chunks"] for record in records)
    return {
        "students": len(records),
        "whole_class_s": round(elapsed, 2),
        "refused_429": statuses.count(429),
        "server_errors_5xx": sum(status >= 500 for status in statuses),
        "other_errors": sum(400 <= status < 500 and status != 429 for status in statuses),
        "refusals_with_retry_after": sum(value is not None for record in records for value in record["retry_after"]),
        "complete": len(complete),
        "streamed_pieces": tokens,
        "aggregate_pieces_per_s": round(tokens / elapsed, 1),
        "first_token_p50_s": _round(percentile([record["first_token_s"] for record in records], 0.5)),
        "first_token_p95_s": _round(percentile([record["first_token_s"] for record in records], 0.95)),
        "whole_answer_p50_s": _round(percentile([record["whole_s"] for record in records], 0.5)),
        "completion_p50_s": _round(percentile([record["completion_s"] for record in records], 0.5)),
        "whole_answer_p95_s": _round(percentile([record["whole_s"] for record in records], 0.95)),
        "longest_wait_s": _round(max(record["whole_s"] for record in records)),
        "view_p50_s": _round(percentile([seconds for record in records for seconds in record["view_seconds"]], 0.5)),
        "view_p95_s": _round(percentile([seconds for record in records for seconds in record["view_seconds"]], 0.95)),
        "texts": [record["text"] for record in records],
    }


def _round(value):
    return None if value is None else round(value, 2)


def lanterne(model: str, log_folder: Path, students: list[int]) -> dict:
    port = free_port()
    command = [sys.executable, "-m", "lanterne.cli", "serve", "--model", model, "--port", str(port)]
    runs = {}
    with Server(command, port, "/api/info", log_folder / "lanterne-serve.log") as server:
        runs["start_s"] = round(server.ready(), 1)
        runs["alone"] = asyncio.run(classroom(server.base_url, 1, views=False))
        for count in students:
            runs[f"students_{count}"] = asyncio.run(classroom(server.base_url, count, views=True))
            print(f"  lanterne, {count} students: {short(runs[f'students_{count}'])}", flush=True)
        # The peer's scenario: the completions alone, no slides.
        runs[f"students_{students[0]}_completions_only"] = asyncio.run(classroom(server.base_url, students[0], views=False))
        print(f"  lanterne, {students[0]} students, completions only: {short(runs[f'students_{students[0]}_completions_only'])}", flush=True)
        # Seeded answers: the same text alone as among the class (students 3 and 17, alone again now).
        class_texts = runs[f"students_{students[0]}"]["texts"]
        runs["same_text_alone_and_in_class"] = all(
            asyncio.run(classroom(server.base_url, 1, views=False, first=index))["texts"][0] == class_texts[index] for index in (3, 17))
        import httpx

        runs["metrics"] = httpx.get(server.base_url + "/api/status", trust_env=False).json()
    runs["peak_memory_bytes"] = server.peak
    return runs


def llama_cpp(path: Path, log_folder: Path, students: int, interrupt: bool) -> dict:
    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("sse_starlette") is None:
        return {"skipped": "llama-cpp-python[server] is not installed: CMAKE_ARGS=\"-DGGML_NATIVE=ON\" pip install 'llama-cpp-python[server]==0.3.36'"}
    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(path), "--n_threads", "2", "--port", str(port), "--host", "127.0.0.1"]
    if not interrupt:
        command += ["--interrupt_requests", "False"]
    name = "default" if interrupt else "interrupt-false"
    with Server(command, port, "/v1/models", log_folder / f"llama-cpp-{name}.log") as server:
        runs = {"start_s": round(server.ready(), 1)}
        runs["alone"] = asyncio.run(classroom(server.base_url, 1, views=False))
        runs[f"students_{students}"] = asyncio.run(classroom(server.base_url, students, views=False))
    runs["peak_memory_bytes"] = server.peak
    return runs


def short(run: dict) -> str:
    return (f"{run['complete']}/{run['students']} whole, {run['refused_429']} × 429, {run['server_errors_5xx']} × 5xx, "
            f"first token p95 {run['first_token_p95_s']} s, class {run['whole_class_s']} s, {run['aggregate_pieces_per_s']} tok/s"
            + (f", views p95 {run['view_p95_s']} s" if run["view_p95_s"] is not None else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--crowd", type=int, default=100, help="the second, larger class (0: skip)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/classroom.json"))
    args = parser.parse_args(argv)
    from lanterne.files import atomic_write_text
    from lanterne.models import model_file
    from lanterne.tokenization.tiktoken_files import cache_folder

    logs = args.out.parent / "classroom-logs"
    logs.mkdir(parents=True, exist_ok=True)
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "settings": {"model": args.model, "new_tokens": NEW_TOKENS, "temperature": TEMPERATURE, "sentences": SENTENCES},
        "goals": GOALS,
    }
    print("lanterne serve ...", flush=True)
    report["lanterne"] = ours = lanterne(args.model, logs, [args.students] + ([args.crowd] if args.crowd else []))
    path = model_file(args.model, cache_folder())
    for interrupt in (True, False):
        name = "llama_cpp_default" if interrupt else "llama_cpp_interrupt_false"
        print(f"{name} ...", flush=True)
        report[name] = llama_cpp(path, logs, args.students, interrupt)
        if "skipped" not in report[name]:
            print(f"  {name}, {args.students} students: {short(report[name][f'students_{args.students}'])}", flush=True)
    class_ = ours[f"students_{args.students}"]
    same_scenario = ours[f"students_{args.students}_completions_only"]
    alone = ours["alone"]
    alone_rate = NEW_TOKENS / alone["completion_p50_s"] if alone["completion_p50_s"] else None
    ratios = {"aggregate_vs_alone": round(class_["aggregate_pieces_per_s"] / alone_rate, 2) if alone_rate else None,
              "alone_tokens_per_s": round(alone_rate, 1) if alone_rate else None}
    peer = report.get("llama_cpp_interrupt_false", {})
    if "skipped" not in peer and peer:
        theirs = peer[f"students_{args.students}"]
        ratios["first_token_p95_vs_llama_cpp_one_at_a_time"] = round(theirs["first_token_p95_s"] / same_scenario["first_token_p95_s"], 2)
        ratios["whole_class_vs_llama_cpp_one_at_a_time"] = round(theirs["whole_class_s"] / same_scenario["whole_class_s"], 2)
        ratios["alone_vs_llama_cpp_alone"] = round(alone_rate / (NEW_TOKENS / peer["alone"]["completion_p50_s"]), 2)
    report["ratios"] = ratios
    print(f"ratios: {ratios}; seeded text alone = in class: {ours['same_text_alone_and_in_class']}; "
          f"server peak memory {ours['peak_memory_bytes'] / 2**20:.0f} MiB" if ours.get("peak_memory_bytes") else f"ratios: {ratios}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
