"""The ``safelab/<model>`` Inspect model API: white-box models inside any Inspect eval.

``inspect eval <task> --model safelab/default`` (or ``safelab/<folder | .gguf | hub id>``) runs
the task on a local white-box model. Concurrent samples are batched into one ``generate``
call (:mod:`safelab.provider.batcher`). White-box records go to
``output.metadata["safelab"]``, which Inspect writes to the log. Model args (``-M``), from
:class:`safelab.provider.args.ProviderArgs`:
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from inspect_ai.model import (
    ChatCompletionChoice,
    ChatMessage,
    ChatMessageAssistant,
    GenerateConfig,
    Logprob,
    Logprobs,
    ModelAPI,
    ModelInfo,
    ModelOutput,
    ModelUsage,
    StopReason,
    TopLogprob,
    set_model_info,
)
from inspect_ai.tool import ToolChoice, ToolFunction, ToolInfo

from safelab.errors import SafelabError, inspect_errors
from safelab.interp.probes import LinearProbe
from safelab.interp.steering import resolve_steer
from safelab.models.generation import GenerationRequest, GenerationResult, encode_prompts
from safelab.models.kvcache import PrefixCacheConfig
from safelab.provider.args import ProviderArgs
from safelab.provider.batcher import Interventions, shared_batcher, shared_model
from safelab.provider.chat import (
    ToolDescriptions,
    forced_call,
    forced_call_prefix,
    parse_tool_calls,
    to_chat,
)
from safelab.sae.formats import load_sae
from safelab.sae.record import SAEFeatureReader

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
        self._start(model_args)

    @inspect_errors
    def _start(self, model_args: dict[str, Any]) -> None:
        """Parse ``-M``, read every artifact, load the model, then check each against it.

        Artifacts are read before the (slow) model load and checked against the model before any
        sample runs, so a wrong ``-M`` stops the eval at once with one line.
        """
        args = ProviderArgs.parse(model_args)
        self.args = args
        self.batch_size = args.batch_size
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
        saes = tuple((f, load_sae(f)) for f in args.sae)
        self.model = shared_model(self.model_name, args.dtype, args.device, args.linear)
        d_model = self.model.d_model
        sites = (
            tuple(str(s) for s in self.model.resolve_sites(list(args.capture)))
            if args.capture
            else ()
        )
        for path, (_, p) in zip(args.probe, probes, strict=True):
            self.model.resolve_sites(p.site)
            _check_width(f"-M probe={path}", int(p.weight.shape[-1]), d_model, self.model.name)
        for path, sae in saes:
            self.model.resolve_sites(sae.site)
            sae.check_fits(self.model, f"-M sae={path}")
        readers = tuple(
            (_artifact_name(f), SAEFeatureReader(sae, args.sae_top_k)) for f, sae in saes
        )
        if steer is not None:
            self.model.resolve_sites(steer.site)
            _check_width(
                f"-M steer={args.steer}",
                int(steer.vector.vector.shape[-1]),
                d_model,
                self.model.name,
            )
        self.interventions = Interventions(
            steer=steer,
            capture=sites,
            probes=probes,
            readers=readers,
            capture_vectors=args.capture_vectors,
        )
        cache = PrefixCacheConfig(args.prefix_cache_mb) if args.prefix_cache_mb > 0 else None
        self.batcher = shared_batcher(self.model, self.batch_size, cache, args.threads)
        # Tell Inspect the real window (compaction, trimming); its fallback is 128,000 tokens.
        set_model_info(
            f"safelab/{self.model_name}",
            ModelInfo(
                context_length=self.context_window,
                output_tokens=self.context_window,
                organization="safelab",
            ),
        )

    async def generate(
        self,
        input: list[ChatMessage],
        tools: list[ToolInfo],
        tool_choice: ToolChoice,
        config: GenerateConfig,
    ) -> ModelOutput:
        if tool_choice == "none":
            tools = []  # no tool is described and no call parsed
        messages = to_chat(input, tools, cast(ToolDescriptions, self.args.tool_descriptions))
        # A trailing assistant message is a prefill: continue it rather than open a new turn.
        prefill = messages[-1]["role"] == "assistant"
        text = self.model.render_chat(messages, continue_final_message=prefill)
        forced = forced_call_prefix(tool_choice, tools)
        text += forced
        wanted = config.max_tokens or DEFAULT_MAX_TOKENS
        room = self.context_window - len(encode_prompts(self.model, [text], [True])[0])
        if room <= 0:  # the prompt alone fills the window: nothing is generated
            return _length_output(self.model_name, -room + self.context_window)
        request = GenerationRequest(
            max_new_tokens=min(wanted, room),
            temperature=float(config.temperature or 0.0),
            top_p=config.top_p,
            top_k=config.top_k,
            stop=tuple(config.stop_seqs or ()),
            seed=config.seed,
            logprobs=bool(config.logprobs),
            top_logprobs=int(config.top_logprobs or 0),
        )
        result, record = await self.batcher.submit(
            text,
            request,
            self.interventions,
            continuous=self.args.batching == "continuous",
            use_cache=self.args.prefix_cache_mb > 0,
        )
        parallel = config.parallel_tool_calls is not False
        content, tool_calls = (
            parse_tool_calls(forced + result.text, parallel=parallel)
            if tools
            else (result.text, None)
        )
        if isinstance(tool_choice, ToolFunction) and tools:
            tool_calls = forced_call(tool_choice.name, tool_calls, forced + result.text)
        message = ChatMessageAssistant(
            content=content, tool_calls=tool_calls, model=self.model_name, source="generate"
        )
        stop_reason: StopReason = "stop"
        if tool_calls:
            stop_reason = "tool_calls"
        elif result.finish == "max_tokens":
            # Cut by the context window rather than by the asked max_tokens: Inspect's model_length.
            stop_reason = "model_length" if room < wanted else "max_tokens"
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

    @property
    def context_window(self) -> int:
        """Prompt plus completion tokens the model takes: ``-M context_window`` or its config's."""
        return self.args.context_window or self.model.context_window

    def max_connections(self) -> int:
        return self.batch_size

    def collapse_user_messages(self) -> bool:
        return True

    def model_family(self) -> str:
        return str(self.model.hf.config.model_type)


def _length_output(model: str, prompt_tokens: int) -> ModelOutput:
    """An empty reply with Inspect's ``model_length`` stop reason (the prompt fills the window)."""
    return ModelOutput(
        model=model,
        choices=[
            ChatCompletionChoice(
                message=ChatMessageAssistant(content="", model=model, source="generate"),
                stop_reason="model_length",
            )
        ],
        usage=ModelUsage(input_tokens=prompt_tokens, output_tokens=0, total_tokens=prompt_tokens),
    )


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


def _check_width(source: str, width: int, d_model: int, model: str) -> None:
    if width != d_model:
        raise SafelabError(
            f"{source}: made for a model of width {width} but {model} has d_model {d_model}: "
            "use one made on this model"
        )
