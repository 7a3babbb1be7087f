"""Tiny random-weight models built from a config, with a byte-level BPE tokenizer trained on
the spot: no files, no network, milliseconds to build."""

from __future__ import annotations

from functools import cache
from typing import Any

import torch

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France. Berlin is the capital of Germany.",
    "What is two plus two? Two plus two is four.",
    "I will not help with that request, but here is something safer.",
    "Safety researchers probe models for deception and power seeking.",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
FAMILIES = ("llama", "qwen2", "qwen3", "gemma2", "gemma3_text", "gpt2")


@cache
def tiny_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
    )


def tiny_config(family: str, vocab_size: int) -> Any:
    import transformers as tf

    common: dict[str, Any] = dict(
        vocab_size=vocab_size, eos_token_id=2, bos_token_id=1, pad_token_id=0
    )
    if family == "gpt2":
        return tf.GPT2Config(n_embd=32, n_layer=3, n_head=4, n_positions=128, **common)
    shape: dict[str, Any] = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        **common,
    )
    cls = {
        "llama": tf.LlamaConfig,
        "qwen2": tf.Qwen2Config,
        "qwen3": tf.Qwen3Config,
        "gemma2": tf.Gemma2Config,
        "gemma3_text": tf.Gemma3TextConfig,
    }[family]
    if family.startswith("gemma") or family == "qwen3":
        shape["head_dim"] = 8
    return cls(**shape)


def tiny_model(family: str = "llama", seed: int = 0) -> Any:
    """A WhiteBoxModel over a random-weight model of ``family`` (3 blocks, d_model 32)."""
    from transformers import AutoModelForCausalLM

    from safelab.models.whitebox import WhiteBoxModel

    torch.manual_seed(seed)
    tok = tiny_tokenizer()
    hf = AutoModelForCausalLM.from_config(tiny_config(family, len(tok)))
    hf.eval()
    return WhiteBoxModel(hf, tok, name=f"tiny-{family}")
