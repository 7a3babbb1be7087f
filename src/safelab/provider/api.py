"""The ``safelab/<model>`` Inspect model API: white-box models inside any Inspect eval.

``inspect eval <task> --model safelab/default`` (or ``safelab/<folder | .gguf | hub id>``) runs
the task on a local white-box model. Concurrent samples are batched into one ``generate``
call (:mod:`safelab.provider.batcher`). White-box records go to
``output.metadata["safelab"]``, which Inspect writes to the log. Model args (``-M``), from
:class:`safelab.provider.args.ProviderArgs`:
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inspect_ai.model import (
    ChatCompletionChoice,
    ChatMessage,
    ChatMessageAssistant,
    GenerateConfig,
    Logprob,
    Logprobs,
    ModelAPI,
    ModelOutput,
    ModelUsage,
    StopReason,
    TopLogprob,
)
from inspect_ai.tool import ToolChoice, ToolInfo

from safelab.interp.probes import LinearProbe
from safelab.interp.readout import TokenReader
from safelab.interp.steering import resolve_steer
from safelab.models.generation import GenerationRequest, GenerationResult
from safelab.models.whitebox import WhiteBoxModel
from safelab.provider.args import ProviderArgs
from safelab.provider.batcher import Interventions, shared_batcher, shared_model
from safelab.provider.chat import parse_tool_calls, to_chat
from safelab.sae.record import SAEFeatureReader
from safelab.sae.sae import load_sae

__doc__ = f"{__doc__ or ''}\n{ProviderArgs.table()}\n"

DEFAULT_MAX_TOKENS = 512


class SafelabModelAPI(ModelAPI):
    """Inspect ``ModelAPI`` over a :class:`~safelab.models.whitebox.WhiteBoxModel`."""

    def __init__(
        self,
        model_name: str,
        base_url: str | None = None,
        api_key: str | None = None,
        config: GenerateConfig = GenerateConfig(),  # noqa: B008 (Inspect's own signature)
        **model_args: Any,
    ) -> None:
        super().__init__(model_name=model_name, base_url=base_url, api_key=api_key, config=config)
        args = ProviderArgs.parse(model_args)
        self.args = args
        self.batch_size = args.batch_size
        self.model = shared_model(model_name, args.dtype, args.device)
        steer = (
            resolve_steer(
                args.steer,
                scale=args.steer_scale,
                positions=args.steer_positions,
                site=args.steer_site,
            )
            if args.steer
            else None
        )
        probes = tuple((_artifact_name(p), LinearProbe.load(p)) for p in args.probe)
        sites = (
            tuple(str(s) for s in self.model.resolve_sites(list(args.capture)))
            if args.capture
            else ()
        )
        readers = tuple(
            (_artifact_name(f), _sae_reader(f, args.sae_top_k, self.model)) for f in args.sae
        )
        for _, p in probes:
            self.model.resolve_sites(p.site)
        for _, r in readers:
            self.model.resolve_sites(r.site)
        if steer is not None:
            self.model.resolve_sites(steer.site)
        self.interventions = Interventions(
            steer=steer,
            capture=sites,
            probes=probes,
            readers=readers,
            capture_vectors=args.capture_vectors,
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
        steer = self.interventions.steer
        metadata: dict[str, Any] | None = None
        if record or steer is not None:
            metadata = {"safelab": {**record, **({"steer": steer.record()} if steer else {})}}
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


def _artifact_name(path: str) -> str:
    """A probe's or SAE's key in the sample metadata: its file stem or folder name."""
    return Path(path).stem if Path(path).suffix else Path(path).name


def _sae_reader(folder: str, k: int, model: WhiteBoxModel) -> TokenReader:
    sae = load_sae(folder)
    sae.check_fits(model, f"-M sae={folder}")
    return SAEFeatureReader(sae, k)
