"""The safelab/ Inspect provider on a tiny model saved to a folder."""

import asyncio
from pathlib import Path

import pytest
from inspect_ai import Task, eval
from inspect_ai.dataset import Sample
from inspect_ai.model import ChatMessageAssistant, ChatMessageTool, ChatMessageUser, get_model
from inspect_ai.scorer import includes
from inspect_ai.solver import generate
from inspect_ai.tool import ToolCall, ToolInfo, ToolParams

from safelab.interp.probes import LinearProbe
from safelab.interp.steering import SteeringVector
from safelab.provider import batcher
from safelab.provider.chat import parse_tool_calls, to_chat


@pytest.fixture(scope="module")
def folder(tiny_folder: Path) -> Path:
    from safelab.models.loading import load_model

    path = tiny_folder
    model = load_model(str(path), device="cpu")
    acts = model.capture(
        ["Paris is nice.", "Two plus two.", "The fox.", "Safety."], "blocks.1.resid_post", "last"
    )
    LinearProbe.fit(
        acts["blocks.1.resid_post"], [0, 1, 0, 1], "blocks.1.resid_post", data="toy"
    ).save(path.parent / "probe")
    SteeringVector.from_contrast(
        acts["blocks.1.resid_post"][:2], acts["blocks.1.resid_post"][2:], "blocks.1.resid_post"
    ).save(path.parent / "vec")
    return path


def _task(n: int = 6) -> Task:
    return Task(
        dataset=[Sample(input=f"What is {i} plus {i}?", target=str(2 * i)) for i in range(n)],
        solver=generate(),
        scorer=includes(),
    )


def _completions(log) -> list[str]:  # type: ignore[no-untyped-def]
    return [s.output.completion for s in sorted(log.samples, key=lambda s: s.id)]


