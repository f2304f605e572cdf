"""A real HTTP server on loopback that speaks the chat-completions protocol, for tests.

It answers like a well-behaved teacher (JSON with the label it was given and an
explanation quoting Entity A), and injects faults when the last user message contains a
marker (records carry the markers in their titles):

- ``FAULT_500x<N>``: the first N requests get HTTP 500, then a normal answer
- ``FAULT_429``: the first request gets 429 with ``Retry-After: 1``
- ``FAULT_SLOW``: every request sleeps ``slow_s`` before answering (past the client timeout)
- ``FAULT_BADJSON``: HTTP 200 with a body that is not JSON
- ``FAULT_EMPTY``: HTTP 200 with an empty ``choices`` list
- ``FAULT_CONTRADICT``: answers the opposite label

It counts requests per message, records their arrival times and the Authorization
headers, and tracks the most requests in flight at once.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeChatServer:
    def __init__(self, delay_s: float = 0.0, slow_s: float = 1.5):
        self.delay_s = delay_s
        self.slow_s = slow_s
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.attempts: dict[str, int] = defaultdict(int)
        self.arrivals: dict[str, list[float]] = defaultdict(list)
        self.auth_headers: set[str] = set()
        self.bodies: list[dict] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    @property
    def total_requests(self) -> int:
        return sum(self.attempts.values())

    def __enter__(self) -> "FakeChatServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def answer(self, body: dict) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) for one request; the fault markers decide."""
        last = body["messages"][-1]["content"]
        with self.lock:
            self.attempts[last] += 1
            attempt = self.attempts[last]
            self.arrivals[last].append(time.monotonic())
        m = re.search(r"FAULT_500x(\d+)", last)
        if m and attempt <= int(m.group(1)):
            return 500, {}, b'{"error": "internal"}'
        if "FAULT_429" in last and attempt == 1:
            return 429, {"Retry-After": "1"}, b'{"error": "rate limited"}'
        if "FAULT_SLOW" in last:
            time.sleep(self.slow_s)
        if "FAULT_BADJSON" in last:
            return 200, {}, b'{"choices": [ this is not json'
        if "FAULT_EMPTY" in last:
            return 200, {}, json.dumps({"id": "x", "choices": [], "usage": {}}).encode()
        gold = re.search(r"Label: (MATCH|NOT A MATCH)", last)
        label = 1 if gold is None or gold.group(1) == "MATCH" else 0
        if "FAULT_CONTRADICT" in last:
            label = 1 - label
        first = re.search(r"Entity A: COL \S+ VAL (.*?) (?:COL |Entity B:)", last)
        quoted = " ".join(first.group(1).split(" ")[:2]) if first else "?"
        if label:
            explanation = f'Both records name "{quoted}" and agree otherwise, so they refer to the same entity.'
        else:
            explanation = f'Entity A is "{quoted}", which Entity B does not describe, so they are different entities.'
        content = json.dumps({"label": "match" if label else "no match", "explanation": explanation})
        payload = {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "model": body.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len(last.split()), "completion_tokens": len(content.split())},
        }
        return 200, {}, json.dumps(payload).encode()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                if not self.path.endswith("/chat/completions"):
                    self.send_error(404)
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    server.auth_headers.add(self.headers.get("Authorization", ""))
                    server.bodies.append(body)
                try:
                    if server.delay_s:
                        time.sleep(server.delay_s)
                    status, headers, data = server.answer(body)
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass
                finally:
                    with server.lock:
                        server.in_flight -= 1

        return Handler
