"""Memoised grammar work in textworld's PDDL engine: a step without re-deriving every admissible command.

At every step ``PddlEnv`` derives the text of each applicable action through
its grammar: a PEG parse of the template and deep copies of the context, ~70%
of a step's time. A command's text depends only on its template and variables
(``go to`` also on which receptacle stands at a location, a fact no ALFWorld
action changes), so it is cached per grammar (one per loaded game) by
(template, variables). Feedback texts (``#symbol#`` templates) read the live
state and are always derived. Parses are memoised too: a feedback template's
(copied out: derivation writes into the symbols) and a whole grammar's (every
game loads the same rules; a grammar only reads its rules, copying a rule's
symbols before it derives them). Two more parses are pure functions of their
text: the conjunctive queries that feedback rules test at every step (a ``Rule``
that matching only reads: shared) and a game's action grammar, which every load
parses again (~150 ms; copied out, as it becomes the game's own grammar).
"""
from __future__ import annotations

import copy
import functools


def cache_command_texts() -> None:
    """Patch textworld's grammar derivation and its template, query and grammar parsers in this process
    (idempotent)."""
    from textworld.envs.pddl import logic, textgen
    from textworld.logic import Rule

    grammar = textgen.ContextSensitiveGrammar
    if hasattr(grammar.derive, "__wrapped__"):
        return
    grammar.derive = _cached_derive(grammar.derive)
    grammar.parse = classmethod(_cached_grammar(grammar.parse.__func__))
    textgen._parse_and_convert = _cached_parse(textgen._parse_and_convert)
    logic._parse_and_convert = _cached_parse(logic._parse_and_convert, maxsize=16)  # ~0.5 MB a game's grammar
    query = Rule.parse_conjunctive_query.__func__
    Rule.parse_conjunctive_query = classmethod(functools.wraps(query)(functools.lru_cache(maxsize=4096)(query)))


def _cached_derive(derive):
    def cached(self, start: str, context: dict = {}) -> str:  # noqa: B006 (textworld's signature)
        if "#" in start:
            return derive(self, start, context)
        key = (start, tuple((k, v.id, v.name) for k, v in context.get("variables", {}).items()))
        texts = self.__dict__.setdefault("_command_texts", {})
        if key not in texts:
            texts[key] = derive(self, start, context)
        return texts[key]

    cached.__wrapped__ = derive
    return cached


def _cached_parse(parse_and_convert, maxsize: int = 4096):
    parse = functools.lru_cache(maxsize=maxsize)(
        lambda text, rule_name, trace: parse_and_convert(text, rule_name=rule_name, trace=trace))

    def cached(text: str, rule_name: str = "start", trace: bool = False):
        return copy.deepcopy(parse(text, rule_name, trace))

    cached.__wrapped__ = parse_and_convert
    return cached


def _cached_grammar(parse):
    rules = functools.lru_cache(maxsize=8)(lambda cls, text: dict(parse(cls, text)._rules))

    def cached(cls, text: str):
        grammar = cls()
        grammar._rules.update({name: list(rhs) for name, rhs in rules(cls, text).items()})
        return grammar

    cached.__wrapped__ = parse
    return cached
