"""The provider's -M args: one dataclass gives the parsing, the error and the docs table."""

import os
from pathlib import Path

import pytest

from safelab.errors import SafelabError
from safelab.provider import api
from safelab.provider.args import ProviderArgs


def test_model_args_parse_from_inspect_strings() -> None:
    args = ProviderArgs.parse(
        {"capture": "blocks.0.resid_post, blocks.1.mlp_out", "steer_scale": "-2.5"}
        | {"capture_vectors": "false", "batch_size": "4", "probe": ["a", " b "]}
    )
    assert args.capture == ("blocks.0.resid_post", "blocks.1.mlp_out")
    assert args.steer_scale == -2.5 and args.batch_size == 4 and args.capture_vectors is False
    assert args.probe == ("a", "b") and args.steer is None and args.dtype == "auto"
    assert ProviderArgs.parse({}) == ProviderArgs()


def test_unknown_and_malformed_args_name_the_known_ones() -> None:
    with pytest.raises(SafelabError, match=r"unknown model args.*steering.*known: steer, "):
        ProviderArgs.parse({"steering": "x"})
    with pytest.raises(SafelabError, match="-M batch_size='many'"):
        ProviderArgs.parse({"batch_size": "many"})


def test_every_arg_is_in_the_providers_docstring() -> None:
    assert api.__doc__ is not None
    for name in ProviderArgs.names():
        assert f"``{name}``" in api.__doc__


def test_batching_cache_and_thread_args() -> None:
    import torch

    from safelab.provider.batcher import ThreadPolicy

    args = ProviderArgs.parse({"batching": "static", "prefix_cache_mb": "0", "threads": "AUTO"})
    assert (args.batching, args.prefix_cache_mb, args.threads) == ("static", 0.0, "auto")
    defaults = ProviderArgs()
    assert (defaults.batching, defaults.prefix_cache_mb, defaults.threads) == (
        "continuous",
        512.0,
        "auto",
    )
    assert ProviderArgs.parse({"threads": "torch"}).threads == "torch"
    for bad in ({"threads": "0"}, {"threads": "many"}, {"batching": "dynamic"}):
        with pytest.raises(SafelabError, match=f"-M {next(iter(bad))}="):
            ProviderArgs.parse(bad)
    saved = torch.get_num_threads()
    try:
        policy = ThreadPolicy()
        policy.apply()  # no setting: torch's own is left alone
        assert torch.get_num_threads() == saved and policy.current is None
        policy.set("torch")
        policy.apply()
        assert torch.get_num_threads() == saved and policy.current is None
        policy.set("1")
        policy.apply()
        assert torch.get_num_threads() == 1
        policy.set("auto")
        policy.apply()
        assert policy.current is not None and 1 <= policy.current <= (os.cpu_count() or 1)
    finally:
        torch.set_num_threads(saved)


def test_linear_kernel_arg(tiny_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from inspect_ai.model import get_model

    from safelab.models.kernels import onednn_available

    assert ProviderArgs().linear is None  # load_model's default: $SAFELAB_LINEAR_KERNEL, else auto
    assert ProviderArgs.parse({"linear": "torch"}).linear == "torch"
    with pytest.raises(SafelabError, match="-M linear='mkl'"):
        ProviderArgs.parse({"linear": "mkl"})
    plain = get_model(f"safelab/{tiny_folder}", linear="torch").api.model  # type: ignore[attr-defined]
    auto = get_model(f"safelab/{tiny_folder}").api.model  # type: ignore[attr-defined]
    assert plain is not auto  # a model per kernel: one instance's choice never changes another's
    assert plain.linear_kernel == "torch"
    assert auto.linear_kernel == ("onednn" if onednn_available() else "torch")
    monkeypatch.setenv("SAFELAB_LINEAR_KERNEL", "torch")  # the variable reaches provider models
    again = get_model(f"safelab/{tiny_folder}", dtype="float32").api.model  # type: ignore[attr-defined]
    assert again is not auto and again.linear_kernel == "torch"
