"""Shared fixtures and tier gating.

Tiers (see tests/README.md): unit tests build tiny random-weight models from a config;
``integration`` tests use the real embedded default model and ../shared/data.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from safelab.data import shared_data_root


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gates = {"gpu": "SAFELAB_TEST_GPU", "api": "SAFELAB_TEST_API"}
    for item in items:
        for marker, var in gates.items():
            if marker in item.keywords and os.environ.get(var) != "1":
                item.add_marker(pytest.mark.skip(reason=f"set {var}=1 to run {marker} tests"))


@pytest.fixture(autouse=True)
def _offline_token_counting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inspect's default token counter downloads tiktoken's o200k_base; offline it fails.

    mockllm counts input tokens with it whenever a scripted output carries no usage, so
    tests count with a local estimate instead (nothing asserts on these counts).
    """
    from inspect_ai.model._providers.mockllm import MockLLM

    async def count_text_tokens(self: MockLLM, text: str) -> int:
        return max(1, len(text) // 4)

    monkeypatch.setattr(MockLLM, "count_text_tokens", count_text_tokens)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_root()
    if not root.is_dir():
        pytest.fail(
            f"shared data not found at {root}: run with shared/ beside the repo or set $SAFELAB_DATA"
        )
    return root


@pytest.fixture
def tiny_model():  # type: ignore[no-untyped-def]
    """A WhiteBoxModel over a tiny random Llama (3 blocks, d_model 32) and a tiny tokenizer."""
    from tests.tiny import tiny_model as build

    return build("llama")


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random Llama saved as a Hugging Face folder (for ``safelab/<folder>``, the CLI)."""
    from tests.tiny import tiny_model as build

    model = build("llama")
    path = tmp_path_factory.mktemp("tiny") / "tiny-llama"
    model.hf.save_pretrained(path)
    model.tokenizer.save_pretrained(path)
    return path
