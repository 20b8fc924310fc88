"""hu.Findings: prose with its numbers, recorded so that claim tests can recompute them."""

import base64
import json
import zlib

import nbformat
import pandas as pd
import pytest

import hvp_utils as hu
from hvp_utils.analysis.findings import RECORD_KEY
from hvp_utils.analysis.findings.wording import SENTENCES
from tests.claims import Recorded


def test_record_rounds_and_returns_the_value():
    found = hu.Findings("99")
    assert found.record("x", 1.23456789) == 1.23456789
    assert found.values["x"] == 1.23457
    assert found.record("flag", True) is True and found.values["flag"] is True
    found.record("nan", float("nan"))
    assert found.values["nan"] is None
    with pytest.raises(KeyError, match="twice"):
        found.record("x", 2.0)
    with pytest.raises(TypeError, match="cannot record"):
        found.record("obj", object())


def test_table_keeps_the_index_and_bundle_is_json():
    found = hu.Findings("99", title="t")
    frame = pd.DataFrame({"AP": [1.0, 2.0]}, index=pd.Index(["a", "b"], name="component"))
    found.table("t", frame)
    found.say("Two effects.")
    bundle, metadata = found._repr_mimebundle_()
    text = "**t**\n\n- Two effects."
    assert bundle == {"text/markdown": text, "text/plain": text}
    stored = json.loads(json.dumps(metadata[RECORD_KEY]))["tables"]["t"]
    packed = json.loads(zlib.decompress(base64.b64decode(stored)))
    assert packed == {"columns": ["component", "AP"], "data": [["a", 1.0], ["b", 2.0]]}


@pytest.mark.parametrize(
    ("n", "total", "expected"),
    [
        (32, 32, "all 32 heads"),
        (0, 32, "none of the 32 heads"),
        (1, 32, "1 of 32 heads"),
        (5, 32, "5 of 32 heads"),
        (1, 1, "the one head"),
    ],
)
def test_count_phrase(n, total, expected):
    assert hu.count_phrase(n, total, "head") == expected


def test_recorded_reads_findings_back_from_a_notebook(tmp_path):
    found = hu.Findings("99")
    found.record("n", 3)
    frame = pd.DataFrame({"flag": [True, False], "layer": [0, 3], "AP": [0.5, None]})
    found.table("rows", frame)
    found.say("Three.")
    found.state("diagnosis.identity_kinds")
    bundle, metadata = found._repr_mimebundle_()
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("found")
    cell.outputs = [nbformat.v4.new_output("display_data", data=bundle, metadata=metadata)]
    nb.cells = [cell]
    path = tmp_path / "99_x.ipynb"
    nbformat.write(nb, path)
    recorded = Recorded(path)
    assert recorded["n"] == 3 and recorded.says("Three")
    back = recorded.table("rows")
    assert back.flag.tolist() == [True, False] and back.layer.tolist() == [0, 3]
    assert back.AP.iloc[0] == 0.5 and pd.isna(back.AP.iloc[1])
    assert recorded.only("diagnosis.identity_kinds") == ("diagnosis.identity_kinds", {})


def test_a_verdict_without_wording_is_an_error():
    with pytest.raises(KeyError, match="no wording"):
        hu.Findings("99").state("no.such.verdict")


def test_every_sentence_is_a_template_or_a_function():
    for key, template in SENTENCES.items():
        assert callable(template) or isinstance(template, str), key
