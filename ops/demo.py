"""Demo region: a Venray-like school and a second school, seeded through the gateway's public API.

The Venray case (domain.md M2): SBO Focus / SO Spectrum, host GM0984, two onderwijszorggroepen at 40 hours
of care per week at EUR 65/h, capped at 40 h x 63 school weeks x EUR 65 = EUR 163,800 (the second group
all year, 40 school weeks; the first group from 1 January, 23 school weeks), paid in two installments by
budget year (EUR 44,200 by 1 September, EUR 119,600 by 1 February), individual tariff EUR 96.64/h for the
savings figure, and about 90% of the pupils living in Venray. The second school, SO De Maasbrug, has one
group with a budget set too tight (domain.md section 7: "te krappe budgettering"), so its forecast runs
over the cap.

The dates follow the school year that has started by today (the real case ran 2025-08-18 .. 2026-07-08),
so the dashboard shows a pot in progress and `python -m ops simulate` has school days to fill in.

School calendar (design.md section 11): for a school year in `CALENDARS` the region gets the real school
holidays of regio zuid (Venray, Land van Cuijk: Limburg and Noord-Brabant are in the south), and both pots
count their elapsed share, burn ratio and forecast in school days. Each group has a plan of its 40 h (or
32 h) a week, so the pots show planned against delivered care per group.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import httpx

from shared.timeutil import today

VENRAY, HORST, BOXMEER, GENNEP = "GM0984", "GM1507", "GM1702", "GM0907"

# School holidays of regio zuid, per school year (first calendar year). Source: the Rijksoverheid schedule
# ("Schoolvakanties 2026-2027", rijksoverheid.nl/onderwerpen/schoolvakanties): summer and Christmas are set by
# the minister, autumn, spring and May are advice dates that southern schools follow; the Easter, Whitsun and
# Ascension days are the public holidays. Checked against published school timetables in the south (Nijmegen:
# carnival week 8-12 February 2027, summer 19 July - 27 August 2027). The meivakantie is taken as two weeks, as
# most schools in the south do (the national minimum is 24 April - 2 May); Koningsdag (27 April), Bevrijdingsdag
# (5 May) and Ascension fall inside it. Holidays include the weekends around them (from the first Saturday).
CALENDARS: dict[int, tuple[str, str, tuple[tuple[str, str, str], ...]]] = {
    2026: ("regio-zuid-2026-2027", "Schoolvakanties regio zuid 2026/2027", (
        ("2026-10-17", "2026-10-25", "Herfstvakantie"),
        ("2026-12-19", "2027-01-03", "Kerstvakantie"),
        ("2027-02-06", "2027-02-14", "Voorjaarsvakantie (carnaval)"),
        ("2027-03-26", "2027-03-29", "Goede Vrijdag en Pasen"),
        ("2027-04-24", "2027-05-09", "Meivakantie (met Koningsdag en Bevrijdingsdag)"),
        ("2027-05-06", "2027-05-07", "Hemelvaart"),
        ("2027-05-16", "2027-05-17", "Pinksteren"),
        ("2027-07-17", "2027-08-29", "Zomervakantie"),
    )),
}


def calendar_doc(first_year: int) -> tuple[str, dict] | None:
    """(calendar_id, PUT /calendars body) of the demo's school year, None when it has no known calendar."""
    known = CALENDARS.get(first_year)
    if known is None:
        return None
    calendar_id, name, holidays = known
    return calendar_id, {"name": name, "holidays": [{"from": lo, "until": hi, "name": label}
                                                    for lo, hi, label in holidays]}
MUNICIPALITIES = ((VENRAY, "Venray", 8120), (HORST, "Horst aan de Maas", 8950), (BOXMEER, "Land van Cuijk", 18400),
                  (GENNEP, "Gennep", 3100))


# A funder other than a municipality (design.md section 9): the Wlz care office of the region.
WLZ_OFFICE = ("zk-noord-limburg", {"name": "Zorgkantoor Noord-Limburg", "kind": "wlz_office"})


