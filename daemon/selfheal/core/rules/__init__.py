"""The analyzer's tables (provider codes, code shapes, message keywords, numeric codes, advice) as
TOML files beside this module, and the loader that checks them: pure, no I/O beyond reading those
files.

A mistake in a table is an error at import, naming the file and the key: an unknown category or
situation, a code listed twice (also as another spelling of the same code), a keyword or a shape
twice, a provider alias that names no provider.
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
    "Shape",
    "canonical",
    "load",
    "parse_advice",
    "parse_aliases",
    "parse_codes",
    "parse_keywords",
    "parse_numeric",
    "parse_shapes",
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
# numeric.toml's table of other names a provider goes by.
_ALIASES: Final = "aliases"
# One word of a shape: lower-case letters and digits, "*" at the end for a prefix.
# Letters or digits, not both: a code is split between them (OAuth2Expired is oauth 2 expired).
_SHAPE_WORD: Final = re.compile(r"(?:[a-z]+|[0-9]+)\*?")
# The analyzer only looks further at a code that contains one shape's longest word, so that word
# must be long enough to be rare in ids and hashes.
_MIN_ANCHOR_LENGTH: Final = 3


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


class Shape(NamedTuple):
    """Words that must all be among a code's words ("too many": TooManyRequestsException).

    A word ending in "*" is a prefix ("throttl*": Throttled, THROTTLING)."""

    words: tuple[str, ...]
    rule: Rule  # rule.label is the shape as written, reported in signals


@dataclass(frozen=True, slots=True)
class Rules:
    codes: dict[str, Rule]  # by canonical() spelling
    keywords: dict[str, Rule]  # lower-case words and phrases found in messages
    reason_phrases: dict[str, Rule]  # count only when no error status says the same
    wait_phrases: dict[str, Rule]  # count only when a number follows ("retry after 35")
    quota_words: dict[str, Rule]  # weak alone; the analyzer weighs them with the status
    numeric: dict[str, dict[int, NumericRule]]  # by provider
    advice: dict[tuple[Category, str], str]  # situation "" is the general advice
    shapes: tuple[Shape, ...]  # in file order, which breaks ties between equal matches
    provider_aliases: dict[str, str]  # another name a provider goes by -> its key in numeric


def canonical(text: str) -> str:
    """rate_limit_exceeded, rateLimitExceeded and RATE-LIMIT-EXCEEDED are the same code."""
    # The analyzer calls this for every value in a body; most are one plain word already.
    folded = text.lower()
    if folded.isalnum() and folded.isascii():
        return folded
    return _NON_ALNUM.sub("", folded)


def load(directory: Traversable | None = None) -> Rules:
    """Read and check codes.toml, shapes.toml, keywords.toml, numeric.toml and advice.toml.

    ``directory`` defaults to the files shipped in this package (read through importlib.resources,
    so this works from a wheel or a zip as well as from the source tree).
    """
    folder = directory if directory is not None else files("selfheal.core") / "rules"
    keywords, reason_phrases, wait_phrases, quota_words = parse_keywords(
        _read(folder, "keywords.toml")
    )
    numeric = _read(folder, "numeric.toml")
    return Rules(
        codes=parse_codes(_read(folder, "codes.toml")),
        keywords=keywords,
        reason_phrases=reason_phrases,
        wait_phrases=wait_phrases,
        quota_words=quota_words,
        numeric=parse_numeric(numeric),
        advice=parse_advice(_read(folder, "advice.toml")),
        shapes=parse_shapes(_read(folder, "shapes.toml")),
        provider_aliases=parse_aliases(numeric),
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
) -> tuple[dict[str, Rule], dict[str, Rule], dict[str, Rule], dict[str, Rule]]:
    """``[[keywords]]``, ``[[reason_phrases]]``, ``[[wait_phrases]]`` and ``[[quota_words]]``
    groups; a word may appear once in the file.

    Keywords are matched literally in the lower-cased message, so "rate limit" and "rate-limit"
    are different keywords; only an exact repeat is a duplicate.
    """
    names = ("keywords", "reason_phrases", "wait_phrases", "quota_words")
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
    return tables[0], tables[1], tables[2], tables[3]


def parse_shapes(data: Mapping[str, Any], source: str = "shapes.toml") -> tuple[Shape, ...]:
    """``[[shapes]]`` groups of word families for codes no table lists, in file order.

    Each shape is its words separated by spaces; a shape may appear once in the file, whatever
    the order of its words.
    """
    _check_keys(data, source, ("shapes",))
    shapes: list[Shape] = []
    seen: dict[frozenset[str], str] = {}
    for group in _groups(data, source, "shapes", "words", weighted=True):
        for text in group.items:
            words = tuple(text.split()) if isinstance(text, str) else ()
            if not words or not all(_SHAPE_WORD.fullmatch(word) for word in words):
                raise RuleError(
                    f"{group.where}: shape {text!r} must be lower-case words of letters or of "
                    'digits separated by spaces, a word ending in "*" for a prefix'
                )
            if len(set(words)) < len(words):
                raise RuleError(f"{group.where}: shape {text!r} repeats a word")
            if max(len(word.rstrip("*")) for word in words) < _MIN_ANCHOR_LENGTH:
                raise RuleError(
                    f"{group.where}: shape {text!r} needs a word of at least "
                    f"{_MIN_ANCHOR_LENGTH} letters"
                )
            key = frozenset(words)
            if key in seen:
                raise RuleError(
                    f"{source}: duplicate shape {text!r} (the same words as {seen[key]!r})"
                )
            seen[key] = text
            shapes.append(Shape(words, Rule(group.category, group.weight, group.situation, text)))
    return tuple(shapes)


def parse_aliases(data: Mapping[str, Any], source: str = "numeric.toml") -> dict[str, str]:
    """numeric.toml's ``[aliases]``: other names a provider goes by (``instagram = "facebook"``)."""
    aliases = data.get(_ALIASES, {})
    if not isinstance(aliases, dict):
        raise RuleError(f"{source}: [{_ALIASES}] must be a table of name = provider")
    for alias, provider in aliases.items():
        where = f"{source}: [{_ALIASES}] {alias}"
        if not _PROVIDER_NAME.fullmatch(alias):
            raise RuleError(f"{where}: the name must be lower-case letters and digits")
        if alias in data:
            raise RuleError(f"{where}: the name is already a provider")
        if not isinstance(provider, str) or provider == _ALIASES or provider not in data:
            raise RuleError(f"{where}: {provider!r} is not a provider in {source}")
    return dict(aliases)


def parse_numeric(
    data: Mapping[str, Any], source: str = "numeric.toml"
) -> dict[str, dict[int, NumericRule]]:
    """One array of groups per provider (``[[twilio]]``) mapping its numeric codes to meanings;
    ``[aliases]`` (read by parse_aliases) is not a provider."""
    tables: dict[str, dict[int, NumericRule]] = {}
    for provider in data:
        if provider == _ALIASES:
            continue
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
