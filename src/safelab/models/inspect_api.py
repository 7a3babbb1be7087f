"""The ``safelab/<model>`` Inspect model API: white-box models inside any Inspect eval.

``inspect eval <task> --model safelab/default`` (or ``safelab/<folder | .gguf | hub id>``) runs
the task on a local white-box model. Concurrent samples are batched into one ``generate``
call. Model args (``-M``):

==================  ================================================================
``steer``           a steering vector (folder or ``.safetensors``) applied during the eval
``steer_scale``     its scale (default: the scale saved with the vector)
``steer_site``      override the vector's site
``capture``         sites (comma-separated, globs allowed) summarised per sample
``probe``           probe(s) (comma-separated paths) scored per token per sample
``capture_vectors`` keep the mean response activation vector in the log (default true)
``dtype``           auto (float32 on CPU, bfloat16 on GPU), float32, bfloat16, float16
``device``          cpu, cuda, cuda:1, ...
``batch_size``      most samples per generate call (default 32)
==================  ================================================================

White-box records go to ``output.metadata["safelab"]``, which Inspect writes to the log.
"""

from __future__ import annotations

import asyncio
import json
import queue
import re
import threading
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inspect_ai.model import (
    ChatCompletionChoice,
    ChatMessage,
    ChatMessageAssistant,
    ChatMessageSystem,
    ChatMessageTool,
    GenerateConfig,
    Logprob,
    Logprobs,
    ModelAPI,
    ModelOutput,
    ModelUsage,
    StopReason,
    TopLogprob,
)
from inspect_ai.tool import ToolCall, ToolChoice, ToolInfo

from safelab.errors import SafelabError
from safelab.interp.probes import LinearProbe
from safelab.interp.steering import SteeringVector
from safelab.models.generation import GenerationRequest, GenerationResult, generate_batch
from safelab.models.loading import load_model
from safelab.models.whitebox import WhiteBoxModel

DEFAULT_MAX_TOKENS = 512


@dataclass(frozen=True)
class Interventions:
    """What a model API instance applies and reads around every generate call."""

    steer: SteeringVector | None = None
    steer_scale: float = 1.0
    steer_site: str = ""
    capture: tuple[str, ...] = ()
    probes: tuple[tuple[str, LinearProbe], ...] = ()
    capture_vectors: bool = True

    def enter(self, model: WhiteBoxModel, stack: ExitStack) -> None:
        if self.steer is not None:
            stack.enter_context(
                model.steer(
                    self.steer.vector,
                    self.steer_site,
                    scale=self.steer_scale,
                    positions=self.steer.cfg.positions,  # type: ignore[arg-type]
                )
            )

    @property
    def reads(self) -> bool:
        return bool(self.capture or self.probes)


@dataclass
class _Job:
    text: str
    request: GenerationRequest
    interventions: Interventions
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[tuple[GenerationResult, dict[str, Any]]]
    key: tuple[Any, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.key = (self.request, id(self.interventions))


class Batcher:
    """One worker thread per model: drains queued jobs, groups compatible ones, runs them.

    Jobs share a batch when their decoding settings and interventions are equal, so a steered
    target and an unsteered judge on the same weights never leak hooks into each other. A batch
    closes when no job has arrived for ``wait_s`` (Inspect's own hf provider waits 2 s; a
    quarter second keeps sequential agent turns responsive while loaded CPUs still fill batches).
    """

    def __init__(self, model: WhiteBoxModel, max_batch: int, wait_s: float = 0.25) -> None:
        self.model = model
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.queue: queue.Queue[_Job] = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True, name="safelab-batcher")
        self.thread.start()

    async def submit(
        self, text: str, request: GenerationRequest, iv: Interventions
    ) -> tuple[GenerationResult, dict[str, Any]]:
        loop = asyncio.get_running_loop()
        job = _Job(text, request, iv, loop, loop.create_future())
        self.queue.put(job)
        return await job.future

    def _run(self) -> None:
        while True:
            jobs = [self.queue.get()]
            while len(jobs) < self.max_batch:
                try:
                    jobs.append(self.queue.get(timeout=self.wait_s))
                except queue.Empty:
                    break
            groups: dict[tuple[Any, ...], list[_Job]] = {}
            for job in jobs:
                groups.setdefault(job.key, []).append(job)
            for group in groups.values():
                self._run_group(group)

    def _run_group(self, jobs: list[_Job]) -> None:
        iv = jobs[0].interventions
        try:
            with ExitStack() as stack:
                iv.enter(self.model, stack)
                results = generate_batch(self.model, [j.text for j in jobs], jobs[0].request)
                records: list[dict[str, Any]] = [{} for _ in jobs]
                if iv.reads:
                    from safelab.interp.readout import read_samples

                    records = read_samples(
                        self.model,
                        [r.prompt_ids for r in results],
                        [r.completion_ids for r in results],
                        list(iv.capture),
                        dict(iv.probes),
                        vectors=iv.capture_vectors,
                    )
            for job, res, rec in zip(jobs, results, records, strict=True):
                _resolve(job, (res, rec), None)
        except BaseException as e:  # deliver every failure to the awaiting samples
            for job in jobs:
                _resolve(job, None, e)


