"""Funders other than municipalities in the settlement domain (design.md section 9): care a framework routes
to a funder, the contributions waterfall, and the invariant over all funders. Figures derived by hand."""
from __future__ import annotations

import datetime as dt
from collections import defaultdict
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from services.settlement.domain import ArrangementContext, CareLine, Close, close_period, net_cost_cents
from shared.money import cent_minutes_to_cents
from shared.schemas import Arrangement, Funder, Municipality

D = dt.date
VENRAY, HORST = "GM0984", "GM1507"
WEST, EAST = "GM1640", "GM1641"


def context(policy: dict, municipalities: dict[str, dict], host: str = VENRAY,
            funders: dict[str, dict] | None = None, start: dt.date = D(2025, 1, 1),
            end: dt.date = D(2025, 12, 31), rate_cents: int = 6500) -> ArrangementContext:
    arrangement = Arrangement.model_validate({
        "school_id": "focus", "group_ids": ["g1"], "start": start.isoformat(), "end": end.isoformat(),
        "rates": [{"from": start.isoformat(), "hourly_rate_cents": rate_cents}], "cap_cents": 10**12,
        "settlement": policy})
    return ArrangementContext(
        arrangement_id="arr", arrangement=arrangement, host_municipality=host,
        municipalities={code: Municipality.model_validate(doc) for code, doc in municipalities.items()},
        funders={fid: Funder.model_validate(doc) for fid, doc in (funders or {}).items()})


def line(rid: str, day: dt.date, minutes: int, pupils: list[tuple[str, str]], rate_cents: int = 6500,
         funder: str | None = None, **kw) -> CareLine:
    return CareLine(registration_id=rid, date=day, cost_cent_minutes=minutes * rate_cents, minutes=minutes,
                    attributions=tuple(pupils), attributed_to="listed", funder=funder, **kw)


def by_funder(statements: list[dict]) -> dict[str, dict]:
    return {s["funder"]: s for s in statements}


def test_e_wlz_care_goes_in_full_to_the_wlz_office_with_one_line_naming_the_pupil() -> None:
    ctx = context({"key": "residence_hours", "frameworks": {"wlz": "WLZ-ZK"}},
                  {VENRAY: {"name": "Venray"}, HORST: {"name": "Horst aan de Maas"}},
                  funders={"WLZ-ZK": {"name": "Zorgkantoor Noord-Limburg", "kind": "wlz_office"}})
    lines = [line("wlz-1", D(2025, 3, 3), 90, [("p-horst", HORST)], funder="WLZ-ZK"),
             line("jw-1", D(2025, 3, 4), 60, [("p-venray", VENRAY)])]
    result = close_period(ctx, lines, [], D(2025, 3, 1), D(2025, 3, 31), D(2025, 4, 1))
    statements = by_funder(result.statements)
    # 90 min x EUR 65.00/h = EUR 97.50 to the Wlz office; 60 min = EUR 65.00 to Venray; Horst nothing.
    assert {f: s["total_cents"] for f, s in statements.items()} == {"WLZ-ZK": 9750, VENRAY: 6500}
    wlz = statements["WLZ-ZK"]
    assert (wlz["funder_kind"], wlz["funder_name"], wlz["municipality"]) == \
        ("wlz_office", "Zorgkantoor Noord-Limburg", None)
    assert wlz["frameworks"] == ["wlz"]
    [only] = wlz["lines"]
    assert (only["registration_id"], only["pupils"], only["date"], only["minutes"], only["amount_cents"]) == \
        ("wlz-1", ["p-horst"], "2025-03-03", "90", 9750)
    assert statements[VENRAY]["funder_kind"] == "municipality" and statements[VENRAY]["municipality"] == VENRAY
    assert result.close.charged_cents == 9750 + 6500


def test_f_midden_limburg_waterfall_education_then_subsidy_then_the_municipalities_by_youth_share() -> None:
    ctx = context({"key": "youth_share", "municipalities": [WEST, EAST],
                   "contributions": [{"funder": "SWV", "amount_cents": 2_000_000, "label": "onderwijs"},
                                     {"funder": "BEL", "amount_cents": 10_000_000, "label": "BEL-subsidie"}]},
                  {WEST: {"name": "West", "youth_population": 7812}, EAST: {"name": "Oost", "youth_population": 6188}},
                  host=WEST, rate_cents=7000,
                  funders={"SWV": {"name": "Samenwerkingsverband", "kind": "school_partnership"},
                           "BEL": {"name": "BEL-fonds", "kind": "subsidy_fund"}})
    # EUR 140,000.00 = 200 registrations x 600 min x EUR 70.00/h, in the first half of 2025.
    lines = [line(f"r{i}", D(2025, 1, 1) + dt.timedelta(days=i % 181), 600, [("p1", WEST)], rate_cents=7000)
             for i in range(200)]
    result = close_period(ctx, lines, [], D(2025, 1, 1), D(2025, 6, 30), D(2025, 7, 1))
    totals = {f: s["total_cents"] for f, s in by_funder(result.statements).items()}
    # Education EUR 20,000.00 first, then BEL EUR 100,000.00; the rest EUR 20,000.00 by 7812 : 6188 of 14000:
    # 20,000.00 x 0.558 = EUR 11,160.00 and 20,000.00 x 0.442 = EUR 8,840.00.
    assert totals == {"SWV": 2_000_000, "BEL": 10_000_000, WEST: 1_116_000, EAST: 884_000}
    bel = by_funder(result.statements)["BEL"]
    assert bel["contributions"] == [{"position": 1, "label": "BEL-subsidie", "amount_cents": 10_000_000,
                                     "applied_cents": 10_000_000, "this_statement_cents": 10_000_000}]
    west = by_funder(result.statements)[WEST]
    assert {l["kind"] for l in west["lines"]} == {"care", "contribution"}
    # West's care 78,120.00 (0.558 of 140,000.00), of which the contributions paid 0.558 x 120,000.00 = 66,960.00.
    assert (west["contributions_deducted_cents"], west["education_contribution_cents"]) == (6_696_000, 0)


