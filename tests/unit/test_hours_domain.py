"""Unit tests of the pure hours domain: services/hours/domain.py `assess` (design.md sections 3-4)."""
from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from services.hours.domain import Accepted, Rejected, assess
from shared.events import Attribution
from shared.registry import RegistryCopy
from shared.schemas import Arrangement, Group, Municipality, Pupil, Registration, School

D = dt.date
VENRAY = "GM0984"
HORST = "GM1507"
GENNEP = "GM0907"
START = D(2025, 8, 18)
END = D(2026, 7, 10)
MOVE = D(2026, 1, 15)
RATE_SWITCH = D(2026, 1, 1)


class Builder:
    """Builds a RegistryCopy the way a service does: by applying JSON documents with rising versions."""

    def __init__(self) -> None:
        self.copy = RegistryCopy()
        self.version = 0

    def put(self, kind: str, key: str, model: Any) -> "Builder":
        self.version += 1
        self.copy.apply(kind, key, model.model_dump(mode="json", by_alias=True), self.version)
        return self

    def municipality(self, code: str, name: str) -> "Builder":
        return self.put("municipality", code, Municipality(name=name))

    def school(self, school_id: str, host: str) -> "Builder":
        return self.put("school", school_id, School(name=school_id.title(), municipality=host))

    def group(self, school_id: str, group_id: str) -> "Builder":
        return self.put("group", f"{school_id}/{group_id}", Group(name=group_id))

    def pupil(self, school_id: str, ref: str, group_id: str, residence: list[dict[str, Any]],
              enrolled_from: dt.date = START, enrolled_until: dt.date | None = None,
              eligibility: list[dict[str, Any]] | None = None) -> "Builder":
        pupil = Pupil.model_validate({
            "group_id": group_id,
            "enrolled_from": enrolled_from.isoformat(),
            "enrolled_until": enrolled_until.isoformat() if enrolled_until else None,
            "residence": residence,
            "eligibility": eligibility or [],
        })
        return self.put("pupil", f"{school_id}/{ref}", pupil)

    def arrangement(self, arrangement_id: str, school_id: str, group_ids: list[str], start: dt.date = START,
                    end: dt.date = END, rates: list[tuple[dt.date, int]] | None = None) -> "Builder":
        rates = rates or [(start, 6500)]
        arrangement = Arrangement.model_validate({
            "school_id": school_id,
            "group_ids": group_ids,
            "start": start.isoformat(),
            "end": end.isoformat(),
            "rates": [{"from": f.isoformat(), "hourly_rate_cents": c} for f, c in rates],
            "cap_cents": 5_000_000,
            "settlement": {"key": "residence_hours"},
        })
        return self.put("arrangement", arrangement_id, arrangement)


def lives(code: str, start: dt.date = START, until: dt.date | None = None) -> dict[str, Any]:
    return {"municipality": code, "from": start.isoformat(), "until": until.isoformat() if until else None}


def standard() -> Builder:
    """School 'focus' in Venray with groups g1 (in a pot) and g2 (other pot) and g3 (no pot).

    p1 lives in Venray, p2 in Horst, p3 moves Venray -> Horst on MOVE, p4 is in g2, p5 left at Christmas.
    """
    b = Builder()
    b.municipality(VENRAY, "Venray").municipality(HORST, "Horst aan de Maas").municipality(GENNEP, "Gennep")
    b.school("focus", VENRAY)
    b.group("focus", "g1").group("focus", "g2").group("focus", "g3")
    b.arrangement("pot-1", "focus", ["g1"], rates=[(START, 6500), (RATE_SWITCH, 7200)])
    b.arrangement("pot-2", "focus", ["g2"])
    b.pupil("focus", "p1", "g1", [lives(VENRAY)])
    b.pupil("focus", "p2", "g1", [lives(HORST)])
    b.pupil("focus", "p3", "g1", [lives(VENRAY, START, MOVE - dt.timedelta(days=1)), lives(HORST, MOVE)])
    b.pupil("focus", "p4", "g2", [lives(GENNEP)])
    b.pupil("focus", "p5", "g1", [lives(GENNEP)], enrolled_until=D(2025, 12, 23))
    return b


def reg(day: dt.date = D(2025, 9, 15), minutes: int = 60, pupils: list[str] | None = None,
        school_id: str = "focus", group_id: str = "g1") -> Registration:
    doc: dict[str, Any] = {
        "registration_id": "r-1", "school_id": school_id, "group_id": group_id, "date": day.isoformat(),
        "minutes": minutes, "care_worker": "Anja", "task_category": 4,
    }
    if pupils is not None:
        doc["pupils"] = pupils
    return Registration.model_validate(doc)


