"""models/ sits at the bottom: the white-box model works without importing the analysis layer."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys
import torch
import safelab.models.whitebox
from tests.tiny import tiny_model

model = tiny_model("llama")
model.capture(["The fox."], "blocks.1.resid_post", "last")
with model.steer(torch.ones(model.d_model), "blocks.1.resid_post", scale=1.0):
    model.logits(["The fox."])
with model.ablate(torch.ones(model.d_model), "blocks.*.resid_post"):
    model.generate(["The fox."], max_new_tokens=2)
print(sorted(m for m in sys.modules if m.startswith("safelab.interp")))
"""


def test_whitebox_imports_nothing_from_interp() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": f"{ROOT / 'src'}:{ROOT}", "HF_HUB_OFFLINE": "1", "PATH": ""},
    )
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


def test_sites_are_parsed_once(tiny_model) -> None:  # type: ignore[no-untyped-def]
    first = tiny_model.resolved_site("blocks.1.resid_post")
    assert tiny_model.resolved_site("blocks.1.resid_post") is first
    assert (first.layer, first.kind) == (1, "resid_post")
    assert first.module is tiny_model.adapter.blocks()[1]
    calls = []
    real = tiny_model.adapter.resolve

    def counting(site):  # type: ignore[no-untyped-def]
        calls.append(site)
        return real(site)

    tiny_model.adapter.resolve = counting
    for _ in range(3):
        with tiny_model.hooks({"blocks.0.mlp_out": lambda t: None}):
            pass
    assert len(calls) == 1  # resolved on the first hooks() call only


def test_import_safelab_and_the_inspect_registry_stay_free_of_torch() -> None:
    script = (
        "import sys, safelab, safelab._registry, safelab.provider.args\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "PATH": ""},
    )
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