def _resolve(job: _Job, value: Any, error: BaseException | None) -> None:
    def set_() -> None:
        if job.future.done():
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(value)

    job.loop.call_soon_threadsafe(set_)


_MODELS: dict[tuple[str, str, str | None], WhiteBoxModel] = {}
_BATCHERS: dict[int, Batcher] = {}
_LOCK = threading.Lock()


def shared_model(spec: str, dtype: str, device: str | None) -> WhiteBoxModel:
    """Load once per process: several roles or tasks on the same weights share one copy."""
    key = (spec, dtype, device)
    with _LOCK:
        if key not in _MODELS:
            _MODELS[key] = load_model(spec, dtype=dtype, device=device)
        return _MODELS[key]


def share_model(
    model: WhiteBoxModel, spec: str, dtype: str = "auto", device: str | None = None
) -> None:
    """Let ``safelab/<spec>`` in this process reuse a model that is already loaded."""
    with _LOCK:
        _MODELS[(spec, dtype, device)] = model


def shared_batcher(model: WhiteBoxModel, max_batch: int) -> Batcher:
    with _LOCK:
        if id(model) not in _BATCHERS:
            _BATCHERS[id(model)] = Batcher(model, max_batch)
        return _BATCHERS[id(model)]


class SafelabModelAPI(ModelAPI):
    """Inspect ``ModelAPI`` over a :class:`WhiteBoxModel`."""

    def __init__(
        self,
        model_name: str,
        base_url: str | None = None,
        api_key: str | None = None,
        config: GenerateConfig = GenerateConfig(),  # noqa: B008 (Inspect's own signature)
        **model_args: Any,
    ) -> None:
        super().__init__(model_name=model_name, base_url=base_url, api_key=api_key, config=config)
        args = dict(model_args)
        dtype = str(args.pop("dtype", "auto"))
        device = args.pop("device", None)
        self.batch_size = int(args.pop("batch_size", 32))
        steer = args.pop("steer", None)
        steer_scale = args.pop("steer_scale", None)
        steer_site = args.pop("steer_site", None)
        capture = args.pop("capture", None)
        probe = args.pop("probe", None)
        capture_vectors = _as_bool(args.pop("capture_vectors", True))
        if args:
            raise SafelabError(
                f"unknown model args for safelab/: {', '.join(sorted(args))} (known: steer, "
                "steer_scale, steer_site, capture, probe, capture_vectors, dtype, device, batch_size)"
            )
        self.model = shared_model(model_name, dtype, device)
        vector = SteeringVector.load(steer) if steer else None
        probes = tuple(
            (Path(p).stem if Path(p).suffix else Path(p).name, LinearProbe.load(p))
            for p in _split(probe)
        )
        sites = tuple(str(s) for s in self.model.resolve_sites(_split(capture))) if capture else ()
        for _, p in probes:
            self.model.resolve_sites(p.site)
        if vector is not None:
            self.model.resolve_sites(steer_site or vector.site)
        self.interventions = Interventions(
            steer=vector,
            steer_scale=float(steer_scale)
            if steer_scale is not None
            else (vector.cfg.scale if vector else 1.0),
            steer_site=str(steer_site or (vector.site if vector else "")),
            capture=sites,
            probes=probes,
            capture_vectors=capture_vectors,
        )
        self.batcher = shared_batcher(self.model, self.batch_size)

    async def generate(
        self,
        input: list[ChatMessage],
        tools: list[ToolInfo],
        tool_choice: ToolChoice,
        config: GenerateConfig,
    ) -> ModelOutput:
        messages = to_chat(input, tools)
        # A trailing assistant message is a prefill: continue it rather than open a new turn.
        prefill = messages[-1]["role"] == "assistant"
        text = self.model.render_chat(messages, continue_final_message=prefill)
        request = GenerationRequest(
            max_new_tokens=config.max_tokens or DEFAULT_MAX_TOKENS,
            temperature=float(config.temperature or 0.0),
            top_p=config.top_p,
            top_k=config.top_k,
            stop=tuple(config.stop_seqs or ()),
            seed=config.seed,
            logprobs=bool(config.logprobs),
            top_logprobs=int(config.top_logprobs or 0),
        )
        result, record = await self.batcher.submit(text, request, self.interventions)
        content, tool_calls = parse_tool_calls(result.text) if tools else (result.text, None)
        message = ChatMessageAssistant(
            content=content, tool_calls=tool_calls, model=self.model_name, source="generate"
        )
        stop_reason: StopReason = (
            "tool_calls"
            if tool_calls
            else ("max_tokens" if result.finish == "max_tokens" else "stop")
        )
        metadata: dict[str, Any] | None = None
        if record or self.interventions.steer is not None:
            metadata = {"safelab": {**record, **self._intervention_meta()}}
        return ModelOutput(
            model=self.model_name,
            choices=[
                ChatCompletionChoice(
                    message=message,
                    stop_reason=stop_reason,
                    logprobs=_to_logprobs(result),
                )
            ],
            usage=ModelUsage(
                input_tokens=len(result.prompt_ids),
                output_tokens=len(result.completion_ids),
                total_tokens=len(result.prompt_ids) + len(result.completion_ids),
            ),
            metadata=metadata,
        )

    def _intervention_meta(self) -> dict[str, Any]:
        iv = self.interventions
        if iv.steer is None:
            return {}
        return {
            "steer": {"site": iv.steer_site, "scale": iv.steer_scale, "method": iv.steer.cfg.method}
        }

    async def count_text_tokens(self, text: str) -> int:
        # Inspect's default downloads tiktoken's o200k_base: use the model's own tokenizer.
        return max(1, len(self.model.tokenizer(text, add_special_tokens=False)["input_ids"]))

    async def tokenize(self, text: str) -> list[int]:
        return list(self.model.tokenizer(text, add_special_tokens=False)["input_ids"])

    def max_tokens(self) -> int | None:
        return DEFAULT_MAX_TOKENS

    def max_connections(self) -> int:
        return self.batch_size

    def collapse_user_messages(self) -> bool:
        return True

    def model_family(self) -> str:
        return str(self.model.hf.config.model_type)