def rejected(result: Accepted | Rejected) -> str:
    assert isinstance(result, Rejected), result
    assert result.reasons
    return " | ".join(result.reasons)


def accepted(result: Accepted | Rejected) -> Accepted:
    assert isinstance(result, Accepted), result
    return result


# -- unknown references ----------------------------------------------------------------------------

def test_unknown_school():
    text = rejected(assess(reg(school_id="nowhere"), standard().copy))
    assert "nowhere" in text and "school" in text


def test_unknown_group():
    text = rejected(assess(reg(group_id="g9"), standard().copy))
    assert "g9" in text and "group" in text


def test_group_of_other_school_is_unknown():
    b = standard().school("other", HORST).group("other", "g9")
    text = rejected(assess(reg(group_id="g9"), b.copy))
    assert "g9" in text


# -- arrangement and rate --------------------------------------------------------------------------

def test_group_without_arrangement():
    text = rejected(assess(reg(group_id="g3"), standard().copy))
    assert "no arrangement" in text and "g3" in text


@pytest.mark.parametrize("day", [START - dt.timedelta(days=1), END + dt.timedelta(days=1)])
def test_date_outside_arrangement(day):
    text = rejected(assess(reg(day=day, pupils=["p1"]), standard().copy))
    assert "no arrangement" in text and day.isoformat() in text


@pytest.mark.parametrize("day", [START, END])
def test_arrangement_bounds_inclusive(day):
    # p1 is enrolled from START without end date.
    result = accepted(assess(reg(day=day, pupils=["p1"]), standard().copy))
    assert result.arrangement_id == "pot-1"


def test_arrangement_of_the_group_is_used():
    result = accepted(assess(reg(group_id="g2"), standard().copy))
    assert result.arrangement_id == "pot-2"
    assert result.attributions == (Attribution(pupil_ref="p4", municipality=GENNEP),)


def test_arrangement_switch_between_consecutive_pots():
    b = standard()
    b.arrangement("pot-1", "focus", ["g1"], start=START, end=D(2025, 12, 31))
    b.arrangement("pot-1b", "focus", ["g1"], start=D(2026, 1, 1), end=END, rates=[(D(2026, 1, 1), 8000)])
    assert accepted(assess(reg(day=D(2025, 12, 31), pupils=["p1"]), b.copy)).arrangement_id == "pot-1"
    later = accepted(assess(reg(day=D(2026, 1, 1), pupils=["p1"]), b.copy))
    assert later.arrangement_id == "pot-1b" and later.hourly_rate_cents == 8000


def test_arrangement_no_longer_covering_a_group_after_update():
    b = standard()
    b.arrangement("pot-1", "focus", ["g3"])  # the pot now only covers g3
    text = rejected(assess(reg(pupils=["p1"]), b.copy))
    assert "no arrangement" in text


@pytest.mark.parametrize("day, rate", [
    (D(2025, 12, 31), 6500),
    (RATE_SWITCH, 7200),
    (D(2026, 3, 1), 7200),
])
def test_rate_in_force_on_care_date(day, rate):
    result = accepted(assess(reg(day=day, minutes=60, pupils=["p1"]), standard().copy))
    assert result.hourly_rate_cents == rate
    assert result.cost_cent_minutes == 60 * rate
    assert result.cost_cents == rate


def test_exact_cost_seven_minutes():
    result = accepted(assess(reg(minutes=7, pupils=["p1"]), standard().copy))
    assert result.hourly_rate_cents == 6500
    assert result.cost_cent_minutes == 45_500
    assert result.cost_cents == 758
    assert result.host_municipality == VENRAY


def test_cost_rounds_half_up():
    # 3 minutes at 6510 cents/h = 325.5 cents exactly -> 326 (half-up)
    b = standard().arrangement("pot-1", "focus", ["g1"], rates=[(START, 6510)])
    result = accepted(assess(reg(minutes=3, pupils=["p1"]), b.copy))
    assert result.cost_cent_minutes == 19_530
    assert result.cost_cents == 326


# -- listed pupils ---------------------------------------------------------------------------------

def test_listed_pupils_attributed_by_residence():
    result = accepted(assess(reg(pupils=["p2", "p1"]), standard().copy))
    assert result.attributed_to == "listed"
    assert result.attributions == (
        Attribution(pupil_ref="p2", municipality=HORST),
        Attribution(pupil_ref="p1", municipality=VENRAY),
    )


def test_listed_pupil_not_on_roster():
    text = rejected(assess(reg(pupils=["p1", "ghost"]), standard().copy))
    assert "ghost" in text and "roster" in text
    assert "p1" not in text.replace("ghost", "")