def test_eval_is_greedy_batched_and_records_probe_scores(
    folder: Path, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from safelab.models.decode import DecodeBatch

    sizes: list[int] = []
    real = batcher.generate_batch

    def counting(model, texts, req, chat_formatted=None):  # type: ignore[no-untyped-def]
        sizes.append(len(texts))
        return real(model, texts, req, chat_formatted)

    running: list[int] = []
    real_step = DecodeBatch.step

    def step(self):  # type: ignore[no-untyped-def]
        running.append(len(self))
        return real_step(self)

    monkeypatch.setattr(batcher, "generate_batch", counting)
    monkeypatch.setattr(DecodeBatch, "step", step)
    kwargs = dict(temperature=0.0, max_tokens=8, log_dir=str(tmp_path), display="none")
    static_args = {"batching": "static"}
    (first,) = eval(_task(), model=f"safelab/{folder}", model_args=static_args, **kwargs)
    assert first.status == "success"
    assert sum(sizes) == 6 and len(sizes) < 6  # concurrent samples shared generate calls
    assert not running
    # Continuous batching with the prefix cache (the default): the same greedy completions,
    # with the samples decoded together in one running batch.
    (cont,) = eval(_task(), model=f"safelab/{folder}", **kwargs)
    assert _completions(cont) == _completions(first)
    assert sum(sizes) == 6 and max(running) > 1
    reads = {"probe": str(folder.parent / "probe"), "capture": "blocks.0.resid_post"}
    (again,) = eval(_task(), model=f"safelab/{folder}", model_args=reads, **kwargs)
    assert _completions(again) == _completions(first)  # greedy: the same text both times
    # Readers see every prompt and response position whether the prompt came from the cache.
    (uncached,) = eval(
        _task(), model=f"safelab/{folder}", model_args={**reads, "prefix_cache_mb": 0}, **kwargs
    )
    by_id = lambda log: sorted(log.samples, key=lambda s: s.id)  # noqa: E731
    for a, b in zip(by_id(again), by_id(uncached), strict=True):
        ra, rb = a.output.metadata["safelab"], b.output.metadata["safelab"]
        assert ra["probes"]["probe"]["tokens"] == rb["probes"]["probe"]["tokens"]
        assert ra["probes"]["probe"]["scores"] == pytest.approx(rb["probes"]["probe"]["scores"])
    for sample in again.samples:
        rec = sample.output.metadata["safelab"]
        probe = rec["probes"]["probe"]
        assert probe["site"] == "blocks.1.resid_post"
        assert len(probe["scores"]) == len(probe["tokens"]) == rec["n_response_tokens"]
        assert all(0.0 <= s <= 1.0 for s in probe["scores"])
        assert len(rec["capture"]["blocks.0.resid_post"]["response_mean"]) == 32


def test_steering_through_model_args(folder: Path, tmp_path: Path) -> None:
    kwargs = dict(temperature=0.0, max_tokens=8, log_dir=str(tmp_path), display="none")
    (plain,) = eval(_task(3), model=f"safelab/{folder}", **kwargs)
    args = {"steer": str(folder.parent / "vec" / "vector.safetensors")}
    (zero,) = eval(
        _task(3), model=f"safelab/{folder}", model_args={**args, "steer_scale": 0}, **kwargs
    )
    (strong,) = eval(
        _task(3), model=f"safelab/{folder}", model_args={**args, "steer_scale": 200}, **kwargs
    )
    assert _completions(zero) == _completions(plain)
    assert _completions(strong) != _completions(plain)
    assert strong.samples[0].output.metadata["safelab"]["steer"]["scale"] == 200.0


def test_token_counting_uses_the_models_tokenizer(folder: Path) -> None:
    model = get_model(f"safelab/{folder}")
    n = asyncio.run(model.api.count_text_tokens("Paris is the capital of France."))
    assert n == len(
        model.api.model.tokenizer("Paris is the capital of France.", add_special_tokens=False)[
            "input_ids"
        ]
    )


def test_unknown_model_arg_is_a_clear_error(folder: Path) -> None:
    from safelab.errors import SafelabError

    with pytest.raises(SafelabError, match="unknown model args"):
        get_model(f"safelab/{folder}", steering="x")


def test_tool_calls_round_trip() -> None:
    tools = [ToolInfo(name="send_email", description="Send an e-mail.", parameters=ToolParams())]
    text, calls = parse_tool_calls(
        'Sure.\n<tool_call>{"name": "send_email", "arguments": {"to": "ceo@x.com"}}</tool_call>'
    )
    assert text == "Sure." and calls is not None
    assert calls[0].function == "send_email" and calls[0].arguments == {"to": "ceo@x.com"}
    _, bad = parse_tool_calls("<tool_call>{not json}</tool_call>")
    assert bad is not None and bad[0].parse_error
    assert parse_tool_calls("no calls here") == ("no calls here", None)
    chat = to_chat(
        [
            ChatMessageUser(content="mail the ceo"),
            ChatMessageAssistant(
                content="",
                tool_calls=[ToolCall(id="1", function="send_email", arguments={"to": "ceo"})],
            ),
            ChatMessageTool(content="sent", tool_call_id="1", function="send_email"),
        ],
        tools,
    )
    assert chat[0]["role"] == "system" and "send_email" in chat[0]["content"]
    assert '<tool_call>{"name": "send_email"' in chat[2]["content"]
    assert chat[3] == {
        "role": "user",
        "content": '<tool_response name="send_email">\nsent\n</tool_response>',
    }


def test_a_trailing_assistant_message_is_continued(folder: Path) -> None:
    model = get_model(f"safelab/{folder}").api.model
    chat = [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi, I am"}]
    text = model.render_chat(chat, continue_final_message=True)
    assert text.endswith("Hi, I am")
    assert text.count("<|im_start|>assistant") == 1


def test_sae_features_and_feature_steering_through_model_args(folder: Path, tmp_path: Path) -> None:
    from safelab.sae.formats import save_sae
    from safelab.sae.sae import SparseAutoencoder

    sae = SparseAutoencoder.random(32, 64, "blocks.1.resid_post", seed=0)
    save_sae(sae, folder.parent / "sae")
    kwargs = dict(temperature=0.0, max_tokens=6, log_dir=str(tmp_path), display="none")
    (plain,) = eval(_task(2), model=f"safelab/{folder}", **kwargs)
    args = {"sae": str(folder.parent / "sae"), "sae_top_k": 3}
    (read,) = eval(_task(2), model=f"safelab/{folder}", model_args=args, **kwargs)
    assert _completions(read) == _completions(plain)  # reading features changes nothing
    for sample in read.samples:
        rec = sample.output.metadata["safelab"]
        sae_rec = rec["sae"]["sae"]
        assert sae_rec["site"] == "blocks.1.resid_post"
        assert len(sae_rec["tokens"]) == rec["n_response_tokens"]
        for tok in sae_rec["tokens"]:
            acts = [a for _, a in tok["features"]]
            assert len(acts) <= 3 and acts == sorted(acts, reverse=True)
            assert all(0 <= i < 64 and a > 0 for i, a in tok["features"])
    feature = f"{folder.parent / 'sae'}#5"
    (zero,) = eval(
        _task(2),
        model=f"safelab/{folder}",
        model_args={"steer": feature, "steer_scale": 0},
        **kwargs,
    )
    (strong,) = eval(
        _task(2),
        model=f"safelab/{folder}",
        model_args={"steer": feature, "steer_scale": 500},
        **kwargs,
    )
    assert _completions(zero) == _completions(plain)
    assert _completions(strong) != _completions(plain)
    assert strong.samples[0].output.metadata["safelab"]["steer"]["site"] == "blocks.1.resid_post"