def test_contributions_are_used_up_first_statements_first_over_several_closes() -> None:
    ctx = context({"key": "fixed_shares", "shares": {WEST: 1, EAST: 1},
                   "contributions": [{"funder": "SWV", "amount_cents": 10_000}, {"funder": "BEL", "amount_cents": 5_000}]},
                  {WEST: {"name": "West"}, EAST: {"name": "Oost"}}, host=WEST)
    # Close 1: 120 min x EUR 65 = EUR 130.00: SWV EUR 100.00 (all of it), BEL EUR 30.00, municipalities 0.
    first = close_period(ctx, [line("a", D(2025, 1, 10), 120, [("p", WEST)])], [], D(2025, 1, 1), D(2025, 1, 31),
                         D(2025, 2, 1))
    assert {f: s["total_cents"] for f, s in by_funder(first.statements).items()} == \
        {"SWV": 10_000, "BEL": 3_000, WEST: 0, EAST: 0}
    # Close 2: another EUR 130.00: SWV is used up, BEL its last EUR 20.00, the municipalities EUR 110.00, 55 each.
    lines = [line("a", D(2025, 1, 10), 120, [("p", WEST)]), line("b", D(2025, 2, 10), 120, [("p", WEST)])]
    second = close_period(ctx, lines, [first.close], D(2025, 2, 1), D(2025, 2, 28), D(2025, 3, 1))
    assert {f: s["total_cents"] for f, s in by_funder(second.statements).items()} == \
        {"BEL": 2_000, WEST: 5_500, EAST: 5_500}
    assert dict(second.close.contributions_applied) == {"0:SWV": 10_000, "1:BEL": 5_000}
    # A late void of "a" (EUR 130.00) at close 3: the municipal cost so far falls to EUR 130.00, so BEL is
    # handed back EUR 20.00 and the municipalities credited EUR 110.00 (the contributions stay first).
    lines[0] = line("a", D(2025, 1, 10), 120, [("p", WEST)], voided=True, voided_since_close=2)
    third = close_period(ctx, lines, [first.close, second.close], D(2025, 3, 1), D(2025, 3, 31), D(2025, 4, 1))
    totals = {f: s["total_cents"] for f, s in by_funder(third.statements).items()}
    assert totals == {"BEL": -2_000, WEST: -5_500, EAST: -5_500}


def test_a_late_wlz_registration_is_a_correction_on_the_wlz_office_statement() -> None:
    ctx = context({"key": "residence_hours", "frameworks": {"wlz": "WLZ-ZK"}}, {VENRAY: {"name": "Venray"}})
    first = close_period(ctx, [line("jw", D(2025, 3, 4), 60, [("p", VENRAY)])], [], D(2025, 3, 1), D(2025, 3, 31),
                         D(2025, 4, 1))
    late = line("wlz-late", D(2025, 3, 20), 30, [("p", VENRAY)], funder="WLZ-ZK", known_since_close=1)
    second = close_period(ctx, [line("jw", D(2025, 3, 4), 60, [("p", VENRAY)]), late], [first.close],
                          D(2025, 4, 1), D(2025, 4, 30), D(2025, 5, 1))
    wlz = by_funder(second.statements)["WLZ-ZK"]
    # 30 min x EUR 65.00/h = EUR 32.50, for March, settled on the April close.
    assert wlz["total_cents"] == 3250
    assert [(l["kind"], l["registration_id"], l["original_period_start"]) for l in wlz["lines"]] == \
        [("correction", "wlz-late", "2025-03-01")]


# --- property: all funders' statements plus the applied education contribution equal the cost -------

FUNDERS = [None, None, "WLZ-ZK", "ZVW-1"]


