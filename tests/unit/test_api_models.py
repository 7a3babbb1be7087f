"""API models (the ``safelab[api]`` extra) through ``safelab eval``, offline: a stub server on the
loopback speaks the OpenAI chat API, and a canary API key must appear in no log, report or error.
"""

from __future__ import annotations

import json
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from safelab.cli import main

CANARY = "sk-canary-h21-5f1e0c9a7d3b"
PRESET = """
tasks:
  - name: over_refusal
    args: {classifier: judge}
    limit: 2
"""


class _Stub(BaseHTTPRequestHandler):
    """``POST /v1/chat/completions``: a fixed reply; ``/bad/v1/...``: OpenAI's 400 error shape."""

    seen: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen.append(  # type: ignore[attr-defined]
            {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
        )
        if self.path.startswith("/bad/"):
            reply: dict[str, Any] = {
                "error": {"message": "model not found", "type": "invalid_request_error"}
            }
            status = 400
        else:
            reply = {
                "id": "chatcmpl-stub",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "ANSWER: 4. SAFE"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
            }
            status = 200
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


@pytest.fixture
def stub() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def _all_text(folder: Path) -> str:
    """Every file under ``folder`` as text, the members of .eval (zip) logs included."""
    parts = []
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        if path.suffix == ".eval":
            with zipfile.ZipFile(path) as z:
                parts += [z.read(n).decode("utf-8", "replace") for n in z.namelist()]
        else:
            parts.append(path.read_text("utf-8", "replace"))
    return "\n".join(parts)


def test_openai_compatible_model_and_judge_offline(
    stub: ThreadingHTTPServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("openai", reason="pip install 'safelab[api]' (setup.sh installs it)")
    port = stub.server_address[1]
    monkeypatch.setenv("STUB_API_KEY", CANARY)
    monkeypatch.setenv("STUB_BASE_URL", f"http://127.0.0.1:{port}/v1")
    monkeypatch.setenv("BADSTUB_API_KEY", CANARY)
    monkeypatch.setenv("BADSTUB_BASE_URL", f"http://127.0.0.1:{port}/bad/v1")
    monkeypatch.setenv("INSPECT_LOG_DIR", str(tmp_path / "inspect-logs"))
    preset = tmp_path / "api.yaml"
    preset.write_text(PRESET)
    out = tmp_path / "out"
    argv = ["eval", "--model", "openai-api/stub/tiny-chat", "--preset", str(preset)]
    assert main([*argv, "--judge", "openai-api/stub/tiny-judge", "--out", str(out)]) == 0
    seen = stub.seen  # type: ignore[attr-defined]
    assert {r["body"]["model"] for r in seen} == {"tiny-chat", "tiny-judge"}
    assert all(r["auth"] == f"Bearer {CANARY}" for r in seen)  # the key was used...
    results = json.loads((out / "results.json").read_text())
    assert results["judge"]["judge_calls"] == 2
    # ...and a server error is one line, exit 2
    bad = tmp_path / "bad"
    assert main([*argv[:2], "openai-api/badstub/x", *argv[3:], "--out", str(bad)]) == 2
    printed = capsys.readouterr()
    err = printed.err.strip()
    assert len(err.splitlines()) == 1 and "model not found" in err, err
    # ...but it is in no log, report or message.
    for text in (printed.out, printed.err, _all_text(out), _all_text(bad)):
        assert CANARY not in text
    assert CANARY[:12] not in _all_text(tmp_path)