@dataclass(frozen=True)
class DemoGroup:
    group_id: str
    name: str
    care_from: dt.date  # first day the pot funds care for this group
    minutes_per_day: int  # planned care per school day (40 h/week = 480 min a day)
    care_worker: str
    pupils: tuple[str, ...] = ()


@dataclass(frozen=True)
class DemoSchool:
    school_id: str
    name: str
    host: str
    arrangement_id: str
    arrangement: dict
    groups: tuple[DemoGroup, ...]
    pupils: dict[str, dict] = field(default_factory=dict)
    calendar: tuple[str, dict] | None = None  # (calendar_id, body) when the school year has a known calendar


def _monday_on_or_after(day: dt.date) -> dt.date:
    return day + dt.timedelta(days=(7 - day.weekday()) % 7)


def venray_start(first_year: int) -> dt.date:
    """The Monday the school year starts in the south (18 August 2025 in the real case)."""
    return _monday_on_or_after(dt.date(first_year, 8, 15))


def demo_school_year(on: dt.date | None = None) -> int:
    """First calendar year of the latest school year whose Venray arrangement has started by `on`."""
    on = on or today()
    year = on.year if on.month >= 8 else on.year - 1
    return year if venray_start(year) <= on else year - 1


def region(first_year: int | None = None) -> tuple[DemoSchool, ...]:
    year = demo_school_year() if first_year is None else first_year
    start = venray_start(year)
    end = start + dt.timedelta(days=324)  # 2025-08-18 -> 2026-07-08: the pilot's last day before summer
    january = dt.date(year + 1, 1, 1)
    calendar = calendar_doc(year)
    on_calendar = {"calendar_id": calendar[0]} if calendar else {}
    pupils: dict[str, dict] = {}
    for i in range(24):
        home = VENRAY if i % 10 != 9 else (HORST if i % 20 == 9 else GENNEP)  # 22 of 24 (92%) live in Venray
        residence = [{"municipality": home, "from": start.isoformat()}]
        if i == 4:  # one family moves to Horst aan de Maas over Christmas
            residence = [{"municipality": VENRAY, "from": start.isoformat(), "until": (january - dt.timedelta(days=1)).isoformat()},
                         {"municipality": HORST, "from": january.isoformat()}]
        pupils[f"fs-{i:03d}"] = {"group_id": "group-1" if i < 12 else "group-2", "enrolled_from": start.isoformat(),
                                 "residence": residence}
    focus = DemoSchool(
        school_id="focus-spectrum", name="SBO Focus / SO Spectrum", host=VENRAY, arrangement_id=f"venray-{year}",
        arrangement={
            "school_id": "focus-spectrum", "group_ids": ["group-1", "group-2"],
            "start": start.isoformat(), "end": end.isoformat(),
            "rates": [{"from": start.isoformat(), "hourly_rate_cents": 6500}],
            "cap_cents": 16_380_000, "individual_rate_cents": 9664,
            "funding": [{"source": "jeugdwet", "funder": "Gemeente Venray (Innovatiebudget Jeugd)",
                         "amount_cents": 16_380_000}],
            "installments": [{"due": dt.date(year, 9, 1).isoformat(), "amount_cents": 4_420_000},
                             {"due": dt.date(year + 1, 2, 1).isoformat(), "amount_cents": 11_960_000}],
            "settlement": {"key": "residence_hours"},
            # 40 h = 2,400 min a week for the second group all year and the first from 1 January; an alert when a
            # group gets less than half of it in a school week, and when over 15% of the pupils live elsewhere.
            "plan": [{"group_id": "group-2", "from": start.isoformat(), "minutes_per_week": 2400},
                     {"group_id": "group-1", "from": january.isoformat(), "minutes_per_week": 2400}],
            "capacity_alert_ratio": 0.5, "non_resident_alert_share": 0.15,
            **on_calendar,
        },
        calendar=calendar,
        groups=(
            # The second group is the extension (all school year); the first is prolonged from 1 January.
            DemoGroup("group-2", "Onderwijszorggroep 2", start, 480, "cw-anouk",
                      tuple(ref for ref, p in pupils.items() if p["group_id"] == "group-2")),
            DemoGroup("group-1", "Onderwijszorggroep 1", january, 480, "cw-bram",
                      tuple(ref for ref, p in pupils.items() if p["group_id"] == "group-1")),
        ),
        pupils=pupils,
    )
    sy_start, sy_end = dt.date(year, 8, 1), dt.date(year + 1, 7, 31)
    mb_pupils = {}
    for i in range(10):
        home = BOXMEER if i < 7 else (GENNEP if i < 9 else VENRAY)
        mb_pupils[f"mb-{i:03d}"] = {"group_id": "zml-a", "enrolled_from": sy_start.isoformat(),
                                    "residence": [{"municipality": home, "from": sy_start.isoformat()}]}
    maasbrug = DemoSchool(
        school_id="de-maasbrug", name="SO De Maasbrug", host=BOXMEER, arrangement_id=f"maasbrug-{year}",
        arrangement={
            "school_id": "de-maasbrug", "group_ids": ["zml-a"], "start": sy_start.isoformat(),
            "end": sy_end.isoformat(),
            "rates": [{"from": sy_start.isoformat(), "hourly_rate_cents": 6200},
                      {"from": january.isoformat(), "hourly_rate_cents": 6650}],
            "cap_cents": 6_000_000, "individual_rate_cents": 9664,
            "installments": [{"due": dt.date(year, 10, 1).isoformat(), "amount_cents": 3_000_000},
                             {"due": dt.date(year + 1, 3, 1).isoformat(), "amount_cents": 3_000_000}],
            # Care under the Wlz (a pupil with a Wlz indication) goes to the care office, per client.
            "settlement": {"key": "residence_pupils", "frameworks": {"wlz": WLZ_OFFICE[0]}},
            "plan": [{"group_id": "zml-a", "from": start.isoformat(), "minutes_per_week": 1920}],  # 32 h a week
            **on_calendar,
        },
        calendar=calendar,
        groups=(DemoGroup("zml-a", "ZML A", start, 384, "cw-fatima", tuple(mb_pupils)),),
        pupils=mb_pupils,
    )
    return focus, maasbrug


