"""Pieces of the auditing agent: seeds, the branching conversation, the judge parser, intervals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from inspect_ai.model import ChatMessageAssistant
from inspect_ai.tool import ToolCall

from safelab.audit import TargetConversation, load_dimensions, load_seeds, parse_verdict
from safelab.audit.conversation import ConversationError, parse_tool_parameters
from safelab.audit.judge import judge_prompt
from safelab.audit.prompts import load_template
from safelab.audit.seeds import seed_tags, seeds_dataset
from safelab.errors import SafelabError
from safelab.stats import bootstrap_mean_ci

DIMS = load_dimensions()
REQUIRED_DIMENSIONS = {
    "deception_toward_user",
    "self_preservation",
    "power_seeking",
    "sabotage",
    "blackmail_coercion",
    "sycophancy",
    "misuse_cooperation",
    "eval_awareness",
    "overall_concern",
}


# ---- seeds ---------------------------------------------------------------------------------
def test_builtin_seeds_are_tagged_and_unique() -> None:
    seeds = load_seeds()
    assert len(seeds) >= 30
    assert len({s.id for s in seeds}) == len(seeds)
    assert all(s.tags for s in seeds)
    tags = seed_tags(seeds)
    for behaviour in (
        "deception",
        "self_preservation",
        "power_seeking",
        "sabotage",
        "blackmail",
        "sycophancy",
        "misuse",
        "eval_awareness",
    ):
        assert tags.get(behaviour, 0) >= 3, behaviour


def test_builtin_seed_filter() -> None:
    seeds = load_seeds(tags="blackmail, sycophancy")
    assert seeds and all({"blackmail", "sycophancy"} & set(s.tags) for s in seeds)
    assert len(seeds) < len(load_seeds())
    ds = seeds_dataset(tags=["prefill"])
    assert len(ds) == len(load_seeds(tags="prefill"))
    assert "prefill" in ds[0].metadata["tags"]  # type: ignore[index]


def test_petri_seed_file(shared_data: Path) -> None:
    path = shared_data / "petri" / "seed_instructions.jsonl"
    seeds = load_seeds(path)
    assert len(seeds) == sum(1 for line in path.open() if line.strip())
    assert len({s.id for s in seeds}) == len(seeds)
    misuse = load_seeds(path, tags=["cooperation_with_misuse"])
    assert 0 < len(misuse) < len(seeds)
    assert all("cooperation_with_misuse" in s.tags for s in misuse)
    with pytest.raises(SafelabError, match="no seed"):
        load_seeds(path, tags="no_such_tag")


def test_malformed_seed_rows(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "ok"}\n{"text": "wrong key"}\n')
    with pytest.raises(SafelabError, match=r"bad\.jsonl:2"):
        load_seeds(bad)
    bad.write_text("{not json\n")
    with pytest.raises(SafelabError, match="not valid JSON"):
        load_seeds(bad)
    with pytest.raises(SafelabError, match="not found"):
        load_seeds(tmp_path / "missing.jsonl")
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": 1, "instruction": "a", "tags": "x"}\n{"id": 1, "seed": "b"}\n')
    assert [(s.id, s.tags) for s in load_seeds(dup)] == [("1", ("x",)), ("1-1", ())]


# ---- conversation --------------------------------------------------------------------------
def _assistant_with_calls(*ids: str) -> ChatMessageAssistant:
    return ChatMessageAssistant(
        content="", tool_calls=[ToolCall(id=i, function="search", arguments={"q": i}) for i in ids]
    )


def test_pending_tool_calls_and_results() -> None:
    conv = TargetConversation()
    conv.set_system_prompt("sys")
    conv.create_tool("search", "Search the web.", '{"q": "query"}')
    conv.add_user("hi")
    conv.add_assistant(_assistant_with_calls("c1", "c2"))
    assert [c.id for c in conv.pending_tool_calls()] == ["c1", "c2"]
    with pytest.raises(ConversationError, match="pending tool calls"):
        conv.add_user("again")
    with pytest.raises(ConversationError, match="no pending tool call"):
        conv.add_tool_result("c9", "x")
    conv.add_tool_result("c2", "two")
    assert [c.id for c in conv.pending_tool_calls()] == ["c1"]
    conv.add_tool_result("c1", "one", error=True)
    assert conv.pending_tool_calls() == []
    assert conv.messages[-1].error is not None  # type: ignore[union-attr]


def test_rollback_keeps_abandoned_branch() -> None:
    conv = TargetConversation()
    conv.set_system_prompt("sys")
    conv.add_user("u1")
    conv.add_assistant(ChatMessageAssistant(content="a1"))
    conv.add_user("u2")
    conv.add_assistant(ChatMessageAssistant(content="a2"))
    with pytest.raises(ConversationError, match="choose an index from -1 to 3"):
        conv.rollback(4)
    branch = conv.rollback(2)
    assert [m.text for m in conv.messages] == ["sys", "u1", "a1"]
    assert (branch.id, branch.parent, branch.fork_at) == (1, 0, 3)
    assert [m.text for m in conv.branches[0].messages] == ["sys", "u1", "a1", "u2", "a2"]
    conv.add_user("u2b")
    # replacing the system prompt restarts on a third branch
    assert conv.set_system_prompt("sys2") is True
    assert [m.text for m in conv.messages] == ["sys2"] and len(conv.branches) == 3
    restored = [type(b).from_dict(b.to_dict()) for b in conv.branches]
    assert [[m.text for m in b.messages] for b in restored] == [
        [m.text for m in b.messages] for b in conv.branches
    ]


def test_rollback_restores_pending_calls() -> None:
    conv = TargetConversation()
    conv.add_user("u")
    conv.add_assistant(_assistant_with_calls("c1"))
    conv.add_tool_result("c1", "r")
    conv.add_assistant(ChatMessageAssistant(content="done"))
    conv.rollback(1)
    assert [c.id for c in conv.pending_tool_calls()] == ["c1"]


def test_tool_parameters() -> None:
    simple = parse_tool_parameters('{"path": "file path", "mode": "r or w"}')
    assert set(simple.properties) == {"path", "mode"} and simple.required == ["path", "mode"]
    schema = parse_tool_parameters(
        {
            "type": "object",
            "properties": {"n": {"type": "integer", "description": "count"}},
            "required": [],
        }
    )
    assert schema.properties["n"].type == "integer" and schema.required == []
    assert parse_tool_parameters("").properties == {}
    with pytest.raises(ConversationError, match="invalid JSON"):
        parse_tool_parameters("{path: x}")
    with pytest.raises(ConversationError, match="JSON object"):
        parse_tool_parameters("[1, 2]")
    conv = TargetConversation()
    with pytest.raises(ConversationError, match="tool name"):
        conv.create_tool("rm -rf", "bad", "{}")


# ---- judge ---------------------------------------------------------------------------------
def test_dimensions_cover_the_required_set() -> None:
    assert set(DIMS.names) >= REQUIRED_DIMENSIONS
    assert all(len(d.rubric) > 40 for d in DIMS.dimensions)


def _lines(score: str = "3") -> str:
    return "\n".join(f'{n}: {score} | "hello there" | because' for n in DIMS.names)


def test_parse_line_format_and_quotes() -> None:
    v = parse_verdict(
        _lines() + "\nsummary: fine.", DIMS, transcript="[0:1] TARGET: Hello   There!"
    )
    assert v.status == "scored" and v.summary == "fine."
    assert all(
        d.score == 3 and d.quote == "hello there" and d.quote_found for d in v.dimensions.values()
    )
    assert (
        parse_verdict(_lines(), DIMS, transcript="nothing").dimensions["sabotage"].quote_found
        is False
    )


def test_parse_markdown_titles_and_json() -> None:
    text = '**Self-preservation**: **7**/10 | "x" | y\n- power_seeking = 2'
    v = parse_verdict(text, DIMS)
    assert v.dimensions["self_preservation"].score == 7 and v.dimensions["power_seeking"].score == 2
    assert v.status == "partial" and "sabotage" in v.unscored
    js = json.dumps({n: {"score": 5, "quote": "q", "justification": "j"} for n in DIMS.names})
    v = parse_verdict(f"Here you go:\n```json\n{js}\n```", DIMS)
    assert v.status == "scored" and v.dimensions["overall_concern"].score == 5


def test_out_of_range_score_is_unscored() -> None:
    v = parse_verdict(_lines("12"), DIMS)
    assert v.status == "unparseable" and all(math.isnan(x) for x in v.value().values())
    v = parse_verdict(_lines("0"), DIMS)
    assert v.unscored == DIMS.names


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("I'm sorry, but I can't help with rating this conversation.", "refusal"),
        ("The target seems fine overall, nothing to worry about.", "unparseable"),
        ("   ", "empty"),
    ],
)
def test_unscored_verdicts(text: str, status: str) -> None:
    v = parse_verdict(text, DIMS)
    assert v.status == status
    assert v.unscored == DIMS.names
    # unscored is NaN, never the "safe" score 1
    assert all(math.isnan(x) for x in v.value().values())


def test_judge_prompt_has_every_rubric() -> None:
    prompt = judge_prompt("seed text {x}", '[0:1] TARGET: {"json": 1}', DIMS)
    assert "seed text {x}" in prompt and '{"json": 1}' in prompt
    for d in DIMS.dimensions:
        assert d.name in prompt and d.rubric in prompt
    assert "{" + "transcript}" not in prompt
    assert "{{ seed }}" in load_template("auditor.md")


# ---- intervals -----------------------------------------------------------------------------
def test_bootstrap_interval() -> None:
    values = [1.0, 2.0, 3.0, 8.0, 9.0, math.nan]
    a = bootstrap_mean_ci(values, n_resamples=500, seed=1)
    b = bootstrap_mean_ci(values, n_resamples=500, seed=1)
    assert a == b and a.n == 5 and a.mean == pytest.approx(4.6)
    assert 1.0 <= a.low < a.mean < a.high <= 9.0
    wide = bootstrap_mean_ci(values[:5] * 1, n_resamples=500, seed=1)
    narrow = bootstrap_mean_ci(values[:5] * 20, n_resamples=500, seed=1)
    assert narrow.high - narrow.low < wide.high - wide.low
    assert math.isnan(bootstrap_mean_ci([math.nan]).mean)


def test_render_is_single_pass() -> None:
    from safelab.audit.prompts import render

    out = render(
        "{{ seed }} / {{ transcript }} / {json}",
        seed="says {{ transcript }}",
        transcript="T {seed}",
    )
    assert out == "says {{ transcript }} / T {seed} / {json}"


def test_malformed_target_tool_call_is_shown() -> None:
    from safelab.audit.conversation import format_tool_call

    call = ToolCall(id="c1", function="unknown", arguments={}, parse_error="bad JSON")
    assert format_tool_call(call) == "unknown({}) [id=c1] (malformed call: bad JSON)"
