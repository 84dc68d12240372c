"""A tiny OpenAI-compatible server for tests: /v1/completions and /v1/chat/completions, answered by a real
alignmix backend (the default model through transformers) on 127.0.0.1. `fail_next` makes the next requests
answer 503, to exercise the client's retries."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from alignmix.synth.backends import Backend, GenerationRequest, SamplingParams


class OpenAICompatibleServer:
    def __init__(self, backend: Backend):
        self.backend = backend
        self.lock = threading.Lock()
        self.fail_next = 0
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests += 1
                    if server.fail_next > 0:
                        server.fail_next -= 1
                        return self._send(503, {"error": {"message": "overloaded, try again"}})
                    if self.path.endswith("/completions") and "chat" not in self.path:
                        req = GenerationRequest(prompt=body["prompt"], params=_params(body))
                    elif self.path.endswith("/chat/completions"):
                        req = GenerationRequest(messages=body["messages"], params=_params(body))
                    else:
                        return self._send(404, {"error": {"message": f"no route {self.path}"}})
                    res = server.backend.generate([req])[0]
                choice = {"index": 0, "finish_reason": res.finish_reason}
                if req.prompt is not None:
                    choice["text"] = res.text
                else:
                    choice["message"] = {"role": "assistant", "content": res.text}
                usage = {"prompt_tokens": res.prompt_tokens, "completion_tokens": res.completion_tokens}
                self._send(200, {"object": "text_completion", "model": body["model"], "choices": [choice], "usage": usage})

            def _send(self, code, obj):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> OpenAICompatibleServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _params(body: dict) -> SamplingParams:
    stop = body.get("stop") or ()
    return SamplingParams(
        max_new_tokens=int(body.get("max_tokens", 16)),
        temperature=float(body.get("temperature", 1.0)),
        top_p=float(body.get("top_p", 1.0)),
        top_k=int(body.get("top_k", 0)),
        stop=tuple([stop] if isinstance(stop, str) else stop),
        seed=body.get("seed"),
    )
