"""The cost comparison across model sizes (``python -m hvp_utils.cli.scaling --sizes``): its
component set and its pass counts against the closed forms of each estimator."""

from __future__ import annotations

import pytest

from hvp_utils.cli import scaling


@pytest.mark.slow
def test_sizes_table_counts_the_passes_each_estimator_needs(monkeypatch, tmp_path):
    tiny = dict(n_layer=2, n_embd=32, n_head=4, n_inner=64)
    monkeypatch.setattr(
        scaling, "SIZES", {"small": tiny, "small, GPT-2 vocabulary": {**tiny, "vocab_size": 50257}}
    )
    monkeypatch.setattr(scaling, "N_EACH", 3)
    table = scaling.size_table().set_index(["shape", "estimator"])
    n = 6  # 3 head outputs and 3 middle-layer neurons
    for shape in ("small", "small, GPT-2 vocabulary"):
        rows = table.loc[shape]
        # AP: clean, corrupted, one patched run per component; AtP: two runs, one backward
        assert tuple(rows.loc["AP", ["forward", "backward", "hvp"]]) == (2 + n, 0, 0)
        assert tuple(rows.loc["AtP", ["forward", "backward", "hvp"]]) == (3, 1, 0)
        # HVP joint: one Hessian-vector product along the whole perturbation
        assert rows.loc["HVP joint", "hvp"] == 1
        # HVP diag: one per component; Hutchinson: one per probe
        assert rows.loc["HVP diag", "hvp"] == n
        assert rows.loc["HVP hutchinson S=8", "hvp"] == 8
        assert rows.loc["AP", "x AP"] == pytest.approx(1.0)
        assert rows.loc["AtP", "x AtP"] == pytest.approx(1.0)
    assert table.loc[("small, GPT-2 vocabulary", "AP"), "params (M)"] > 3.0
    scaling.size_figure(table.reset_index(), str(tmp_path / "sizes.png"))
    assert (tmp_path / "sizes.png").stat().st_size > 10_000
