"""The README's tiny_lm perplexities are the ones the traces' provenance stores (written
by traces/make_tiny_lm_*.py when they were traced), so the README cannot drift."""

import re
from decimal import ROUND_HALF_UP, Decimal

import pytest
from conftest import ROOT

from accelsim.io.yamlio import read_yaml

README = (ROOT / "README.md").read_text(encoding="utf-8")
TARGETS = ("0%", "25%", "50%", "75%")


def _sig4(x: float) -> str:
    """4 significant figures of the stored decimal, halves rounded up, as the README
    prints them (3.5564 -> 3.556, 15.2087 -> 15.21, 5.0535 -> 5.054)."""
    d = Decimal(str(x))
    step = Decimal(1).scaleb(d.adjusted() - 3)
    return str(d.quantize(step, rounding=ROUND_HALF_UP))


def _provenance(name: str) -> dict:
    return read_yaml(ROOT / "traces" / name / "manifest.yaml")["provenance"]


def _readme_rows() -> dict[str, list[str]]:
    head = re.search(r"^\| target sparsity \| (.+) \|$", README, re.M)
    assert head, "the README's perplexity table is gone"
    assert [c.strip() for c in head.group(1).split("|")] == ["0", "25%", "50%", "75%"]
    rows = {}
    for m in re.finditer(r"^\| `(tiny_lm_\w+)` \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| "
                         r"([\d.]+) \|$", README, re.M):
        rows[m.group(1)] = list(m.groups()[1:])
    return rows


@pytest.mark.parametrize("name", ["tiny_lm_relu", "tiny_lm_gelu"])
def test_perplexity_table_matches_the_provenance(name):
    rows = _readme_rows()
    assert name in rows, f"README has no perplexity row for {name}"
    stored = _provenance(name)["validation_perplexity_ffn_threshold"]
    assert list(stored) == list(TARGETS)
    assert rows[name] == [_sig4(stored[t]) for t in TARGETS]


@pytest.mark.parametrize("name", ["tiny_lm_relu", "tiny_lm_gelu"])
def test_bundled_trace_table_perplexity_matches(name):
    """The bundled-traces table quotes the dense validation perplexity to 3 figures."""
    line = next(x for x in README.splitlines() if x.startswith(f"| `{name}` |")
                and "perplexity" in x)
    quoted = float(re.search(r"perplexity ([\d.]+)", line).group(1))
    assert quoted == round(_provenance(name)["validation_perplexity"], 2)


def test_sig4_rounds_like_the_readme():
    assert [_sig4(x) for x in (3.5564, 15.2087, 4.8968, 15.0835, 5.0535)] == [
        "3.556", "15.21", "4.897", "15.08", "5.054"]
