"""The analyzer's tables (provider codes, message keywords, numeric codes, advice) as TOML files
beside this module, and the loader that checks them: pure, no I/O beyond reading those files.

A mistake in a table is an error at import, naming the file and the key: an unknown category or
situation, a code listed twice (also as another spelling of the same code), a keyword twice.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any, Final, NamedTuple

from selfheal.models import Category

__all__ = [
    "SITUATIONS",
    "NumericRule",
    "Rule",
    "RuleError",
    "Rules",
    "canonical",
    "load",
    "parse_advice",
    "parse_codes",
    "parse_keywords",
    "parse_numeric",
    "parse_toml",
]

#: The situations that refine each category's advice, in the order their advice wins when the
#: evidence names several. A rule may also name none.
SITUATIONS: Final[Mapping[Category, tuple[str, ...]]] = {
    Category.AUTH: ("client", "reauth", "refresh", "permission"),
    Category.RATE_LIMIT: ("quota", "retry_after"),
    Category.NETWORK: ("dns", "tls", "timeout", "server"),
    Category.DATA: ("card", "not_found", "conflict", "too_large", "validation"),
    Category.UNKNOWN: (),
}
# A rule that points at "unknown" would be evidence for nothing; only advice has that category.
_RULE_CATEGORIES: Final = (Category.AUTH, Category.RATE_LIMIT, Category.NETWORK, Category.DATA)
# The advice given when no situation stands out.
_GENERAL: Final = "general"
# The analyzer reads at most 7 digits as a numeric code.
_MAX_NUMERIC_CODE: Final = 9_999_999
_NON_ALNUM: Final = re.compile(r"[^a-z0-9]+")
# Providers are found as a part of the lower-cased service name.
_PROVIDER_NAME: Final = re.compile(r"[a-z0-9]+")


class RuleError(ValueError):
    """A rules table is malformed; the message names the file and the offending key."""


class Rule(NamedTuple):
    category: Category
    weight: float
    situation: str
    label: str  # the spelling reported in signals


class NumericRule(NamedTuple):
    category: Category
    situation: str


@dataclass(frozen=True, slots=True)
class Rules:
    codes: dict[str, Rule]  # by canonical() spelling
    keywords: dict[str, Rule]  # lower-case words and phrases found in messages
    reason_phrases: dict[str, Rule]  # count only when no error status says the same
    numeric: dict[str, dict[int, NumericRule]]  # by provider
    advice: dict[tuple[Category, str], str]  # situation "" is the general advice


def canonical(text: str) -> str:
    """rate_limit_exceeded, rateLimitExceeded and RATE-LIMIT-EXCEEDED are the same code."""
    return _NON_ALNUM.sub("", text.lower())


def load(directory: Traversable | None = None) -> Rules:
    """Read and check codes.toml, keywords.toml, numeric.toml and advice.toml.

    ``directory`` defaults to the files shipped in this package (read through importlib.resources,
    so this works from a wheel or a zip as well as from the source tree).
    """
    folder = directory if directory is not None else files("selfheal.core") / "rules"
    keywords, reason_phrases = parse_keywords(_read(folder, "keywords.toml"))
    return Rules(
        codes=parse_codes(_read(folder, "codes.toml")),
        keywords=keywords,
        reason_phrases=reason_phrases,
        numeric=parse_numeric(_read(folder, "numeric.toml")),
        advice=parse_advice(_read(folder, "advice.toml")),
    )


def parse_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib itself rejects a key given twice in one table ("Cannot overwrite a value").
        raise RuleError(f"{source}: {exc}") from exc


def parse_codes(data: Mapping[str, Any], source: str = "codes.toml") -> dict[str, Rule]:
    """``[[codes]]`` groups of provider and library codes, keyed by their canonical spelling."""
    _check_keys(data, source, ("codes",))
    table: dict[str, Rule] = {}
    for group in _groups(data, source, "codes", "names", weighted=True):
        for name in group.items:
            if not isinstance(name, str):
                raise RuleError(f"{group.where}: code {name!r} is not a string")
            key = canonical(name)
            if not key:
                raise RuleError(f"{group.where}: code {name!r} has no letters or digits")
            if key.isdigit():
                # The analyzer reads an all-digit code as a number, never from this table.
                raise RuleError(
                    f"{group.where}: code {name!r} is a number; list it in numeric.toml"
                )
            if key in table:
                first = table[key].label
                raise RuleError(
                    f"{source}: duplicate code {name!r}"
                    if name == first
                    else f"{source}: duplicate code {name!r}: the same code as {first!r} "
                    "(codes are compared without case and punctuation)"
                )
            table[key] = Rule(group.category, group.weight, group.situation, name)
    return table


def parse_keywords(
    data: Mapping[str, Any], source: str = "keywords.toml"
) -> tuple[dict[str, Rule], dict[str, Rule]]:
    """``[[keywords]]`` and ``[[reason_phrases]]`` groups; a word may appear once in the file.

    Keywords are matched literally in the lower-cased message, so "rate limit" and "rate-limit"
    are different keywords; only an exact repeat is a duplicate.
    """
    names = ("keywords", "reason_phrases")
    _check_keys(data, source, names)
    found_in: dict[str, str] = {}
    tables: list[dict[str, Rule]] = []
    for name in names:
        table: dict[str, Rule] = {}
        for group in _groups(data, source, name, "words", weighted=True):
            for word in group.items:
                if not isinstance(word, str) or not word:
                    raise RuleError(f"{group.where}: keyword {word!r} is not a non-empty string")
                if word != word.lower():
                    raise RuleError(
                        f"{group.where}: keyword {word!r} must be lower case "
                        "(messages are matched lower-cased)"
                    )
                if word in found_in:
                    raise RuleError(
                        f"{source}: duplicate keyword {word!r} (in [[{found_in[word]}]] "
                        f"and [[{name}]])"
                    )
                found_in[word] = name
                table[word] = Rule(group.category, group.weight, group.situation, word)
        tables.append(table)
    return tables[0], tables[1]


def parse_numeric(
    data: Mapping[str, Any], source: str = "numeric.toml"
) -> dict[str, dict[int, NumericRule]]:
    """One array of groups per provider (``[[twilio]]``) mapping its numeric codes to meanings."""
    tables: dict[str, dict[int, NumericRule]] = {}
    for provider in data:
        if not _PROVIDER_NAME.fullmatch(provider):
            raise RuleError(
                f"{source}: provider {provider!r} must be lower-case letters and digits "
                "(it is looked for in the lower-cased service name)"
            )
        table: dict[int, NumericRule] = {}
        for group in _groups(data, source, provider, "codes", weighted=False):
            for number in group.items:
                if (
                    isinstance(number, bool)
                    or not isinstance(number, int)
                    or not 0 <= number <= _MAX_NUMERIC_CODE
                ):
                    raise RuleError(
                        f"{group.where}: code {number!r} is not an integer "
                        f"from 0 to {_MAX_NUMERIC_CODE}"
                    )
                if number in table:
                    raise RuleError(f"{source}: duplicate {provider} code {number}")
                table[number] = NumericRule(group.category, group.situation)
        tables[provider] = table
    return tables


def parse_advice(
    data: Mapping[str, Any], source: str = "advice.toml"
) -> dict[tuple[Category, str], str]:
    """One table per category: advice text by situation, ``general`` when none stands out.

    Advice shared by two situations is written once; the other says ``{ same_as = "refresh" }``.
    """
    advice: dict[tuple[Category, str], str] = {}
    for name, entries in data.items():
        category = _category(name, f"{source}: [{name}]", tuple(Category))
        if not isinstance(entries, dict):
            raise RuleError(f"{source}: [{name}] must be a table of advice by situation")
        written: dict[str, str] = {}  # text -> the situation that holds it
        aliases: dict[str, tuple[str, Any]] = {}
        for situation, text in entries.items():
            where = f"{source}: [{name}] {situation}"
            if situation != _GENERAL and situation not in SITUATIONS[category]:
                raise RuleError(f"{where}: {_unknown_situation(situation, category)}")
            key = "" if situation == _GENERAL else situation
            if isinstance(text, dict) and set(text) == {"same_as"}:
                aliases[key] = (where, text["same_as"])
                continue
            if not isinstance(text, str) or not text.strip():
                raise RuleError(f'{where}: advice must be text or {{ same_as = "situation" }}')
            if text in written:
                raise RuleError(
                    f"{where}: duplicate advice, the same text as {written[text]}; "
                    f'write {{ same_as = "{written[text]}" }}'
                )
            written[text] = situation
            advice[(category, key)] = text
        for key, (where, target) in aliases.items():
            target_key = "" if target == _GENERAL else target
            text = advice.get((category, target_key)) if isinstance(target, str) else None
            if text is None:
                raise RuleError(f"{where}: same_as {target!r} names no advice text in [{name}]")
            advice[(category, key)] = text
    for category in Category:
        if (category, "") not in advice:
            raise RuleError(f"{source}: [{category}] needs {_GENERAL} advice")
    return advice


class _Group(NamedTuple):
    where: str
    category: Category
    situation: str
    weight: float
    items: list[Any]


def _groups(
    data: Mapping[str, Any], source: str, array: str, items_key: str, *, weighted: bool
) -> list[_Group]:
    entries = data.get(array, [])
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise RuleError(f"{source}: {array} must be an array of tables ([[{array}]])")
    allowed = ("category", "situation", items_key, *(("weight",) if weighted else ()))
    groups: list[_Group] = []
    for number, entry in enumerate(entries, 1):
        where = f"{source}: [[{array}]] #{number}"
        _check_keys(entry, where, allowed)
        category = _category(entry.get("category"), f"{where}: category", _RULE_CATEGORIES)
        situation = entry.get("situation", "")
        if situation != "" and (
            not isinstance(situation, str) or situation not in SITUATIONS[category]
        ):
            raise RuleError(f"{where}: {_unknown_situation(situation, category)}")
        weight = entry.get("weight", "missing") if weighted else 0.0
        if weighted and (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or not (0 < weight and math.isfinite(weight))
        ):
            raise RuleError(f"{where}: weight {weight!r} is not a positive number")
        items = entry.get(items_key)
        if not isinstance(items, list) or not items:
            raise RuleError(f"{where}: {items_key} must be a non-empty array")
        groups.append(_Group(where, category, situation, float(weight), items))
    return groups


def _category(value: Any, where: str, allowed: tuple[Category, ...]) -> Category:
    for category in allowed:
        if value == category.value:
            return category
    expected = ", ".join(category.value for category in allowed)
    raise RuleError(f"{where}: unknown category {value!r} (expected one of {expected})")


def _unknown_situation(situation: Any, category: Category) -> str:
    expected = ", ".join(SITUATIONS[category]) or "none"
    return f"unknown situation {situation!r} for {category} (expected one of {expected})"


def _check_keys(data: Mapping[str, Any], where: str, allowed: tuple[str, ...]) -> None:
    for key in data:
        if key not in allowed:
            raise RuleError(f"{where}: unknown key {key!r} (expected {', '.join(allowed)})")


def _read(folder: Traversable, name: str) -> dict[str, Any]:
    return parse_toml((folder / name).read_text(encoding="utf-8"), name)