def test_listed_pupil_of_same_ref_at_other_school_not_on_roster():
    b = standard().school("other", HORST).group("other", "g1").pupil("other", "q1", "g1", [lives(HORST)])
    text = rejected(assess(reg(pupils=["q1"]), b.copy))
    assert "q1" in text and "roster" in text


def test_listed_pupil_in_other_group():
    text = rejected(assess(reg(pupils=["p4"]), standard().copy))
    assert "p4" in text and "g2" in text


def test_listed_pupil_moved_to_other_group_follows_latest_document():
    b = standard().pupil("focus", "p1", "g2", [lives(VENRAY)])
    text = rejected(assess(reg(pupils=["p1"]), b.copy))
    assert "p1" in text and "g2" in text
    assert accepted(assess(reg(group_id="g2", pupils=["p1"]), b.copy)).arrangement_id == "pot-2"


@pytest.mark.parametrize("day", [D(2025, 12, 24), D(2026, 2, 1)])
def test_listed_pupil_not_enrolled_after_leaving(day):
    text = rejected(assess(reg(day=day, pupils=["p5"]), standard().copy))
    assert "p5" in text and "not enrolled" in text and day.isoformat() in text


def test_listed_pupil_enrolled_on_last_day():
    result = accepted(assess(reg(day=D(2025, 12, 23), pupils=["p5"]), standard().copy))
    assert result.attributions == (Attribution(pupil_ref="p5", municipality=GENNEP),)


def test_listed_pupil_not_yet_enrolled():
    b = standard().pupil("focus", "p6", "g1", [lives(VENRAY)], enrolled_from=D(2025, 10, 1))
    text = rejected(assess(reg(day=D(2025, 9, 30), pupils=["p6"]), b.copy))
    assert "p6" in text and "not enrolled" in text


def test_listed_pupil_without_residence_that_day():
    b = standard().pupil("focus", "p7", "g1", [lives(VENRAY, D(2025, 10, 1))])
    text = rejected(assess(reg(day=D(2025, 9, 15), pupils=["p7"]), b.copy))
    assert "p7" in text and "residence" in text
    assert isinstance(assess(reg(day=D(2025, 10, 1), pupils=["p7"]), b.copy), Accepted)


def test_all_listed_problems_reported():
    result = assess(reg(pupils=["ghost", "p4", "p5", "p1"], day=D(2026, 2, 2)), standard().copy)
    assert isinstance(result, Rejected)
    assert len(result.reasons) == 3
    assert "ghost" in result.reasons[0] and "p4" in result.reasons[1] and "p5" in result.reasons[2]


def test_listed_mover_attributed_by_date():
    before = accepted(assess(reg(day=MOVE - dt.timedelta(days=1), pupils=["p3"]), standard().copy))
    on = accepted(assess(reg(day=MOVE, pupils=["p3"]), standard().copy))
    assert before.attributions == (Attribution(pupil_ref="p3", municipality=VENRAY),)
    assert on.attributions == (Attribution(pupil_ref="p3", municipality=HORST),)


# -- no listed pupils: everybody enrolled that day -------------------------------------------------

def test_unlisted_attributed_to_all_enrolled_with_residence_that_day():
    result = accepted(assess(reg(day=D(2025, 9, 15)), standard().copy))
    assert result.attributed_to == "enrolled"
    assert result.attributions == (
        Attribution(pupil_ref="p1", municipality=VENRAY),
        Attribution(pupil_ref="p2", municipality=HORST),
        Attribution(pupil_ref="p3", municipality=VENRAY),
        Attribution(pupil_ref="p5", municipality=GENNEP),
    )
    # Unlisted attribution does not change the cost: it is one registration of the group.
    assert result.cost_cent_minutes == 60 * 6500


def test_unlisted_empty_list_treated_as_unlisted():
    result = accepted(assess(reg(day=D(2025, 9, 15), pupils=[]), standard().copy))
    assert result.attributed_to == "enrolled"
    assert {a.pupil_ref for a in result.attributions} == {"p1", "p2", "p3", "p5"}


def test_unlisted_mover_before_and_after_move():
    before = accepted(assess(reg(day=MOVE - dt.timedelta(days=1)), standard().copy))
    after = accepted(assess(reg(day=MOVE), standard().copy))
    assert dict((a.pupil_ref, a.municipality) for a in before.attributions) == {
        "p1": VENRAY, "p2": HORST, "p3": VENRAY}
    assert dict((a.pupil_ref, a.municipality) for a in after.attributions) == {
        "p1": VENRAY, "p2": HORST, "p3": HORST}


