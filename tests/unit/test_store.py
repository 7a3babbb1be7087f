import json

import pytest
import torch

from safelab.errors import SafelabError
from safelab.interp.store import ActivationStore, capture_to_store
from safelab.models import capture as capture_module

TEXTS = [f"Sentence number {i} is about the quick brown fox." for i in range(23)]
SITES = "blocks.0.resid_post,blocks.2.resid_pre"


def test_store_equals_in_memory_capture(tiny_model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = capture_to_store(
        tiny_model,
        TEXTS,
        SITES,
        tmp_path / "s",
        position="all",
        batch_size=4,
        shard_rows=40,
        progress=False,
    )
    assert len(store.manifest.shards) > 1 and store.manifest.complete
    direct = tiny_model.capture(TEXTS, SITES, position="all")
    loaded = ActivationStore(tmp_path / "s").load()
    assert loaded.sample.tolist() == direct.sample.tolist()
    for site in direct.sites:
        torch.testing.assert_close(loaded[site], direct[site], atol=1e-5, rtol=1e-5)
    assert sum(len(s) for s in store.iter_shards()) == len(direct)


def test_resume_after_crash_loses_and_repeats_nothing(tiny_model, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    real_forward = capture_module._forward
    calls = {"n": 0}

    def crashing_forward(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(capture_module, "_forward", crashing_forward)
    with pytest.raises(KeyboardInterrupt):
        capture_to_store(
            tiny_model,
            TEXTS,
            SITES,
            tmp_path / "s",
            "all",
            batch_size=2,
            shard_rows=20,
            progress=False,
        )
    partial = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert 0 < partial["inputs_done"] < len(TEXTS)
    (tmp_path / "s" / "shard-00099.safetensors").write_bytes(b"orphan from a crash")
    monkeypatch.setattr(capture_module, "_forward", real_forward)
    resumed = capture_to_store(
        tiny_model, TEXTS, SITES, tmp_path / "s", "all", batch_size=2, shard_rows=20, progress=False
    )
    assert not (tmp_path / "s" / "shard-00099.safetensors").exists()
    whole = capture_to_store(
        tiny_model, TEXTS, SITES, tmp_path / "w", "all", batch_size=2, shard_rows=20, progress=False
    )
    a, b = resumed.load(), whole.load()
    assert a.sample.tolist() == b.sample.tolist() and a.position.tolist() == b.position.tolist()
    for site in a.sites:
        torch.testing.assert_close(a[site], b[site])


def test_store_refuses_other_inputs_and_corrupt_shards(tiny_model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    capture_to_store(tiny_model, TEXTS[:5], SITES, tmp_path / "s", "last", progress=False)
    with pytest.raises(SafelabError, match="different fingerprint"):
        capture_to_store(tiny_model, TEXTS[5:10], SITES, tmp_path / "s", "last", progress=False)
    shard = next((tmp_path / "s").glob("shard-*.safetensors"))
    shard.write_bytes(b"\x00garbage")
    with pytest.raises(SafelabError, match="not a readable safetensors shard"):
        ActivationStore(tmp_path / "s").load()
    with pytest.raises(SafelabError, match="no activation store"):
        ActivationStore(tmp_path / "missing")


def test_half_precision_store(tiny_model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = capture_to_store(
        tiny_model, TEXTS[:4], SITES, tmp_path / "h", "all", dtype="bfloat16", progress=False
    )
    assert store.load()["blocks.0.resid_post"].dtype == torch.bfloat16