# -- chat and tools --------------------------------------------------------------------------

TOOL_PROMPT = """You can call tools. To call one, reply with exactly one line:
<tool_call>{{"name": "<tool name>", "arguments": {{...}}}}</tool_call>
Tools:
{tools}"""

_TOOL_CALL_RE = re.compile(r"<tool_call>\s*(\{.*?\})\s*(?:</tool_call>|$)", re.DOTALL)


def to_chat(messages: Sequence[ChatMessage], tools: Sequence[ToolInfo]) -> list[dict[str, str]]:
    """Inspect messages as plain ``{role, content}`` dicts any chat template accepts.

    Tools are described in the system message and tool calls/results are written inline as
    ``<tool_call>``/``<tool_response>`` text (the Hermes/Qwen convention), so every chat template
    works, including ones with no tool support.
    """
    out: list[dict[str, str]] = []
    if tools:
        described = "\n".join(
            json.dumps(
                {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters.model_dump(exclude_none=True),
                }
            )
            for t in tools
        )
        out.append({"role": "system", "content": TOOL_PROMPT.format(tools=described)})
    for m in messages:
        if isinstance(m, ChatMessageSystem):
            if out and out[0]["role"] == "system":
                out[0]["content"] = m.text + "\n\n" + out[0]["content"]
            else:
                out.insert(0, {"role": "system", "content": m.text})
        elif isinstance(m, ChatMessageTool):
            body = m.error.message if m.error is not None else m.text
            out.append(
                {
                    "role": "user",
                    "content": f'<tool_response name="{m.function}">\n{body}\n</tool_response>',
                }
            )
        elif isinstance(m, ChatMessageAssistant):
            text = m.text
            for call in m.tool_calls or []:
                text += (
                    "\n<tool_call>"
                    + json.dumps({"name": call.function, "arguments": call.arguments})
                    + "</tool_call>"
                )
            out.append({"role": "assistant", "content": text.strip()})
        else:
            out.append({"role": "user", "content": m.text})
    return _merge_same_role(out)


def _merge_same_role(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    merged: list[dict[str, str]] = []
    for m in messages:
        if merged and merged[-1]["role"] == m["role"] and m["role"] != "system":
            merged[-1] = {
                "role": m["role"],
                "content": merged[-1]["content"] + "\n\n" + m["content"],
            }
        else:
            merged.append(dict(m))
    return merged


def parse_tool_calls(text: str) -> tuple[str, list[ToolCall] | None]:
    """Split ``<tool_call>{...}</tool_call>`` blocks out of a completion."""
    calls: list[ToolCall] = []
    for match in _TOOL_CALL_RE.finditer(text):
        raw = match.group(1)
        try:
            obj = json.loads(raw)
            name, arguments, error = str(obj["name"]), obj.get("arguments") or {}, None
            if not isinstance(arguments, dict):
                arguments, error = (
                    {},
                    f"arguments must be an object, got {type(arguments).__name__}",
                )
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            name, arguments, error = "unknown", {}, f"malformed tool call {raw[:200]!r}: {e}"
        calls.append(
            ToolCall(
                id=f"call_{uuid.uuid4().hex[:12]}",
                function=name,
                arguments=arguments,
                parse_error=error,
            )
        )
    if not calls:
        return text, None
    return _TOOL_CALL_RE.sub("", text).strip(), calls


def _to_logprobs(result: GenerationResult) -> Logprobs | None:
    if result.logprobs is None:
        return None
    return Logprobs(
        content=[
            Logprob(
                token=t.token,
                logprob=t.logprob,
                top_logprobs=[TopLogprob(token=s, logprob=v) for s, v in t.top] or None,
            )
            for t in result.logprobs
        ]
    )


def _split(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value if str(v).strip()]
    return [v.strip() for v in str(value).split(",") if v.strip()]


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("0", "false", "no", "off")
    return bool(value)
