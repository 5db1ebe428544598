"""The six ALFWorld task types: their ALFRED names, rooms and what a sampled task needs.

>>> import random
>>> spec = sample_task(random.Random(3), "pick_heat_then_place_in_recep")
>>> spec.room, "Microwave" in spec.required
('Kitchen', True)
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import alfworld.gen.constants as C
import alfworld.gen.goal_library as glib

from pipeline.envs.households import LAMP_HOSTS, LAMPS, ROOM_RECEPTACLES, containable, room_objects

# ALFWorld's TASK_TYPES (alfworld.agents.environment.alfred_tw_env), in its numbering order.
TASK_TYPES: tuple[str, ...] = (
    "pick_and_place_simple",
    "look_at_obj_in_light",
    "pick_clean_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_cool_then_place_in_recep",
    "pick_two_obj_and_place",
)
# The appliance a task type needs and the property its object must have (VAL_ACTION_OBJECTS key).
_APPLIANCE = {"pick_clean_then_place_in_recep": ("SinkBasin", "Cleanable"),
              "pick_heat_then_place_in_recep": ("Microwave", "Heatable"),
              "pick_cool_then_place_in_recep": ("Fridge", "Coolable")}


def check_task_type(name: str, where: str) -> str:
    """Return ``name`` or raise naming ``where`` it came from and the known types."""
    if name not in TASK_TYPES:
        raise ValueError(f"{where}: unknown ALFWorld task type {name!r}; expected one of {list(TASK_TYPES)}")
    return name


def check_task_types(names, where: str) -> None:
    """``names`` (from ``where``, e.g. ``GamesConfig.task_types``) name at least one task type, each known."""
    if not names:
        raise ValueError(f"{where} must name at least one task type")
    for name in names:
        check_task_type(name, where)


@dataclass(frozen=True)
class TaskSpec:
    """One sampled task: ALFRED's ``pddl_params`` plus the household it needs."""

    task_type: str
    room: str  # ALFRED room type
    object_target: str  # ALFRED class, e.g. "Apple"
    parent_target: str  # receptacle class ("" for look_at_obj_in_light)
    toggle_target: str  # lamp class ("" unless look_at_obj_in_light)
    source: str  # receptacle class the target objects start in
    lamp_host: str  # receptacle class the lamp stands on ("" unless look_at_obj_in_light)
    n_objects: int  # target object instances
    required: tuple[str, ...]  # receptacle classes the household must have

    def sentence(self, template: int) -> str:
        """ALFWorld's templated task description (``get_templated_task_desc``)."""
        text = glib.gdict[self.task_type]["templates"][template]
        return text.format(obj=self.object_target.lower(), recep=self.parent_target.lower(),
                           toggle=self.toggle_target.lower(), mrecep="")

    def pddl_params(self) -> dict:
        """``traj_data.json``'s ``pddl_params`` block, as ALFRED writes it."""
        return {"object_target": self.object_target, "parent_target": self.parent_target,
                "toggle_target": self.toggle_target, "mrecep_target": "", "object_sliced": False}


def _rooms(task_type: str) -> list[str]:
    rooms = sorted(C.GOALS_VALID[task_type])
    if task_type == "look_at_obj_in_light":
        rooms = [r for r in rooms if set(LAMP_HOSTS) & set(ROOM_RECEPTACLES[r])]
    if task_type in _APPLIANCE:
        rooms = [r for r in rooms if _APPLIANCE[task_type][0] in ROOM_RECEPTACLES[r]]
    return rooms


def sample_task(rng: random.Random, task_type: str) -> TaskSpec:
    """Sample room, target object, parent/toggle and a source receptacle for ``task_type``."""
    check_task_type(task_type, "sample_task")
    room = rng.choice(_rooms(task_type))
    recs = ROOM_RECEPTACLES[room]
    objs = sorted(room_objects(room))
    appliance = _APPLIANCE.get(task_type)
    if appliance:
        objs = [o for o in objs if o in C.VAL_ACTION_OBJECTS[appliance[1]] and o in containable(appliance[0])]
    while True:
        obj = rng.choice(objs)
        homes = [r for r in recs if obj in containable(r)]
        if task_type == "look_at_obj_in_light":
            host, source = rng.choice([h for h in LAMP_HOSTS if h in recs]), rng.choice(homes)
            return TaskSpec(task_type, room, obj, "", rng.choice(LAMPS), source, host, 1,
                            tuple(dict.fromkeys((source, host))))
        parents = [r for r in homes if not appliance or r != appliance[0]]
        if not parents:
            continue
        parent = rng.choice(parents)
        sources = [r for r in homes if r != parent and (not appliance or r != appliance[0])]
        if not sources:
            continue
        source = rng.choice(sources)
        n = rng.randint(2, 3) if task_type == "pick_two_obj_and_place" else rng.randint(1, 2)
        required = (parent, source) + ((appliance[0],) if appliance else ())
        return TaskSpec(task_type, room, obj, parent, "", source, "", n, tuple(dict.fromkeys(required)))
