"""Notebook 02's verdicts, recomputed from the tables it recorded (committed run and reruns).

The notebook records AP, AtP and AtP_out per component (and the two curvature terms); the
error terms follow exactly, E_down = AP - AtP_out and E_local = AtP_out - AtP, and every share
and verdict is recomputed here with the test's own code (pandas sums, not
``hu.error_shares``), then compared with the verdict keys and values the notebook states.
"""

from __future__ import annotations

import pandas as pd

from tests.claims import Recorded, close, params

IDENTITY = ("head_out", "mlp_out", "neuron", "head_pattern")
LOCAL = ("head_q", "head_k", "neuron_pre")
#: Band edges of a downstream share, from the top: (lower edge, inclusive?, band).
BANDS = [
    (0.9, True, "almost_all_downstream"),
    (0.6, False, "mostly_downstream"),
    (0.4, True, "about_even"),
    (0.1, False, "mostly_local"),
]


def band(down: float) -> str:
    for edge, inclusive, name in BANDS:
        if down > edge or (inclusive and down == edge):
            return name
    return "almost_all_local"


def terms(rec: Recorded) -> pd.DataFrame:
    d = rec.table("diagnosis")
    return d.assign(E_down=d.AP - d.AtP_out, E_local=d.AtP_out - d.AtP)


def shares(d: pd.DataFrame) -> pd.DataFrame:
    sums = (
        d.assign(
            a_down=d.E_down.abs(),
            a_local=d.E_local.abs(),
            s_down=d.second_down.abs(),
            s_local=d.second_local.abs(),
            a_err=(d.AP - d.AtP).abs(),
        )
        .groupby(["perturbation", "kind"], sort=False)
        .agg(
            a_down=("a_down", "sum"),
            a_local=("a_local", "sum"),
            s_down=("s_down", "sum"),
            s_local=("s_local", "sum"),
            mean_error=("a_err", "mean"),
        )
    )
    sums["down"] = sums.a_down / (sums.a_down + sums.a_local)
    sums["second"] = sums.s_down / (sums.s_down + sums.s_local)
    return sums


def test_bands_match_the_stated_edges():
    assert [band(x) for x in (0.95, 0.9, 0.7, 0.6, 0.5, 0.4, 0.3, 0.1, 0.0)] == [
        "almost_all_downstream",
        "almost_all_downstream",
        "mostly_downstream",
        "about_even",
        "about_even",
        "about_even",
        "mostly_local",
        "almost_all_local",
        "almost_all_local",
    ]


@params("02")
def test_checks_hold(path):
    rec = Recorded(path)
    checks = rec.table("checks").set_index("perturbation")
    passed = checks < 1e-9
    _, stated = rec.only("diagnosis.checks_hold")
    assert stated["exponent"] == -9
    assert stated["n_passed"] == int(passed.all(axis=1).sum())
    assert stated["n_perturbations"] == len(checks)
    assert stated["all_pass"] is bool(passed.to_numpy().all())
    assert bool(rec.verdicts("diagnosis.split_exact")) is stated["all_pass"]
    # the identity kinds have no local term: AtP_out is AtP itself
    ident = terms(rec)[lambda d: d.kind.isin(IDENTITY)]
    assert (ident.E_local == 0).all() and (ident.second_local == 0).all()


@params("02")
def test_which_term_dominates(path):
    rec = Recorded(path)
    s = shares(terms(rec))
    n_local = 0
    for (p, kind), row in s.iterrows():
        if kind not in LOCAL:
            assert row.a_local == 0
            continue
        _, stated = rec.only("diagnosis.dominance", perturbation=p, kind=kind)
        assert close(stated["down_share"], row.down, rel=1e-3, abs_=1e-4), (p, kind)
        assert close(stated["second_down_share"], row.second, rel=1e-3, abs_=1e-4), (p, kind)
        assert stated["band"] == band(row.down) and stated["second_band"] == band(row.second)
        n_local += row.down < 0.4
    perturbations = list(dict.fromkeys(s.index.get_level_values("perturbation")))
    kinds = [k for k in dict.fromkeys(s.index.get_level_values("kind")) if k in LOCAL]
    total = len(kinds) * len(perturbations)
    key, stated = rec.only(
        "diagnosis.local_everywhere", "diagnosis.local_in_some", "diagnosis.local_nowhere"
    )
    assert (stated["n_local"], stated["total"]) == (n_local, total)
    expected = {0: "diagnosis.local_nowhere", total: "diagnosis.local_everywhere"}
    assert key == expected.get(n_local, "diagnosis.local_in_some")
    for kind in kinds:
        _, stated = rec.only("diagnosis.kind_bands", kind=kind)
        assert stated["bands"] == {p: band(s.loc[(p, kind)].down) for p in perturbations}


@params("02")
def test_largest_errors(path):
    rec = Recorded(path)
    d = terms(rec)
    key, stated = rec.only("diagnosis.worst_all_downstream", "diagnosis.worst_mixed")
    featured = d[d.perturbation == stated["perturbation"]]
    worst = featured.assign(err=(featured.AP - featured.AtP).abs()).nlargest(stated["n"], "err")
    assert stated["kinds"] == ", ".join(dict.fromkeys(worst.kind))
    no_local = int(worst.kind.isin(IDENTITY).sum())
    if no_local == len(worst):
        assert key == "diagnosis.worst_all_downstream"
    else:
        local = worst.E_local.abs().sum() / (worst.E_down.abs().sum() + worst.E_local.abs().sum())
        assert key == "diagnosis.worst_mixed"
        assert stated["n_without_local_map"] == no_local
        assert close(stated["local_share"], local, rel=1e-3, abs_=1e-4)


@params("02")
def test_largest_mean_error(path):
    rec = Recorded(path)
    s = shares(terms(rec))
    p, kind = s.mean_error.idxmax()
    key, stated = rec.only("diagnosis.largest_downstream", "diagnosis.largest_local")
    assert (stated["perturbation"], stated["kind"]) == (p, kind)
    assert close(stated["mean_error"], s.mean_error.max(), rel=1e-3)
    if kind in LOCAL:
        assert key == "diagnosis.largest_local"
        return
    local = s[s.index.get_level_values("kind").isin(LOCAL)].mean_error
    assert key == "diagnosis.largest_downstream"
    assert (stated["local_perturbation"], stated["local_kind"]) == local.idxmax()
    assert close(stated["ratio"], s.mean_error.max() / local.max(), rel=1e-3)
