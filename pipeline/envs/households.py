"""Households built from ALFRED's object and receptacle classes (``alfworld.gen.constants``).

A household is a list of receptacles (each at its own location) and the
objects inside them, named the way ALFRED names THOR objects
(``Apple|+01.23|+00.91|-02.10``, sinks as ``Sink|...|SinkBasin``), so the
ALFWorld demangler turns them into ``apple 1``, ``sinkbasin 1``, ...

>>> import random
>>> h = sample_household(random.Random(0), "Kitchen", ["Fridge", "CounterTop"], 5, [("Apple", "Fridge")], 0)
>>> len(h.receptacles), [r.cls for r in h.receptacles][:2], [(i.cls, i.receptacle[:6]) for i in h.items]
(5, ['Fridge', 'CounterTop'], [('Apple', 'Fridge')])
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import alfworld.gen.constants as C

# Receptacle classes that appear in each ALFRED room type (THOR scenes 1-30, 201-230, 301-330, 401-430).
ROOM_RECEPTACLES: dict[str, tuple[str, ...]] = {
    "Kitchen": ("CounterTop", "Cabinet", "Drawer", "Fridge", "Microwave", "SinkBasin", "StoveBurner",
                "CoffeeMachine", "Toaster", "GarbageCan", "DiningTable", "Shelf", "SideTable"),
    "LivingRoom": ("Sofa", "ArmChair", "CoffeeTable", "SideTable", "TVStand", "Shelf", "Drawer", "Cabinet",
                   "Dresser", "GarbageCan", "DiningTable", "Ottoman", "Safe"),
    "Bedroom": ("Bed", "Desk", "Drawer", "Dresser", "SideTable", "Shelf", "GarbageCan", "LaundryHamper",
                "Safe", "ArmChair"),
    "Bathroom": ("Toilet", "SinkBasin", "BathtubBasin", "CounterTop", "Cabinet", "Drawer", "GarbageCan",
                 "HandTowelHolder", "ToiletPaperHanger", "TowelHolder", "Shelf", "Dresser"),
}
ROOM_SCENE_BASE = {"Kitchen": 0, "LivingRoom": 200, "Bedroom": 300, "Bathroom": 400}
# Classes a room may hold several of (ALFRED kitchens have many cabinets, drawers, burners).
REPEATABLE = frozenset({"Cabinet", "Drawer", "Shelf", "StoveBurner", "CounterTop", "SideTable", "Dresser"})
LAMPS = ("DeskLamp", "FloorLamp")
LAMP_HOSTS = ("Desk", "SideTable", "Dresser")
OPENABLE = frozenset(C.OPENABLE_CLASS_LIST)
MOVABLE_RECEPTACLES = frozenset(C.MOVABLE_RECEPTACLES)
BASINS = {"SinkBasin": "Sink", "BathtubBasin": "Bathtub"}


def containable(recep_cls: str) -> frozenset[str]:
    """Object classes ALFRED lets ``recep_cls`` hold (sliced variants excluded, as ALFWorld does)."""
    return frozenset(o for o in C.VAL_RECEPTACLE_OBJECTS.get(recep_cls, ()) if "Sliced" not in o)


def room_objects(room: str) -> frozenset[str]:
    """Pickupable object classes that some receptacle of ``room`` can hold."""
    return frozenset().union(*(containable(r) for r in ROOM_RECEPTACLES[room])) - set(LAMPS)


@dataclass(frozen=True)
class Receptacle:
    """A static receptacle; ``loc`` is the navigation point the agent goes to."""

    id: str  # ALFRED object id, e.g. "Cabinet|-00.23|+01.80|-01.26"
    cls: str  # ALFRED class, e.g. "Cabinet"
    loc: str  # ALFRED location id, e.g. "loc|-4|0|3|30"


@dataclass(frozen=True)
class Item:
    """A movable object (or lamp) lying in a receptacle."""

    id: str
    cls: str
    receptacle: str  # id of the receptacle holding it


@dataclass
class Household:
    """Receptacles, objects and the agent's start point of one generated game."""

    room: str
    receptacles: list[Receptacle] = field(default_factory=list)
    items: list[Item] = field(default_factory=list)
    start_loc: str = "loc|0|0|0|30"


class _Ids:
    """Draws unique THOR-like coordinates for object ids and location ids."""

    def __init__(self, rng: random.Random) -> None:
        self.rng, self.seen = rng, set()

    def _draw(self, make) -> str:
        while True:
            key = make()
            if key not in self.seen:
                self.seen.add(key)
                return key

    def coord(self) -> str:
        return self._draw(lambda: "|".join(f"{self.rng.uniform(-3, 3):+06.2f}" for _ in range(3)))

    def loc(self) -> str:
        r = self.rng
        return self._draw(lambda: f"loc|{r.randint(-12, 12)}|{r.randint(-12, 12)}|{r.randint(0, 3)}|"
                                  f"{r.choice((0, 15, 30, 45, 60))}")


def _receptacle_classes(rng: random.Random, room: str, required: list[str], n: int) -> list[str]:
    """``required`` classes first, then room classes (unique ones at most once) up to ``n``."""
    classes = list(dict.fromkeys(required))
    pool = list(ROOM_RECEPTACLES[room])
    while len(classes) < n:
        cls = rng.choice(pool)
        if cls in classes and cls not in REPEATABLE:
            pool.remove(cls)
            if not pool:
                break
            continue
        classes.append(cls)
    return classes


def sample_household(rng: random.Random, room: str, required: list[str], n_receptacles: int,
                     targets: list[tuple[str, str]], distractors: int, forbid: tuple[str, str] | None = None,
                     lamp: tuple[str, str] | None = None) -> Household:
    """Sample a household holding ``targets`` ((object class, receptacle class) pairs).

    ``distractors`` is the most extra objects per receptacle; ``forbid`` is an
    (object class, receptacle class) pair never placed (it would satisfy the goal
    at the start); ``lamp`` is a (lamp class, host receptacle class) pair.
    """
    ids = _Ids(rng)
    house = Household(room=room, start_loc=ids.loc())
    for cls in _receptacle_classes(rng, room, required, n_receptacles):
        coord = ids.coord()
        rid = f"{BASINS[cls]}|{coord}|{cls}" if cls in BASINS else f"{cls}|{coord}"
        house.receptacles.append(Receptacle(rid, cls, ids.loc()))
    by_cls: dict[str, list[Receptacle]] = {}
    for rec in house.receptacles:
        by_cls.setdefault(rec.cls, []).append(rec)
    placed = [(obj, rng.choice(by_cls[rcls])) for obj, rcls in targets]
    if lamp is not None:
        placed.append((lamp[0], rng.choice(by_cls[lamp[1]])))
    target_classes = {obj for obj, _ in targets}
    for rec in house.receptacles:
        options = sorted(containable(rec.cls) - target_classes - MOVABLE_RECEPTACLES.intersection({rec.cls}))
        if forbid is not None and rec.cls == forbid[1]:
            options = [o for o in options if o != forbid[0]]
        for _ in range(rng.randint(0, distractors) if options else 0):
            placed.append((rng.choice(options), rec))
    house.items = [Item(f"{cls}|{ids.coord()}", cls, rec.id) for cls, rec in placed]
    return house