def test_unlisted_excludes_pupils_not_enrolled_that_day():
    b = standard().pupil("focus", "p6", "g1", [lives(VENRAY)], enrolled_from=D(2025, 10, 1))
    refs = [a.pupil_ref for a in accepted(assess(reg(day=D(2025, 9, 30)), b.copy)).attributions]
    assert refs == ["p1", "p2", "p3", "p5"]
    refs = [a.pupil_ref for a in accepted(assess(reg(day=D(2025, 12, 24)), b.copy)).attributions]
    assert refs == ["p1", "p2", "p3", "p6"]


def test_unlisted_nobody_enrolled_rejected():
    b = Builder()
    b.municipality(VENRAY, "Venray").school("focus", VENRAY).group("focus", "g1")
    b.arrangement("pot-1", "focus", ["g1"])
    text = rejected(assess(reg(), b.copy))
    assert "nobody to attribute the care to" in text
    # Pupils who left or are not yet there do not count either.
    b.pupil("focus", "gone", "g1", [lives(VENRAY)], enrolled_until=D(2025, 9, 1))
    b.pupil("focus", "later", "g1", [lives(VENRAY)], enrolled_from=D(2025, 10, 1))
    text = rejected(assess(reg(day=D(2025, 9, 15)), b.copy))
    assert "nobody to attribute the care to" in text


def test_unlisted_nobody_after_pupil_moves_to_other_group():
    b = Builder()
    b.municipality(VENRAY, "Venray").school("focus", VENRAY).group("focus", "g1").group("focus", "g2")
    b.arrangement("pot-1", "focus", ["g1", "g2"])
    b.pupil("focus", "p1", "g1", [lives(VENRAY)])
    assert isinstance(assess(reg(), b.copy), Accepted)
    b.pupil("focus", "p1", "g2", [lives(VENRAY)])
    assert "nobody" in rejected(assess(reg(), b.copy))
    assert accepted(assess(reg(group_id="g2"), b.copy)).attributions == (
        Attribution(pupil_ref="p1", municipality=VENRAY),)


def test_unlisted_enrolled_pupil_without_residence_rejected():
    b = standard().pupil("focus", "p7", "g1", [lives(VENRAY, D(2025, 10, 1))])
    text = rejected(assess(reg(day=D(2025, 9, 15)), b.copy))
    assert "p7" in text and "residence" in text


# -- funding laws: routed to a framework funder, to the municipalities, or refused -----------------------

def with_frameworks(frameworks: dict[str, str]) -> Builder:
    """The standard region, pot-1 routing `frameworks` (law -> funder)."""
    b = standard()
    pot = b.copy.arrangements["pot-1"]
    policy = pot.settlement.model_copy(update={"frameworks": frameworks})
    return b.put("arrangement", "pot-1", pot.model_copy(update={"settlement": policy}))


def tagged(funding: str | None) -> Registration:
    return reg().model_copy(update={"funding": funding})


@pytest.mark.parametrize("law", ["wlz", "zvw", "education"])
def test_a_law_no_framework_routes_and_the_municipalities_do_not_pay_is_rejected_naming_it(law: str):
    text = rejected(assess(tagged(law), with_frameworks({}).copy))
    assert f"funding '{law}' is not routed by arrangement 'pot-1'" in text


@pytest.mark.parametrize("law", [None, "jeugdwet", "wmo"])
def test_untagged_jeugdwet_and_unmapped_wmo_care_is_for_the_municipalities(law: str | None):
    assert accepted(assess(tagged(law), with_frameworks({"wlz": "WLZ-ZK"}).copy)).funder is None


def test_a_routed_law_names_its_funder_and_keeps_the_attributions():
    b = with_frameworks({"wlz": "WLZ-ZK", "wmo": "WMO-FONDS"})
    wlz = accepted(assess(tagged("wlz"), b.copy))
    assert wlz.funder == "WLZ-ZK" and wlz.cost_cent_minutes == 60 * 6500 and wlz.attributions
    assert accepted(assess(tagged("wmo"), b.copy)).funder == "WMO-FONDS"


# -- eligibility: no double funding (design.md section 11) -----------------------------------------

DECISION_FROM = D(2026, 3, 1)


def status(kind: str, start: dt.date = DECISION_FROM, until: dt.date | None = None) -> dict[str, Any]:
    return {"status": kind, "from": start.isoformat(), "until": until.isoformat() if until else None}


