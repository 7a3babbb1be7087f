"""What third-party Inspect extensions (Petri, inspect_evals) ask of the safelab/ provider: the
context window and ``model_length``, compact tool descriptions, ``tool_choice``,
``parallel_tool_calls`` and exact prefill joins, on a tiny model saved to a folder."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from inspect_ai.model import (
    ChatMessageAssistant,
    ChatMessageUser,
    GenerateConfig,
    get_model,
)
from inspect_ai.model._model_info import get_model_input_tokens
from inspect_ai.tool import ToolFunction, ToolInfo, ToolParam, ToolParams

from safelab.models.generation import GenerationResult
from safelab.provider import batcher
from safelab.provider.chat import describe_tool, to_chat

WINDOW = 128  # the tiny Llama's max_position_embeddings

ADD = ToolInfo(
    name="add",
    description="Add two integers and return the sum. Use it for any arithmetic the user asks.",
    parameters=ToolParams(
        properties={
            "a": ToolParam(type="integer", description="the first number"),
            "b": ToolParam(type="integer", description="the second number"),
        },
        required=["a", "b"],
    ),
)
SEARCH = ToolInfo(
    name="search",
    description="Search the company wiki. Returns the top passages.",
    parameters=ToolParams(
        properties={"query": ToolParam(type="string", description="what to look for")},
        required=["query"],
    ),
)


def _generate(model: Any, messages: list[Any], **kwargs: Any) -> Any:
    config = kwargs.pop("config", GenerateConfig(max_tokens=8))
    return asyncio.run(model.generate(messages, config=config, **kwargs))


class Script(list[str]):
    """Scripted reply texts, and the prompts the provider rendered."""

    prompts: list[str]


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Script:
    """The model's reply text, scripted: the provider's handling of it is under test."""
    script = Script()
    script.prompts = []

    def fake(model, texts, req, chat_formatted=None):  # type: ignore[no-untyped-def]
        script.prompts.extend(texts)
        return [GenerationResult(script.pop(0), [1, 2], [3], "stop") for _ in texts]

    monkeypatch.setattr(batcher, "generate_batch", fake)
    return script


def test_context_window_is_registered_and_never_exceeded(tiny_folder: Path) -> None:
    model = get_model(f"safelab/{tiny_folder}")
    assert model.api.context_window == WINDOW  # type: ignore[attr-defined]
    assert get_model_input_tokens(model) == WINDOW  # Inspect no longer assumes 128,000
    # A prompt longer than the window: nothing generated, Inspect's model_length.
    long = ChatMessageUser(content=" ".join(["Paris is the capital of France."] * 40))
    out = _generate(model, [long], config=GenerateConfig(max_tokens=16))
    assert out.stop_reason == "model_length" and out.completion == ""
    assert out.usage.input_tokens > WINDOW and out.usage.output_tokens == 0
    # A prompt that leaves less room than max_tokens: cut at the window, never past it.
    mid = ChatMessageUser(content=" ".join(["Paris is the capital of France."] * 8))
    out = _generate(model, [mid], config=GenerateConfig(max_tokens=120))
    assert out.usage.input_tokens + out.usage.output_tokens <= WINDOW
    if out.usage.input_tokens + out.usage.output_tokens == WINDOW:
        assert out.stop_reason == "model_length"


def test_context_window_model_arg(tiny_folder: Path) -> None:
    model = get_model(f"safelab/{tiny_folder}", context_window=40)
    assert get_model_input_tokens(model) == 40
    out = _generate(model, [ChatMessageUser(content="The quick brown fox. " * 6)])
    assert out.stop_reason == "model_length"


def test_compact_tool_descriptions_are_shorter_and_keep_every_argument() -> None:
    full = describe_tool(ADD, "full")
    compact = describe_tool(ADD, "compact")
    assert compact == "- add(a: integer, b: integer): Add two integers and return the sum."
    assert len(compact) < len(full) / 3
    chat = to_chat([ChatMessageUser(content="hi")], [ADD, SEARCH], "compact")
    assert "- search(query: string): Search the company wiki." in chat[0]["content"]


def test_tool_choice_none_named_and_parallel(tiny_folder: Path, scripted: Script) -> None:
    # The tiny tokenizer spends ~1 token a byte: a window wide enough for the tool prompt.
    # The script stands in for generate_batch, the static path's one call; what is under test
    # (tool prompts and parsing the reply) is the same on the continuous path.
    model = get_model(f"safelab/{tiny_folder}", context_window=4096, batching="static")
    user = [ChatMessageUser(content="What is 2 plus 3?")]
    call = '<tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call>'
    # none: tools are not offered and a call-shaped reply stays text.
    scripted.append(call)
    out = _generate(model, user, tools=[ADD], tool_choice="none")
    assert out.message.tool_calls is None and out.completion == call
    assert "You can call tools" not in scripted.prompts[-1]
    # A named tool: the reply is started as that call and made even if the model wanders.
    scripted.append('{"a": 2, "b": 3}}</tool_call>')
    out = _generate(model, user, tools=[ADD, SEARCH], tool_choice=ToolFunction("add"))
    assert scripted.prompts[-1].endswith('<tool_call>{"name": "add", "arguments": ')
    (made,) = out.message.tool_calls
    assert made.function == "add" and made.arguments == {"a": 2, "b": 3}
    assert out.stop_reason == "tool_calls"
    scripted.append("nonsense")
    out = _generate(model, user, tools=[ADD], tool_choice=ToolFunction("add"))
    (made,) = out.message.tool_calls
    assert made.function == "add" and made.parse_error
    # parallel_tool_calls=False keeps the first of two calls.
    two = call + '\n<tool_call>{"name": "search", "arguments": {"query": "x"}}</tool_call>'
    scripted.append(two)
    out = _generate(model, user, tools=[ADD, SEARCH])
    assert [c.function for c in out.message.tool_calls] == ["add", "search"]
    scripted.append(two)
    out = _generate(
        model,
        user,
        tools=[ADD, SEARCH],
        config=GenerateConfig(max_tokens=8, parallel_tool_calls=False),
    )
    assert [c.function for c in out.message.tool_calls] == ["add"]
    assert "<tool_call>" not in out.completion


def test_prefill_and_continuation_join_exactly(tiny_folder: Path) -> None:
    user = ChatMessageUser(content="How are you?")
    prefill = ChatMessageAssistant(content="Honestly,")
    rest = ChatMessageAssistant(content=" I am fine.")
    chat = to_chat([user, prefill, rest], [])
    assert chat[-1] == {"role": "assistant", "content": "Honestly, I am fine."}
    model = get_model(f"safelab/{tiny_folder}")
    rendered = model.api.model.render_chat(  # type: ignore[attr-defined]
        to_chat([user, prefill], []), continue_final_message=True
    )
    assert rendered.endswith("<|im_start|>assistant\nHonestly,")


def test_a_scorer_made_model_honours_the_config_it_is_given(tiny_folder: Path) -> None:
    """Inspect gives ``--max-tokens`` to the model under evaluation only; a judge a scorer makes
    with ``get_model("safelab/...")`` takes the config it is made or called with."""
    user = [ChatMessageUser(content="Paris is")]
    made = get_model(f"safelab/{tiny_folder}", config=GenerateConfig(max_tokens=3), memoize=False)
    out = asyncio.run(made.generate(user))
    assert 1 <= out.usage.output_tokens <= 3
    out = asyncio.run(made.generate(user, config=GenerateConfig(max_tokens=2)))
    assert 1 <= out.usage.output_tokens <= 2