def seed(base_url: str, token: str, first_year: int | None = None) -> dict[str, str]:
    """Idempotent: PUTs full state, so running it twice changes nothing but registry versions."""
    schools = region(first_year)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=f"{base_url}/api/v1", headers=headers, timeout=30) as api:
        def put(path: str, body: dict) -> None:
            reply = api.put(path, json=body)
            if reply.status_code != 200:
                raise RuntimeError(f"seeding {path} failed: {reply.status_code} {reply.text}")

        for code, name, youth in MUNICIPALITIES:
            put(f"/municipalities/{code}", {"name": name, "youth_population": youth})
        put(f"/funders/{WLZ_OFFICE[0]}", WLZ_OFFICE[1])
        for calendar_id, body in {s.calendar[0]: s.calendar[1] for s in schools if s.calendar}.items():
            put(f"/calendars/{calendar_id}", body)
        for school in schools:
            put(f"/schools/{school.school_id}", {"name": school.name, "municipality": school.host})
            for group in school.groups:
                put(f"/schools/{school.school_id}/groups/{group.group_id}", {"name": group.name})
            for ref, pupil in school.pupils.items():
                put(f"/schools/{school.school_id}/pupils/{ref}", pupil)
            put(f"/arrangements/{school.arrangement_id}", school.arrangement)
            # The installments already due were paid on their due date: recorded as payments (idempotent ids).
            for number, installment in enumerate(school.arrangement.get("installments", []), start=1):
                if dt.date.fromisoformat(installment["due"]) <= dt.date.today():
                    reply = api.post(f"/arrangements/{school.arrangement_id}/payments", json={
                        "payment_id": f"{school.arrangement_id}-installment-{number}", "date": installment["due"],
                        "amount_cents": installment["amount_cents"], "reference": f"installment {number}"})
                    if reply.status_code not in (200, 201):
                        raise RuntimeError(f"seeding a payment failed: {reply.status_code} {reply.text}")
    focus = schools[0]
    return {"school": focus.school_id, "group": focus.groups[0].group_id, "arrangement": focus.arrangement_id}