def eligible() -> Builder:
    """standard(), with p2 on an individual decision from 1 March 2026 until 30 April and p3 excluded from
    1 March 2026 on (p1 stays collective: no eligibility at all)."""
    b = standard()
    b.pupil("focus", "p2", "g1", [lives(HORST)], eligibility=[status("individual_decision", until=D(2026, 4, 30))])
    b.pupil("focus", "p3", "g1", [lives(VENRAY, START, MOVE - dt.timedelta(days=1)), lives(HORST, MOVE)],
            eligibility=[status("collective", START, DECISION_FROM - dt.timedelta(days=1)), status("excluded")])
    return b


def test_listed_pupil_with_an_individual_decision_is_rejected_saying_so():
    day = D(2026, 3, 2)
    result = assess(reg(day=day, pupils=["p1", "p2"]), eligible().copy)
    assert isinstance(result, Rejected) and len(result.reasons) == 1
    assert result.reasons[0] == ("pupil 'p2' has an individual decision (individual_decision) on 2026-03-02: "
                                 "their care is funded individually, not from this pot")


def test_listed_excluded_pupil_is_rejected_saying_so():
    text = rejected(assess(reg(day=D(2026, 3, 2), pupils=["p3"]), eligible().copy))
    assert text == ("pupil 'p3' is excluded from collective funding (excluded) on 2026-03-02: their care is "
                    "funded otherwise, not from this pot")


@pytest.mark.parametrize("day", [DECISION_FROM - dt.timedelta(days=1), D(2026, 5, 1)])
def test_eligibility_is_effective_dated(day):
    # p2's decision runs 1 March - 30 April (inclusive): before and after it p2 is collective again.
    result = accepted(assess(reg(day=day, pupils=["p2"]), eligible().copy))
    assert result.attributions == (Attribution(pupil_ref="p2", municipality=HORST),)


def test_decision_bounds_are_inclusive():
    for day in (DECISION_FROM, D(2026, 4, 30)):
        assert "individual decision" in rejected(assess(reg(day=day, pupils=["p2"]), eligible().copy))


def test_explicit_collective_status_is_accepted():
    result = accepted(assess(reg(day=DECISION_FROM - dt.timedelta(days=1), pupils=["p3"]), eligible().copy))
    assert result.attributed_to == "listed"


def test_every_problem_of_a_listing_is_reported():
    result = assess(reg(day=D(2026, 3, 2), pupils=["ghost", "p2", "p3", "p1"]), eligible().copy)
    assert isinstance(result, Rejected)
    assert [r.split(" ")[1] for r in result.reasons] == ["'ghost'", "'p2'", "'p3'"]


def test_unlisted_care_is_attributed_to_the_collective_pupils_only():
    # On 2 March p1 (Venray), p2 (decision), p3 (excluded) are enrolled; p5 left at Christmas.
    result = accepted(assess(reg(day=D(2026, 3, 2), minutes=60), eligible().copy))
    assert result.attributed_to == "enrolled"
    assert result.attributions == (Attribution(pupil_ref="p1", municipality=VENRAY),)
    assert result.cost_cent_minutes == 60 * 7200  # the cost is the registration's, whoever it is attributed to


def test_unlisted_care_before_the_decision_is_attributed_to_everybody():
    result = accepted(assess(reg(day=D(2026, 2, 27)), eligible().copy))
    assert [a.pupil_ref for a in result.attributions] == ["p1", "p2", "p3"]


def test_unlisted_care_with_nobody_collective_is_rejected_saying_so():
    b = eligible()
    b.pupil("focus", "p1", "g1", [lives(VENRAY)], eligibility=[status("individual_decision")])
    text = rejected(assess(reg(day=D(2026, 3, 2)), b.copy))
    assert text == ("no pupil enrolled in group 'g1' on 2026-03-02 is collectively funded (p1: individual_decision; "
                    "p2: individual_decision; p3: excluded): their care is funded individually or excluded, not from "
                    "this pot; there is nobody to attribute the care to")


def test_rejection_metric_labels_are_low_cardinality():
    from services.hours.service import rejection_reason_label

    b = eligible()
    b.pupil("focus", "p1", "g1", [lives(VENRAY)], eligibility=[status("excluded")])
    reasons = [*assess(reg(day=D(2026, 3, 2), pupils=["p2", "p3"]), b.copy).reasons,  # type: ignore[union-attr]
               *assess(reg(day=D(2026, 3, 2)), b.copy).reasons]  # type: ignore[union-attr]
    assert len(reasons) == 3
    assert {rejection_reason_label(r) for r in reasons} == {"not_collective"}
    assert rejection_reason_label(rejected(assess(reg(group_id="g3"), standard().copy))) == "no_arrangement"
    assert rejection_reason_label(rejected(assess(reg(pupils=["ghost"]), standard().copy))) == "unknown_pupil"