@st.composite
def facts(draw: st.DrawFn) -> tuple[dict, list[tuple[int, CareLine, int | None]], list[int]]:
    policy = {"key": draw(st.sampled_from(["residence_hours", "fixed_shares", "host_pays"])),
              "shares": {WEST: draw(st.integers(1, 5)), EAST: draw(st.integers(0, 5))},
              "education_contribution_cents": draw(st.sampled_from([0, 1, 5_000])),
              "frameworks": {"wlz": "WLZ-ZK", "zvw": "ZVW-1"},
              "contributions": [{"funder": "SWV", "amount_cents": draw(st.integers(1, 20_000))},
                                {"funder": "BEL", "amount_cents": draw(st.integers(1, 20_000))}]}
    ends = sorted(set(draw(st.lists(st.integers(20, 330), min_size=1, max_size=4))))
    items = []
    for n in range(draw(st.integers(0, 25))):
        learned_at = draw(st.integers(0, len(ends)))  # close count when the service learned of it
        void_at = draw(st.one_of(st.none(), st.integers(learned_at, len(ends))))
        minutes = draw(st.integers(1, 300))
        rate = draw(st.sampled_from([6500, 7001]))
        homes = draw(st.lists(st.sampled_from([WEST, EAST]), min_size=1, max_size=3))
        items.append((learned_at, CareLine(
            registration_id=f"r{n}", date=D(2025, 1, 1) + dt.timedelta(days=draw(st.integers(0, 340))),
            cost_cent_minutes=minutes * rate, minutes=minutes,
            attributions=tuple((f"p{i}", h) for i, h in enumerate(homes)), attributed_to="listed",
            funder=draw(st.sampled_from(FUNDERS))), void_at))
    return policy, items, ends


@settings(max_examples=150, deadline=None)
@given(facts())
def test_all_funders_statements_plus_the_education_contribution_equal_the_cost(case) -> None:  # noqa: ANN001
    policy, items, ends = case
    ctx = context(policy, {WEST: {"name": "West"}, EAST: {"name": "Oost"}}, host=WEST)
    history: list[Close] = []
    issued = 0
    issued_by: dict[str, int] = defaultdict(int)
    start = D(2025, 1, 1)
    for sequence, end_day in enumerate(ends + [364], start=1):
        made = sequence - 1
        lines = []
        for learned_at, care, void_at in items:
            if learned_at > made:
                continue  # not learned yet
            known = CareLine(care.registration_id, care.date, care.cost_cent_minutes, care.minutes, care.attributions,
                             care.attributed_to, known_since_close=learned_at, funder=care.funder)
            if void_at is not None and void_at <= made:
                known = known.voided_at(void_at)
            lines.append(known)
        end = D(2025, 1, 1) + dt.timedelta(days=end_day)
        result = close_period(ctx, lines, history, start, end, D(2026, 1, 1))
        for statement in result.statements:
            assert sum(l["amount_cents"] for l in statement["lines"]) == statement["total_cents"]
        issued += sum(s["total_cents"] for s in result.statements)
        for s in result.statements:
            issued_by[s["funder"]] += s["total_cents"]
        history.append(result.close)
        start = end + dt.timedelta(days=1)
    # Every fact was learned by the last close (learned_at <= len(ends)), so everything is settled: the
    # statements of all funders plus the education contribution applied equal the rounded cost of live care.
    live = [l for l in lines if not l.voided]
    cost = cent_minutes_to_cents(sum(l.cost_cent_minutes for l in live))
    municipal = cent_minutes_to_cents(sum(l.cost_cent_minutes for l in live if l.funder is None))
    education = min(policy["education_contribution_cents"], municipal)
    assert issued + education == cost
    assert issued == net_cost_cents(ctx.arrangement, lines)
    # Framework care goes to its funder only: each close gives it the floor or ceiling of its exact share, so
    # over all closes a framework funder is within one cent per close of the exact cost of its care.
    for funder in ("WLZ-ZK", "ZVW-1"):
        exact = sum(Fraction(l.cost_cent_minutes, 60) for l in live if l.funder == funder)
        assert abs(issued_by[funder] - exact) < len(history), (funder, issued_by[funder], exact)


def test_a_funder_statement_renders_as_csv_and_pdf_with_its_registrations() -> None:
    import csv
    import io

    from pypdf import PdfReader

    from services.settlement.render import statement_csv, statement_pdf
    ctx = context({"key": "residence_hours", "frameworks": {"wlz": "WLZ-ZK"}}, {VENRAY: {"name": "Venray"}},
                  funders={"WLZ-ZK": {"name": "Zorgkantoor Noord-Limburg", "kind": "wlz_office"}})
    result = close_period(ctx, [line("wlz-1", D(2025, 3, 3), 90, [("p-horst", HORST)], funder="WLZ-ZK")], [],
                          D(2025, 3, 1), D(2025, 3, 31), D(2025, 4, 1))
    wlz = by_funder(result.statements)["WLZ-ZK"]
    [row] = list(csv.DictReader(io.StringIO(statement_csv(wlz, lang="en"))))
    assert (row["funder"], row["municipality"], row["pupils"], row["amount"]) == ("WLZ-ZK", "", "p-horst", "97.50")
    text = PdfReader(io.BytesIO(statement_pdf(wlz, "Regio Noord-Limburg"))).pages[0].extract_text()
    assert "Zorgkantoor Noord-Limburg (WLZ-ZK)" in text and "wlz-1" in text and "97,50" in text
