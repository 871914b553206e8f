"""A stand-in for an OpenAI-compatible server (vLLM, llama.cpp's server, LM Studio): real HTTP on 127.0.0.1,
`POST <base>/chat/completions`, answered by a scripted policy (`respond(system, last_user_message)` -> fields, in
DSPy's ChatAdapter format). Requests are counted, so tests can tell the server was the one that answered."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.scripted_lm import Respond, chat_adapter_reply


@contextmanager
def openai_compatible_server(respond: Respond) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Serve until the block ends; yields the base URL (ending in /v1) and the list of requests it received."""
    requests: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            requests.append({"path": self.path, **body})
            if not self.path.endswith("/chat/completions"):
                self.send_error(404)
                return
            messages = body["messages"]
            system = "".join(_text(m) for m in messages if m["role"] == "system")
            text = chat_adapter_reply(respond(system, _text(messages[-1])))
            reply = {
                "id": f"chatcmpl-{len(requests)}",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
            }
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", requests
    finally:
        server.shutdown()
        server.server_close()


def _text(message: dict[str, Any]) -> str:
    content = message.get("content") or ""
    return content if isinstance(content, str) else "".join(part.get("text", "") for part in content)
