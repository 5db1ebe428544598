"""PDDL problem text for a generated household, in ALFWorld's ``initial_state.pddl`` form.

Names are mangled as ALFRED does (``|`` -> ``_bar_``, ``-`` -> ``_minus_``, ...)
and the goal is ALFRED's goal template of the task type
(``alfworld.gen.goal_library``), so the problem plays in ``alfred.pddl``.

>>> mangle("Apple|-01.25|+00.90|+02.00")
'Apple_bar__minus_01_dot_25_bar__plus_00_dot_90_bar__plus_02_dot_00'
"""
from __future__ import annotations

import re

import alfworld.gen.constants as C
import alfworld.gen.goal_library as glib

from pipeline.envs.households import LAMPS, MOVABLE_RECEPTACLES, OPENABLE, Household, containable

_MANGLE = {"-": "_minus_", "|": "_bar_", "+": "_plus_", ".": "_dot_", ",": "_comma_"}
_MANGLE_RE = re.compile("|".join(map(re.escape, _MANGLE)))
_ACTION_PROPS = {"cleanable": "Cleanable", "heatable": "Heatable", "coolable": "Coolable",
                 "sliceable": "Sliceable", "toggleable": "Toggleable"}


def mangle(name: str) -> str:
    """ALFRED's ``fix_pddl_str_chars`` for an object or location id."""
    return _MANGLE_RE.sub(lambda m: _MANGLE[m.group(0)], name)


def goal_pddl(task_type: str, obj: str, recep: str = "", toggle: str = "") -> str:
    """ALFRED's ``(:goal ...)`` block of ``task_type`` (it also closes ``(define``)."""
    text = glib.gdict[task_type]["pddl"].format(obj=obj, recep=recep, toggle=toggle, mrecep="")
    return text.replace("#", "-")


def _object_section(house: Household, otypes: list[str], rtypes: list[str]) -> list[str]:
    lines = ["agent1 - agent"]
    lines += [f"{t}Type - otype" for t in otypes] + [f"{t}Type - rtype" for t in rtypes]
    lines += [f"{mangle(i.id)} - object" for i in house.items]
    lines += [f"{mangle(r.id)} - receptacle" for r in house.receptacles]
    locs = [house.start_loc] + [r.loc for r in house.receptacles]
    lines += [f"{mangle(loc)} - location" for loc in locs]
    return lines


def _init_section(house: Household, rtypes: list[str], otypes: set[str]) -> list[str]:
    loc_of = {r.id: r.loc for r in house.receptacles}
    facts = ["(= (total-cost) 0)", f"(atLocation agent1 {mangle(house.start_loc)})"]
    for r in house.receptacles:
        rid = mangle(r.id)
        facts += [f"(receptacleType {rid} {r.cls}Type)", f"(receptacleAtLocation {rid} {mangle(r.loc)})"]
        if r.cls in OPENABLE:
            facts.append(f"(openable {rid})")  # closed at start: no (opened ...) fact
    for i in house.items:
        oid = mangle(i.id)
        facts += [f"(objectType {oid} {i.cls}Type)", f"(inReceptacle {oid} {mangle(i.receptacle)})",
                  f"(objectAtLocation {oid} {mangle(loc_of[i.receptacle])})"]
        if i.cls not in LAMPS:
            facts.append(f"(pickupable {oid})")
        if i.cls in MOVABLE_RECEPTACLES:
            facts.append(f"(isReceptacleObject {oid})")
        facts += [f"({prop} {oid})" for prop, key in _ACTION_PROPS.items() if i.cls in C.VAL_ACTION_OBJECTS[key]]
    for rt in rtypes:
        facts += [f"(canContain {rt}Type {ot}Type)" for ot in sorted(containable(rt) & otypes)]
    return facts


def problem_text(house: Household, name: str, task_type: str, obj: str, recep: str = "",
                 toggle: str = "") -> str:
    """The full PDDL problem of ``house`` with the goal of ``task_type``."""
    rtypes = sorted({r.cls for r in house.receptacles})
    otypes = set().union(*(containable(rt) for rt in rtypes)) | {i.cls for i in house.items}
    objects = "\n        ".join(_object_section(house, sorted(otypes), rtypes))
    init = "\n        ".join(_init_section(house, rtypes, otypes))
    goal = goal_pddl(task_type, obj, recep, toggle)
    return (f"(define (problem {name})\n    (:domain alfred)\n    (:objects\n        {objects}\n    )\n"
            f"    (:init\n        {init}\n    )\n{goal}")
