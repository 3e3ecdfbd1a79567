"""Redact secrets from everything the daemon stores or logs: free text, JSON-like data, headers.

Pure and bounded: no I/O, no clock, linear-time regexes, capped depth, size and length.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

__all__ = [
    "MAX_JSON_BYTES",
    "REDACTED",
    "Unreadable",
    "printable",
    "read_json",
    "scrub",
    "scrub_text",
    "shape",
    "storable_text",
]

REDACTED = "[REDACTED]"

DEFAULT_MAX_LENGTH = 4096
# Below this a truncation suffix and some text no longer fit together.
MIN_MAX_LENGTH = 64
# Extra input scanned beyond twice the output size, so that text which redaction shrinks
# (a 3 kB PEM block becomes ten characters) still fills the output.
_SCAN_MARGIN = 1024
# Where the scan window of a huge text may be cut: every rule either stops at these or, for
# quoted values, cookies and PEM blocks, redacts to the end, so no half secret is left behind.
_SAFE_CUT_CHARS = " \t\r\n\f\v,;\"'{}()<>[]|"
# Too short to hold any pattern we look for ("sig=x" is the shortest).
_MIN_SCANNED_LENGTH = 5

_MAX_KEY_LENGTH = 256
_SHAPE_MAX_KEYS = 256
# A whole-value budget on top of max_items, so shared or cyclic references cannot
# turn a depth-bounded walk into an exponential one.
_NODES_PER_ITEM = 10

_SURROGATES = re.compile("[\ud800-\udfff]")


# --------------------------------------------------------------------------- text rules


def _looks_like_secret(value: str, min_length: int) -> bool:
    """Random-looking: a digit or an inner capital, or simply long.

    Only ever grows more true as a value gets longer, which keeps truncation idempotent.
    """
    if len(value) < min_length:
        return False
    if len(value) >= 32:
        return True
    return any(char.isdigit() for char in value) or any(char.isupper() for char in value[1:])


def _words(*fragments: str) -> str:
    """An alternation grouped by first letter.

    Every branch then starts with a literal, which lets the regex engine skip positions on their
    first character; a flat case-insensitive list of names scans about five times slower.
    """
    by_first: dict[str, list[str]] = {}
    for fragment in fragments:
        by_first.setdefault(fragment[0], []).append(fragment[1:])
    branches = "|".join(
        f"{first}(?:{'|'.join(sorted(rests, key=len, reverse=True))})"
        for first, rests in by_first.items()
    )
    return f"(?:{branches})"


# Receives the match and the original text (matches on the lower-cased copy are mapped back by
# position); returns the replacement, or None to leave the match alone.
_Replace = Callable[[re.Match[str], str], str | None]


def _keep_prefix(match: re.Match[str], text: str) -> str:
    return text[match.start() : match.end("keep")] + REDACTED


def _keep_scheme_if_secret(match: re.Match[str], text: str) -> str | None:
    value = text[match.start("value") : match.end("value")]
    if match["scheme"].lower() == "bearer" or _looks_like_secret(value, 6):
        return _keep_prefix(match, text)
    return None


def _keep_prefix_if_entropic(match: re.Match[str], text: str) -> str | None:
    value = text[match.start("value") : match.end("value")]
    return _keep_prefix(match, text) if _looks_like_secret(value, 16) else None


@dataclass(frozen=True, slots=True)
class _Rule:
    """One regex pass, and the cheap checks that let most texts skip it."""

    pattern: re.Pattern[str]
    replace: str | _Replace
    # Skip unless the text holds one of these substrings (looked up lower-cased for folded
    # rules), one of these characters, and at least this many characters.
    triggers: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    min_length: int = _MIN_SCANNED_LENGTH
    # Folded rules are written in lower case and run on the lower-cased text;
    # case_insensitive is the same pattern for the rare text whose length lower() changes.
    case_insensitive: re.Pattern[str] | None = None


def _folded_rule(
    source: str,
    replace: _Replace,
    triggers: tuple[str, ...],
    needs: tuple[str, ...] = (),
    min_length: int = _MIN_SCANNED_LENGTH,
) -> _Rule:
    return _Rule(
        re.compile(source, re.VERBOSE),
        replace,
        triggers,
        needs,
        min_length,
        re.compile(source, re.VERBOSE | re.IGNORECASE),
    )


# A quote that may itself be escaped, as in JSON embedded in a JSON string.
_QUOTE = r"""\\?["']"""
# A key's closing quote, then ':' '=' or '=>'.
_SEPARATOR = rf"(?:{_QUOTE})?[ \t]*(?:=>|[:=])[ \t]*"
# Inside quotes: up to the same (possibly escaped) quote, honouring backslash escapes; no
# closing quote needed, so a value cut short is still redacted.
_QUOTED_VALUE = r"(?:(?!(?P=quote))(?:[^\r\n\\]|\\.))+"
# Unquoted: one word of a query string, header or log line (or a marker and what sticks to it).
_BARE_VALUE = r"""(?:\[redacted\][^\s"'\\&,;<>()\[\]{}]*|[^\s"'\\&,;<>()\[\]{}]+)"""
# Cookies and auth headers hold spaces and semicolons: unquoted, take the rest of the line.
_LINE_VALUE = rf"""(?(quote){_QUOTED_VALUE}|[^\s"'\\][^\r\n"'\\]*)"""
_AUTH_SCHEME = r"(?:bearer|basic|token)[ \t]+"

_PEM_BLOCK = re.compile(
    r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
    # A block cut short by truncation is redacted to the end.
    r"(?:[\s\S]*?-----END[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----|[\s\S]*)"
)

# Case-sensitive, no left boundary: a format embedded in a longer word is still redacted.
_KNOWN_FORMATS = re.compile(
    r"xox[abposre]-[0-9A-Za-z-]{8,}"
    r"|xapp-[0-9A-Za-z-]{8,}"
    r"|sk_(?:live|test)_[0-9A-Za-z]{8,}"
    r"|rk_(?:live|test)_[0-9A-Za-z]{8,}"
    r"|whsec_[0-9A-Za-z+/=]{8,}"
    r"|gh[oprsu]_[0-9A-Za-z]{16,}"
    r"|github_pat_[0-9A-Za-z_]{16,}"
    r"|glpat-[0-9A-Za-z_-]{16,}"
    r"|AIza[0-9A-Za-z_-]{30,}"
    r"|ya29\.[0-9A-Za-z_-]{16,}"
    r"|GOCSPX-[0-9A-Za-z_-]{16,}"
    r"|AKIA[0-9A-Z]{12,}"
    r"|ASIA[0-9A-Z]{12,}"
    r"|sk-(?:(?:proj|svcacct|admin|ant-[a-z]+[0-9]*)-[0-9A-Za-z_-]{16,}|[0-9A-Za-z]{20,})"
    r"|SG\.[0-9A-Za-z_-]{8,}\.[0-9A-Za-z_-]{8,}"
    r"|SK[0-9a-f]{32}"
    r"|eyJ[0-9A-Za-z_-]{5,}\.[0-9A-Za-z_-]{5,}(?:\.[0-9A-Za-z_-]*){0,3}"
    r"|npm_[0-9A-Za-z]{30,}"
    r"|shp(?:at|ca|pa|ss)_[0-9a-fA-F]{32}"
    r"|hf_[A-Za-z]{30,}"
    r"|key-[0-9a-f]{32}"
)

_URL_CREDENTIALS = re.compile(r"//[^/\s:@]+:[^/\s@]*@")

# Names that make the value after them a secret. What precedes them does not matter
# ("x-amz-signature", "client_secret", "accessToken"), but the name must end there:
# "tokenizer=1" and "max_tokens: 5" are no secrets.
_SECRET_NAMES = _words(
    "token", "secret", "passwd", "password", "passphrase", "signature", "credentials?",
    "api[_-]?key", "session(?:[_-]?id)?", "sessid", "webhook[_-]?url", "assertion",
    "authorization[_-]?code",
    *(
        f"{owner}[_-]?key"
        for owner in (
            "private", "secret", "access", "signing", "encryption", "master", "subscription",
            "client", "app", "auth", "license", "account", "admin", "service",
        )
    ),
    # Short or common words only as whole words, or as URL parameters.
    "sig(?<![a-z0-9]sig)", "pwd(?<![a-z0-9]pwd)", "sid(?<![a-z0-9]sid)",
    "key(?<=[?&\\#;]key)", "code(?<=[?&\\#;]code)", "pass(?<=[?&\\#;]pass)",
    "auth(?<=[?&\\#;]auth)",
)  # fmt: skip

_KEY_VALUE = rf"""
    (?P<keep>(?:{_SECRET_NAMES})(?:[_-]?[0-9]{{1,8}})?{_SEPARATOR}(?P<quote>{_QUOTE})?
        (?:{_AUTH_SCHEME})?)
    (?(quote){_QUOTED_VALUE}|{_BARE_VALUE})
"""

_KEY_VALUE_TRIGGERS = (
    "token", "secret", "pass", "pwd", "signature", "credential", "key", "session", "sessid",
    "webhook", "assertion", "code", "sig", "sid", "auth",
)  # fmt: skip

# Only known schemes are kept: in "Authorization: s3cr3t more" the first word is the secret.
_HEADER_SCHEME = _words(
    "bearer", "basic", "digest", "token", "bot", "negotiate", "ntlm", "dpop", "gnap", "apikey",
    "api-key", "sso-key", "key", "hmac", "sharedkey", "aws4-hmac-sha256",
)  # fmt: skip
_AUTHORIZATION_HEADER = rf"""
    (?P<keep>authorization{_SEPARATOR}(?P<quote>{_QUOTE})?(?:{_HEADER_SCHEME}[ \t]+)?)
    {_LINE_VALUE}
"""
_COOKIE_HEADER = rf"(?P<keep>cookie{_SEPARATOR}(?P<quote>{_QUOTE})?){_LINE_VALUE}"

# "Bearer abc", "token abc" in prose; the value is judged by _keep_scheme_if_secret.
# Challenge parameters (WWW-Authenticate: Bearer realm="api", error="invalid_token") stay, and
# a scheme is never the value of another ("Basic Bearer x"), or the match would swallow it.
_SCHEMES = _words("bearer(?<![a-z0-9]bearer)", "basic(?<![a-z0-9]basic)", "token(?<![a-z0-9]token)")
_SCHEME_VALUE = rf"""
    (?P<keep>(?P<scheme>{_SCHEMES})[ \t]+)
    (?P<value>(?!(?:realm|scope|charset|error(?:_description|_uri)?)=|{_AUTH_SCHEME})
        [a-z0-9._~+/=-]+)
"""

# "API key 4f3a...", "secret is 'Zx81...'": a long random-looking word near a secret's name.
# Not "authorization": its header rule keeps the scheme ("AWS4-HMAC-SHA256") this would eat.
_LOOSE_SECRET_NAMES = _words(
    "token", "secret", "key", "passw(?:or)?d", "passphrase", "credentials?", "signature"
)
_ENTROPIC_AFTER_NAME = rf"""
    (?P<keep>(?:{_LOOSE_SECRET_NAMES})
        s?[ \t:="'`]{{1,4}}(?:(?:is|was|of|for|value)[ \t:="'`]{{1,4}})?)
    (?P<value>[a-z0-9_+/=.~-]{{16,}})
"""

# Order matters: exact formats first, so that looser rules never keep part of one as a key
# name or auth scheme; and no rule may redact a key name before its value is redacted.
_SEPARATORS = (":", "=")
_RULES: tuple[_Rule, ...] = (
    _Rule(_PEM_BLOCK, REDACTED, triggers=("PRIVATE KEY",)),
    # Its own first-character scan is as quick as checking twenty-odd trigger substrings.
    _Rule(_KNOWN_FORMATS, REDACTED, min_length=13),
    _folded_rule(
        r"(?P<keep>hooks\.slack\.com/(?:services|workflows|triggers|commands)/)[0-9a-z_/-]+",
        _keep_prefix,
        triggers=("hooks.slack.com",),
    ),
    _folded_rule(
        r"""(?P<keep>webhook\.office\.com/webhookb2/|outlook\.office(?:365)?\.com/webhook(?:b2)?/)
            [^\s"'<>\\\[\]]+""",
        _keep_prefix,
        triggers=("webhook.office.com", "outlook.office"),
    ),
    _folded_rule(
        r"""(?P<keep>discord(?:app)?\.com/api/(?:v[0-9]+/)?webhooks/)[^\s"'<>\\?\#\[\]]+""",
        _keep_prefix,
        triggers=("discord",),
    ),
    _folded_rule(
        r"""(?P<keep>hooks\.zapier\.com/hooks/catch/)[^\s"'<>\\?\#\[\]]+""",
        _keep_prefix,
        triggers=("hooks.zapier.com",),
    ),
    _Rule(_URL_CREDENTIALS, "//" + REDACTED + "@", triggers=("@",)),
    _folded_rule(
        _AUTHORIZATION_HEADER, _keep_prefix, triggers=("authorization",), needs=_SEPARATORS
    ),
    _folded_rule(_COOKIE_HEADER, _keep_prefix, triggers=("cookie",), needs=_SEPARATORS),
    _folded_rule(_KEY_VALUE, _keep_prefix, triggers=_KEY_VALUE_TRIGGERS, needs=_SEPARATORS),
    # After key=value: in "Bearer refreshToken: v" the word after the scheme is a key name,
    # and redacting it first would hide the secret value from the key=value rule.
    _folded_rule(
        _SCHEME_VALUE,
        _keep_scheme_if_secret,
        triggers=("bearer", "basic", "token"),
        needs=(" ", "\t"),
        min_length=8,
    ),
    _folded_rule(
        _ENTROPIC_AFTER_NAME,
        _keep_prefix_if_entropic,
        triggers=("token", "secret", "key", "pass", "credential", "signature"),
        min_length=20,
    ),
)


# C0 and C1 controls (tab and newline aside) and the bidirectional overrides that would let a
# text reorder what is shown after it.
_INVISIBLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """Third-party text for a person or a model to read: storable, line ends as \\n, and no
    invisible controls (which also keeps JSON escapes short)."""
    return _INVISIBLE.sub("", storable_text(text.replace("\r\n", "\n").replace("\r", "\n")))


def storable_text(text: str) -> str:
    """Drop NUL and replace lone surrogates: Postgres text and jsonb reject both."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    if not text.isascii():
        text = _SURROGATES.sub("\ufffd", text)
    return text


def _apply(rule: _Rule, text: str, folded: str) -> str:
    if isinstance(rule.replace, str):
        return rule.pattern.sub(rule.replace, text)
    if rule.case_insensitive is None:
        matches = rule.pattern.finditer(text)
    elif len(folded) == len(text):
        matches = rule.pattern.finditer(folded)
    else:  # lower() changed some lengths ("İ"), so positions would not map back
        matches = rule.case_insensitive.finditer(text)
    pieces: list[str] = []
    done = 0
    for match in matches:
        replacement = rule.replace(match, text)
        if replacement is not None:
            pieces += (text[done : match.start()], replacement)
            done = match.end()
    if not pieces:
        return text
    pieces.append(text[done:])
    return "".join(pieces)


def _contains_any(text: str, parts: tuple[str, ...]) -> bool:
    # A plain loop: any() over a generator costs more than the substring searches here.
    for part in parts:
        if part in text:
            return True
    return False


# Unpacked once: attribute lookups in the per-text loop cost more than most of the checks.
_RULE_CHECKS = tuple(
    (rule.min_length, rule.needs, rule.triggers, rule.case_insensitive is not None, rule)
    for rule in _RULES
)


def _redact(text: str) -> str:
    if len(text) < _MIN_SCANNED_LENGTH:
        return text
    folded = text.lower()
    for min_length, needs, triggers, is_folded, rule in _RULE_CHECKS:
        if len(text) < min_length or (needs and not _contains_any(text, needs)):
            continue
        if triggers and not _contains_any(folded if is_folded else text, triggers):
            continue
        redacted = _apply(rule, text, folded)
        if redacted is not text:
            text = redacted
            folded = text.lower()
    return text


# --------------------------------------------------------------------------- truncation


def _truncation_suffix(omitted: int) -> str:
    return f"\n…[truncated {omitted} chars]"


def _cut_at_safe_char(text: str, limit: int) -> str:
    """The longest prefix of text[:limit] that ends just before a safe cut character.

    A long run without any (an opaque blob) is dropped whole rather than cut in the middle.
    """
    window = text[:limit]
    cut = max(window.rfind(char) for char in _SAFE_CUT_CHARS)
    return window[:cut] if cut > 0 else ""


def _first_difference(left: str, right: str) -> int:
    for index, (a, b) in enumerate(zip(left, right, strict=False)):
        if a != b:
            return index
    return min(len(left), len(right))


def _truncate(redacted: str, max_length: int, dropped_before: int) -> str:
    """Cut to max_length, suffix included, so that scrubbing the result again changes nothing."""
    worst_suffix = _truncation_suffix(len(redacted) + dropped_before)
    kept = redacted[: max(0, max_length - len(worst_suffix))]
    # Never leave half a marker behind.
    partial = kept.rfind("[", max(0, len(kept) - len(REDACTED) + 1))
    if partial >= 0 and REDACTED.startswith(kept[partial:]):
        kept = kept[:partial]
    # A cut can turn harmless text into something a rule matches ("Authorization: Bearer [..]"
    # cut to "Authorization: Bea"); back off to before the change until nothing moves.
    for _ in range(16):
        candidate = kept + _truncation_suffix(len(redacted) - len(kept) + dropped_before)
        again = _redact(candidate)
        if again == candidate:
            return candidate if kept else candidate.lstrip("\n")
        kept = kept[: min(_first_difference(again, candidate), len(kept) - 1)]
    return _truncation_suffix(len(redacted) + dropped_before).lstrip("\n")


# Payloads repeat the same short values ("active", "usd", "2024-05-01") endlessly. Remembering
# the ones that passed unchanged halves the cost of scrub(); nothing redacted is ever kept, and
# the answer is the same with or without it. Texts this short are never truncated.
_KNOWN_CLEAN: dict[str, None] = {}
_KNOWN_CLEAN_SIZE = 4096
_KNOWN_CLEAN_MAX_LENGTH = MIN_MAX_LENGTH


def scrub_text(text: str, max_length: int = DEFAULT_MAX_LENGTH) -> str:
    """Redact secrets in free text, then cut it to at most max_length characters.

    Only a bounded prefix of huge input is scanned; the rest is dropped and counted in the
    '…[truncated N chars]' suffix. The output has no NUL or lone surrogates.
    """
    if max_length < MIN_MAX_LENGTH:
        raise ValueError(f"max_length must be at least {MIN_MAX_LENGTH}, got {max_length}")
    if type(text) is not str:
        # Plain str out, whatever a subclass (an enum member, say) does in __str__ or __eq__.
        text = str.__str__(text) if isinstance(text, str) else str(text)
    if text in _KNOWN_CLEAN:
        return text
    scan_limit = 2 * max_length + _SCAN_MARGIN
    window = _cut_at_safe_char(text, scan_limit) if len(text) > scan_limit else text
    dropped = len(text) - len(window)
    redacted = _redact(storable_text(window))
    if not dropped and len(redacted) <= max_length:
        if redacted == text and len(text) <= _KNOWN_CLEAN_MAX_LENGTH:
            if len(_KNOWN_CLEAN) >= _KNOWN_CLEAN_SIZE:
                _KNOWN_CLEAN.clear()
            _KNOWN_CLEAN[text] = None
        return redacted
    return _truncate(redacted, max_length, dropped)


# --------------------------------------------------------------------------- secret keys

# Normalised: lower case, letters and digits only, trailing digits dropped.
_SECRET_KEY_NAMES = frozenset(
    {"auth", "bearer", "jwt", "otp", "pass", "pwd", "session", "sessid", "sid", "sig"}
)
_SECRET_KEY_SUFFIXES = (
    "token", "secret", "password", "passwd", "passphrase", "apikey", "privatekey",
    "secretkey", "accesskey", "signingkey", "encryptionkey", "masterkey", "subscriptionkey",
    "clientkey", "authkey", "signature", "credential", "credentials", "cookie",
    "authorization", "sessionid", "webhookurl", "assertion", "authorizationcode",
)  # fmt: skip
_NOT_ALPHANUMERIC = re.compile(r"[^a-z0-9]+")


@lru_cache(maxsize=4096)
def _is_secret_key(scrubbed_key: str) -> bool:
    # Called with already scrubbed keys only, so the cache never holds a secret.
    normalised = _NOT_ALPHANUMERIC.sub("", scrubbed_key.lower()).rstrip("0123456789")
    return normalised in _SECRET_KEY_NAMES or normalised.endswith(_SECRET_KEY_SUFFIXES)


def _key_text(key: Any) -> str:
    """A dict key as JSON would write it, then scrubbed."""
    if isinstance(key, str):
        raw = key
    elif key is None:
        raw = "null"
    elif isinstance(key, bool):
        raw = "true" if key else "false"
    else:
        raw = _scalar_text(key)
    return scrub_text(raw, _MAX_KEY_LENGTH)


def _scalar_text(value: Any) -> str:
    try:
        return str(value)
    except Exception:  # any __str__ may raise; scrubbing must not
        return f"[unprintable {type(value).__name__}]"


# --------------------------------------------------------------------------- scrub


class _Budget:
    __slots__ = ("remaining",)

    def __init__(self, remaining: int) -> None:
        self.remaining = remaining


def _more_items_marker(count: int) -> str:
    return f"[… {count} more items]"


_MORE_KEYS_KEY = "…"
_TOO_DEEP = "[nested too deep]"


def _unique_key(key: str, taken: Mapping[str, Any]) -> str:
    # Redaction can fold different keys into one; keep every value reachable.
    if key not in taken:
        return key
    number = 2
    while f"{key} ({number})" in taken:
        number += 1
    return f"{key} ({number})"


def _scrub_number(value: int | float) -> int | float | str:
    if isinstance(value, int):
        # Beyond ~4300 digits int-to-text conversion raises (CVE-2020-10735 limit).
        if value.bit_length() > 4096:
            return "[integer too large]"
        return int(value)
    if math.isfinite(value):
        return float(value)
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _scrub(value: Any, depth: int, max_depth: int, max_items: int, budget: _Budget) -> Any:
    """Scrub one node; consumes at most budget.remaining nodes, which must be at least 1."""
    budget.remaining -= 1
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return _scrub_number(value)
    if isinstance(value, str):
        return scrub_text(value)
    is_mapping = isinstance(value, Mapping)
    if not (is_mapping or isinstance(value, list | tuple)):
        return scrub_text(_scalar_text(value))
    if depth >= max_depth or budget.remaining < 1:
        return _TOO_DEEP
    # Reserve a node for the "more items" marker while children are still to come.
    budget.remaining -= 1
    try:
        entries = list(value.items()) if is_mapping else list(enumerate(value))
    except Exception:  # a broken Mapping implementation
        entries = None
    if not entries:
        budget.remaining += 1
        if entries is None:
            return scrub_text(_scalar_text(value))
    # Containers at the limit keep max_items - 1 entries plus the marker, so a second pass
    # sees exactly max_items entries and cuts nothing more.
    limit = len(entries) if len(entries) <= max_items else max_items - 1
    scrubbed_dict: dict[str, Any] = {}
    scrubbed_list: list[Any] = []
    for index, (key, child) in enumerate(entries):
        is_last = index == len(entries) - 1
        if is_last:
            budget.remaining += 1  # no marker will follow the last entry
        if index >= limit or budget.remaining < 1:
            if is_last:
                budget.remaining -= 1
            marker = _more_items_marker(len(entries) - index)
            if is_mapping:
                scrubbed_dict[_unique_key(_MORE_KEYS_KEY, scrubbed_dict)] = marker
            else:
                scrubbed_list.append(marker)
            break
        if is_mapping:
            name = _unique_key(_key_text(key), scrubbed_dict)
            if _is_secret_key(name):
                budget.remaining -= 1
                scrubbed_dict[name] = REDACTED
            else:
                scrubbed_dict[name] = _scrub(child, depth + 1, max_depth, max_items, budget)
        else:
            scrubbed_list.append(_scrub(child, depth + 1, max_depth, max_items, budget))
    return scrubbed_dict if is_mapping else scrubbed_list


def scrub(value: Any, max_depth: int = 32, max_items: int = 1000) -> Any:
    """A JSON-serialisable copy of value with secrets redacted; never mutates, never raises.

    Values under secret-named keys become REDACTED whatever their type; strings go through
    scrub_text. Containers deeper than max_depth become a marker; a container keeps at most
    max_items entries and the whole value at most max_items * 10 nodes, the rest summarised
    by a marker. Non-finite floats become the strings "NaN", "Infinity", "-Infinity".
    """
    max_items = max(2, max_items)
    budget = _Budget(max_items * _NODES_PER_ITEM)
    return _scrub(value, 0, max(0, max_depth), max_items, budget)


# --------------------------------------------------------------------------- shape


#: JSON an integration wrote is read only up to this size (response headers, a payload's
#: shape); a larger value is reported, not read.
MAX_JSON_BYTES = 1_000_000


@dataclass(frozen=True, slots=True)
class Unreadable:
    """JSON that was not read, and why (too large, nested too deep, not JSON)."""

    reason: str


def read_json(text: str | None, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """A JSON column an integration wrote, read within bounds: None stays None, anything
    too large, too deep (the parser stops at 1,024 levels) or not JSON becomes an
    Unreadable with the reason. Never raises."""
    if text is None:
        return None
    if not isinstance(text, str):
        return Unreadable(f"not JSON text but {type(text).__name__}")
    if len(text) > max_bytes:
        return Unreadable(f"{len(text):,} characters, more than the {max_bytes:,} read")
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return Unreadable(f"not read as JSON: {str(exc)[:120]}")


def shape(value: Any, max_depth: int = 8) -> Any:
    """The structure of a payload without its values, for an admin to look at.

    Dicts keep their (scrubbed) keys, lists show their first element and their length,
    scalars become "string", "number", "boolean" or "null"; secret keys show "redacted".
    An Unreadable payload shows why it was not read.
    """
    if isinstance(value, Unreadable):
        return {"unreadable": value.reason}
    return _shape(value, 0, max(0, max_depth))


def _shape(value: Any, depth: int, max_depth: int) -> Any:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, Mapping):
        if depth >= max_depth:
            return _TOO_DEEP
        shaped: dict[str, Any] = {}
        try:
            items = list(value.items())
        except Exception:  # a broken Mapping implementation
            return "string"
        for index, (key, child) in enumerate(items):
            if index >= _SHAPE_MAX_KEYS - 1 and len(items) > _SHAPE_MAX_KEYS:
                shaped[_unique_key(_MORE_KEYS_KEY, shaped)] = _more_items_marker(len(items) - index)
                break
            name = _unique_key(_key_text(key), shaped)
            shaped[name] = (
                "redacted" if _is_secret_key(name) else _shape(child, depth + 1, max_depth)
            )
        return shaped
    if isinstance(value, list | tuple):
        if not value:
            return []
        if depth >= max_depth:
            return _TOO_DEEP
        count = len(value)
        return [_shape(value[0], depth + 1, max_depth), f"[{count} item{'s' * (count != 1)}]"]
    return "string"


# --------------------------------------------------------------------------- headers
