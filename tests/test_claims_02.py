"""Notebook 02's findings, recomputed from the tables it recorded (committed run and reruns).

The notebook records AP, AtP and AtP_out per component (and the two curvature terms); the
error terms follow exactly, E_down = AP - AtP_out and E_local = AtP_out - AtP, and every share
and verdict its sentences state is recomputed from them here.
"""

from __future__ import annotations

import pandas as pd

from tests.claims import Recorded, close, params

IDENTITY = ("head_out", "mlp_out", "neuron", "head_pattern")
LOCAL = ("head_q", "head_k", "neuron_pre")


def verdict(down: float) -> str:
    """The band a downstream share falls in, as the notebook must word it."""
    if down >= 0.9:
        return "almost all downstream"
    if down > 0.6:
        return "mostly downstream"
    if down >= 0.4:
        return "about even"
    if down > 0.1:
        return "mostly local"
    return "almost all local"


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


@params("02")
def test_checks_hold(path):
    rec = Recorded(path)
    checks = rec.table("checks").set_index("perturbation")
    assert rec["check_threshold"] == 1e-9
    assert rec["all_checks_pass"] is bool(checks.to_numpy().all())
    n_ok = int(checks.all(axis=1).sum())
    where = "both perturbations" if n_ok == len(checks) == 2 else f"{n_ok} of {len(checks)}"
    assert rec.says(f"On {where}") and rec.says("every check above holds to within 1e-9")
    d = terms(rec)
    # the identity kinds have no local term: AtP_out is AtP itself
    ident = d[d.kind.isin(IDENTITY)]
    assert (ident.E_local == 0).all() and (ident.second_local == 0).all()
    if rec["all_checks_pass"]:
        assert rec.says("splits exactly into a downstream and a local term")


@params("02")
def test_which_term_dominates(path):
    rec = Recorded(path)
    s = shares(terms(rec))
    perturbations = list(dict.fromkeys(s.index.get_level_values("perturbation")))
    n_local = 0
    for (p, kind), row in s.iterrows():
        if kind not in LOCAL:
            assert row.a_local == 0
            continue
        down, second = rec[f"down_share_{p}_{kind}"], rec[f"second_down_share_{p}_{kind}"]
        assert close(down, row.down, rel=1e-3, abs_=1e-4), (p, kind)
        assert close(second, row.second, rel=1e-3, abs_=1e-4), (p, kind)
        assert rec.says(
            f"`{p}`, {kind}: the AtP error is {verdict(down)} ({down:.0%} downstream, "
            f"{1 - down:.0%} local); the curvature g''(0) is {verdict(second)} ({second:.0%} "
            "downstream)."
        )
        # a near 50/50 split never reads as domination
        if 0.4 <= down <= 0.6:
            assert not rec.says(f"`{p}`, {kind}: the AtP error is mostly")
        n_local += down < 0.4
    kinds = [k for k in LOCAL if k in s.index.get_level_values("kind")]
    total = len(kinds) * len(perturbations)
    assert rec["n_local_dominated"] == n_local
    if n_local == total:
        assert rec.says(
            "Wherever a component has a local non-linearity, its local term carries most"
        )
    elif n_local:
        assert rec.says(
            f"The local term carries most of the error (more than 60%) in {n_local} of the {total}"
        )
    else:
        assert rec.says("Even where a component has a local non-linearity, the local term does not")
    for kind in kinds:
        said = [verdict(rec[f"down_share_{p}_{kind}"]) for p in perturbations]
        if len(said) == 2 and said[0] == said[1]:
            words = f"{said[0]} under both perturbations"
        else:
            words = " and ".join(
                f"{v} under `{p}`" for v, p in zip(said, perturbations, strict=True)
            )
        assert rec.says(f"the error is {words}."), kind


@params("02")
def test_largest_errors(path):
    rec = Recorded(path)
    d = terms(rec)
    featured = d[d.perturbation == rec["featured_perturbation"]]
    worst = featured.assign(err=(featured.AP - featured.AtP).abs()).nlargest(rec["n_worst"], "err")
    no_local = int(worst.kind.isin(IDENTITY).sum())
    assert rec["worst_without_local_map"] == no_local
    local = worst.E_local.abs().sum() / (worst.E_down.abs().sum() + worst.E_local.abs().sum())
    assert close(rec["worst_local_share"], local, rel=1e-3, abs_=1e-4)
    if no_local == len(worst):
        assert rec.says("are all of kinds without a local map")
    else:
        assert rec.says(f"{no_local} have no local map; the local term carries {local:.0%}")
    # the summary's comparison of absolute sizes
    s = shares(d)
    largest = s.mean_error.idxmax()
    assert rec["largest_mean_error_kind"] == largest[1]
    assert rec["largest_mean_error_perturbation"] == largest[0]
    local_rows = s[s.index.get_level_values("kind").isin(LOCAL)]
    ratio = s.mean_error.max() / local_rows.mean_error.max()
    assert close(rec["largest_over_largest_local"], ratio, rel=1e-3)
    if largest[1] not in LOCAL:
        assert rec.says(
            f"the largest mean |AP - AtP| is that of {largest[1]} under `{largest[0]}` "
            f"({s.mean_error.max():.3f}), {ratio:.1f} times"
        )
