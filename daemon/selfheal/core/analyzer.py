"""Classify one failed third-party API call into a recovery category.

Pure and fast: HTTP status, provider error codes, message keywords and headers are weighed together.
The codes, keywords, numeric codes and advice are data, in rules/*.toml; so are the shapes that let
a code no table lists still count (ProvisionedThroughputExceededException is "throughput exceeded").
"""

from __future__ import annotations

import itertools
import math
import operator
import re
from collections.abc import Iterable, Mapping
from typing import Final, NamedTuple

import orjson

from selfheal.core import rules
from selfheal.core.ratelimit import parse_number, ratelimit_exhausted
from selfheal.core.rules import SITUATIONS, NumericRule, Rule, Shape, canonical
from selfheal.models import Analysis, Category, Failure

__all__ = [
    "MAX_SCANNED_HEAD",
    "MAX_SCANNED_TAIL",
    "MAX_SIGNALS",
    "MAX_SIGNAL_LENGTH",
    "analyze",
    "ok_false",
]

# Provider bodies put codes and wording up front, tracebacks put the exception last; the middle
# of a huge message only costs time.
MAX_SCANNED_HEAD: Final = 2048
MAX_SCANNED_TAIL: Final = 512
MAX_SIGNALS: Final = 12
MAX_SIGNAL_LENGTH: Final = 64

_AUTH = Category.AUTH
_RATE = Category.RATE_LIMIT
_NET = Category.NETWORK
_DATA = Category.DATA

# Situations refine the advice inside a category (rules.SITUATIONS lists them all).
_REFRESH = "refresh"
_REAUTH = "reauth"
_CLIENT = "client"
_PERMISSION = "permission"
_RETRY_AFTER = "retry_after"
_QUOTA = "quota"
_DNS = "dns"
_TLS = "tls"
_TIMEOUT = "timeout"
_SERVER = "server"
_CARD = "card"
_NOT_FOUND = "not_found"
_CONFLICT = "conflict"
_TOO_LARGE = "too_large"
_VALIDATION = "validation"

# Evidence sources, in the order their signals are reported; each has a ceiling so that a
# verbose message or a pile of headers cannot outvote a clear status plus provider code.
_STATUS = 0
_CODE = 1
_HEADER = 2
_MESSAGE = 3
_SOURCE_CAP: Final = (4.0, 5.0, 3.5, 3.5)


class _Evidence(NamedTuple):
    category: Category
    weight: float
    source: int
    signal: str
    situation: str


# --- tables -----------------------------------------------------------------------------------

# Provider codes, keywords, numeric codes and advice live in rules/*.toml, checked at import.
_RULES: Final = rules.load()
_CODES: Final = _RULES.codes
_KEYWORDS: Final = _RULES.keywords
_REASON_PHRASES: Final = _RULES.reason_phrases
_WAIT_PHRASES: Final = _RULES.wait_phrases
_QUOTA_WORDS: Final = _RULES.quota_words
_QUOTA_SIGNALS: Final = frozenset(f"message:{rule.label}" for rule in _QUOTA_WORDS.values())
# Statuses that providers answer a throttled call with besides 429 (GitHub and Google 403, S3 and
# Azure 503): with them, a quota word counts double.
_THROTTLING_STATUSES: Final = frozenset({403, 503})
_ADVICE: Final = _RULES.advice
# Numeric codes: Twilio and Discord overlap, so the provider decides; shared numbers are only
# trusted when the provider is known.
_NUMERIC_CODES: Final = _RULES.numeric
# Below this a number (Meta's 4, 17, 190) is too common across APIs to mean anything without the
# provider that gave it.
_MIN_SHARED_CODE: Final = 10_000


def _numeric_table(*tables: Mapping[int, NumericRule]) -> dict[int, NumericRule]:
    merged: dict[int, NumericRule] = {}
    clashing: set[int] = set()
    for table in tables:
        for number, meaning in table.items():
            if number in merged and merged[number] != meaning:
                clashing.add(number)
            merged[number] = meaning
    return {
        number: meaning
        for number, meaning in merged.items()
        if number not in clashing and number >= _MIN_SHARED_CODE
    }


# Twilio's and Discord's numbers are theirs alone in practice and turn up behind wrappers whose
# service name does not say so; Meta's (80004, 131056) are only read for Meta's services.
_SHARED_PROVIDERS: Final = ("twilio", "discord")
_ANY_PROVIDER_CODES: Final = _numeric_table(
    *(_NUMERIC_CODES[name] for name in _SHARED_PROVIDERS if name in _NUMERIC_CODES)
)
# Providers with codes under 100 (Meta's 4), whose bodies are searched for numbers that short.
_SHORT_CODE_PROVIDERS: Final = frozenset(
    provider for provider, table in _NUMERIC_CODES.items() if any(number < 100 for number in table)
)
# A name in the service name -> the provider it means. Slack has no numeric codes, but its ok:false
# body is reported as its own signal.
_PROVIDER_OF: Final = {
    **{name: name for name in _NUMERIC_CODES},
    **_RULES.provider_aliases,
    "slack": "slack",
}
# A service name's words: "whatsapp_twilio" is Twilio's WhatsApp, "metabase" is not Meta.
_SERVICE_WORD_SPLIT_RE: Final = re.compile(r"[^a-z0-9]+")
_PROVIDER_MEMO: Final[dict[str, str]] = {}
_PROVIDER_MEMO_SIZE: Final = 1024

# --- provider and library error codes ---------------------------------------------------------

# SDK exception classes wrap a provider or library prefix around a familiar name:
# StripeConnectionError, stripe.error.RateLimitError, SomeClientTimeoutException.
_CODE_SUFFIXES: Final = (
    ("connectionerror", Rule(_NET, 2.5, "", "*ConnectionError")),
    ("timeouterror", Rule(_NET, 2.5, _TIMEOUT, "*TimeoutError")),
    ("timeoutexception", Rule(_NET, 2.5, _TIMEOUT, "*TimeoutException")),
    ("networkerror", Rule(_NET, 2.5, "", "*NetworkError")),
    ("ratelimiterror", Rule(_RATE, 2.5, _RETRY_AFTER, "*RateLimitError")),
    ("ratelimitexception", Rule(_RATE, 2.5, _RETRY_AFTER, "*RateLimitException")),
    ("throttlingexception", Rule(_RATE, 2.5, _RETRY_AFTER, "*ThrottlingException")),
    ("authenticationerror", Rule(_AUTH, 2.5, _REFRESH, "*AuthenticationError")),
    ("unauthorizederror", Rule(_AUTH, 2.5, _REFRESH, "*UnauthorizedError")),
    ("carderror", Rule(_DATA, 2.5, _CARD, "*CardError")),
    ("invalidrequesterror", Rule(_DATA, 1.0, _VALIDATION, "*InvalidRequestError")),
    ("notfounderror", Rule(_DATA, 2.0, _NOT_FOUND, "*NotFoundError")),
    ("validationerror", Rule(_DATA, 2.0, _VALIDATION, "*ValidationError")),
)


_ANY_CODE_SUFFIX: Final = tuple(suffix for suffix, _ in _CODE_SUFFIXES)
_UNDICI_RULE: Final = Rule(_NET, 3.0, "", "UND_ERR")


def _suffix_rule(key: str) -> Rule | None:
    if key.startswith("underr"):
        # Node's undici names every socket failure UND_ERR_*.
        return _UNDICI_RULE
    if not key.endswith(_ANY_CODE_SUFFIX):
        return None
    for suffix, rule in _CODE_SUFFIXES:
        if key.endswith(suffix):
            return rule
    return None


# --- message keywords -------------------------------------------------------------------------


class _Trie(dict[str, "_Trie"]):
    """A prefix tree of keywords; the empty key marks the end of a word."""


def _trie_pattern(words: Iterable[str]) -> str:
    """One alternation factored by prefix, so the engine does not retry every word per char."""
    root = _Trie()
    for word in words:
        node = root
        for char in word:
            node = node.setdefault(char, _Trie())
        node[""] = _Trie()

    def render(node: _Trie) -> str:
        branches = [re.escape(char) + render(child) for char, child in sorted(node.items()) if char]
        if not branches:
            return ""
        if len(branches) == 1 and "" not in node:
            return branches[0]
        group = "(?:" + "|".join(branches) + ")"
        return group + "?" if "" in node else group

    return render(root)


# Snake-case codes also turn up in prose ("An API error occurred: token_revoked"); the same scan
# finds them, and they count as codes.
_PROSE_CODES: Final = frozenset(
    rule.label.lower() for rule in _CODES.values() if "_" in rule.label and " " not in rule.label
)
_KEYWORD_RE: Final = re.compile(
    r"(?<![a-z0-9_])"
    + _trie_pattern([*_KEYWORDS, *_REASON_PHRASES, *_WAIT_PHRASES, *_QUOTA_WORDS, *_PROSE_CODES])
)
_WORD_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


# --- code shapes ------------------------------------------------------------------------------

_SHAPES: Final = _RULES.shapes
# The words of a code as written: ProvisionedThroughputExceeded, ITEM_LOGIN_REQUIRED, HTTPServer.
_CODE_WORD_RE: Final = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_SHAPE_WORDS: Final = frozenset(word for shape in _SHAPES for word in shape.words)
_EXACT_WORDS: Final = frozenset(word for word in _SHAPE_WORDS if not word.endswith("*"))
_PREFIXES: Final = tuple(sorted(word[:-1] for word in _SHAPE_WORDS if word.endswith("*")))
_PREFIXES_BY_INITIAL: Final = {
    initial: tuple(prefix for prefix in _PREFIXES if prefix[0] == initial)
    for initial in {prefix[0] for prefix in _PREFIXES}
}
_SHAPE_SETS: Final = tuple(frozenset(shape.words) for shape in _SHAPES)
# More words first, then file order.
_SHAPE_RANK: Final = tuple((-len(shape.words), index) for index, shape in enumerate(_SHAPES))
_SHAPES_BY_WORD: Final[dict[str, tuple[int, ...]]] = {
    word: tuple(index for index, shape in enumerate(_SHAPES) if word in shape.words)
    for word in _SHAPE_WORDS
}
# Most codes in a body are ids and names that resemble nothing; one search over the code, for the
# longest word of every shape, rules them out before they are split.
_SHAPE_ANCHOR_RE: Final = re.compile(
    _trie_pattern({max((word.rstrip("*") for word in shape.words), key=len) for shape in _SHAPES})
)


# A failing integration repeats the same error: each code's shape is worked out once. Bounded, so
# hostile rows cannot grow it; the answer never depends on what it holds.
_SHAPE_MEMO: Final[dict[str, Shape | None]] = {}
_SHAPE_MEMO_SIZE: Final = 4096


def _shape(code: str) -> Shape | None:
    """The shape (shapes.toml) a code no table lists resembles: the one with the most words, then
    the first in the file."""
    if code in _SHAPE_MEMO:
        return _SHAPE_MEMO[code]
    if len(_SHAPE_MEMO) >= _SHAPE_MEMO_SIZE:
        _SHAPE_MEMO.clear()
    shape = _SHAPE_MEMO[code] = _resemblance(code)
    return shape


def _resemblance(code: str) -> Shape | None:
    words = [word.lower() for word in _CODE_WORD_RE.findall(code)]
    present: set[str] = set()
    for word in words:
        if word in _EXACT_WORDS:
            present.add(word)
        if word.startswith(_PREFIXES):
            for prefix in _PREFIXES_BY_INITIAL[word[0]]:
                if word.startswith(prefix):
                    present.add(prefix + "*")
    matching = [
        index
        for index in {index for word in present for index in _SHAPES_BY_WORD[word]}
        if _SHAPE_SETS[index] <= present
    ]
    return _SHAPES[min(matching, key=_SHAPE_RANK.__getitem__)] if matching else None


# --- patterns inside bodies and texts ---------------------------------------------------------

# Every short string value in a JSON body or Python repr is a candidate code, and the first string
# of an array: "error": "invalid_auth", 'error': 'ratelimited', "errorCode":"INVALID_SESSION_ID",
# "title": "Not Found", "error": ["EService:Unavailable"],
# "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException". Keying on
# the colon alone keeps the scan fast; unknown values are simply not in the table. Read with their
# case, which is where a code's words begin; links are not codes.
_STRING_VALUE_RE: Final = re.compile(
    r"""[:\[]\s*["'](?!https?:)([A-Za-z][\w.\- ]{1,47}|[A-Za-z][\w.#/:\-]{1,95})["']""", re.ASCII
)
# A value is matched against the shapes only under a key that names an error ("error", "code",
# "__type", "errorCode", "reason", "status", "message": "INVALID_REFRESH_TOKEN"); a field name,
# an id, a role, a host name or a resource's kind in an echoed body ("field": "timeout_seconds",
# "kind": "shutdown") is not one, however much it looks like a code.
_SHAPED_KEY_RE: Final = re.compile(
    r"""(?:^|[^a-z0-9_])\w*(?:code|error|errors|type|reason|status|message)["']?\s*:?\s*$""",
    re.I,
)
_KEY_WINDOW: Final = 32
# "code": 20003, "code":50001, "status": 401: provider codes or echoed HTTP statuses; "code": 4
# only for a provider whose table has numbers that short (most JSON is full of small numbers).
_NUMBER_VALUE_RE: Final = re.compile(r""":\s*["']?(\d{3,7})(?![\d.])""")
_SHORT_NUMBER_VALUE_RE: Final = re.compile(r""":\s*["']?(\d{1,7})(?![\d.])""")
# A substatus or a subcode is not the status; AWS SDK v3's $metadata.httpStatusCode, httpStatus
# and http_code are.
_NUMBER_KEY_RE: Final = re.compile(
    r"""(?<![a-z0-9_])["']?(code|error_code|errorcode|status|status_code|statuscode|subcode|"""
    r"""error_subcode|http_?status(?:_?code)?|http_?code)["']?\s*$"""
)
_STATUS_KEYS: Final = frozenset(
    {
        "status",
        "status_code",
        "statuscode",
        "httpstatus",
        "http_status",
        "httpstatuscode",
        "http_statuscode",
        "httpstatus_code",
        "http_status_code",
        "httpcode",
        "http_code",
    }
)
# Google's "code": 429 is an HTTP status, Meta's "code": 4 its own: the provider's table decides.
_CODE_KEY: Final = "code"
# <Code>SlowDown</Code> (S3, STS, SQS, Azure Storage).
_XML_CODE_RE: Final = re.compile(r"<(?:error)?code>([a-z][\w.\-]{1,95})</(?:error)?code>", re.I)
# A code-like name in parentheses: "An error occurred (ThrottlingException) when calling",
# "Please wait 4 seconds and try again. (ServiceBusy)".
_PAREN_CODE_RE: Final = re.compile(r"\(([A-Za-z][A-Za-z0-9_.]{2,63})\)")
_CAMEL_RE: Final = re.compile(r"[a-z][A-Z]")
# gRPC status names in text: "status = StatusCode.UNAVAILABLE" (Python), "code = Unavailable" (Go).
_GRPC_CODE_RE: Final = re.compile(r"(?:statuscode\.|\bcode = )([a-z_]{3,32})")
# An exception's name before its message: "ThrottlingException: Rate exceeded",
# "java.net.SocketTimeoutException: Read timed out".
_HEAD_CODE_RE: Final = re.compile(r"\s*([A-Za-z][\w.$]{2,95}):\s", re.ASCII)
# Meta puts its code at the start of the message: "(#4) Application request limit reached".
_HASH_CODE_RE: Final = re.compile(r"\(#(\d{1,7})\)")
# After a wait phrase: "retry after 35", "retry after: 2".
_WAIT_NUMBER_RE: Final = re.compile(r"[: ]{0,2}\d")
# A bare "wait" counts only with a number and a unit short enough to be back-pressure: "wait 2
# seconds", not "wait 3 business days".
_WAIT_PHRASES_WITH_UNIT: Final = frozenset({"wait"})
_WAIT_DURATION_RE: Final = re.compile(
    r"[: ]{0,2}\d+(?:\.\d+)?\s*(?:ms|milliseconds?|s|secs?|seconds?|m|mins?|minutes?|h|hours?)\b"
)
# Meta marks errors that go away by themselves.
_TRANSIENT_RE: Final = re.compile(r"""["']is_transient["']\s*:\s*true""")
# Headers some providers name the error in: TooManyRequestsException:http://internal.amazon.com/...
_CODE_HEADERS: Final = ("x-amzn-errortype", "x-amz-error-code", "x-ms-error-code")
# application/x-www-form-urlencoded OAuth answers: error=invalid_grant&error_description=...
_FORM_CODE_RE: Final = re.compile(r"(?:^|[?&\s])error=([a-z][a-z0-9_]{1,47})")
_OK_FALSE_RE: Final = re.compile(r"""["']ok["']\s*:\s*false""")
_RETRY_AFTER_BODY_RE: Final = re.compile(r"""["']retry_after["']\s*:\s*["']?\d""")
# A status inside text: "status code 429" (axios), "429 Client Error" (requests), "HTTP error 429"
# (Teams webhooks), "Error code: 429" (OpenAI's SDK), "TooManyRequests (429)" (Cosmos DB's SDK).
# Digits are rare, so find them first and check the words around them.
_STATUS_DIGITS_RE: Final = re.compile(r"[1-5]\d\d")
# Read with its case: before a parenthesis only a code-like name counts ("TooManyRequests (429)",
# not "Processed batch (500) rows").
_STATUS_BEFORE_RE: Final = re.compile(
    r"(?:(?i:status(?:[ _-]?code)?|http(?:/\d(?:\.\d)?| error| status)?|response code|error code"
    r"|returned)|[a-z][A-Z][A-Za-z0-9]* \()\s*:?\s*$"
)
_STATUS_AFTER_RE: Final = re.compile(r" (?:client|server) error", re.I)
_IDENTIFIER_RE: Final = re.compile(r"[a-z][a-z0-9_.\-]{1,63}", re.I)
_CODE_HEAD_RE: Final = re.compile(r"[a-z0-9_.\-]{2,64}", re.I)
_USED_OF_LIMIT_RE: Final = re.compile(r"(\d+)\s*/\s*(\d+)")


# --- HTTP status ------------------------------------------------------------------------------

_STATUS_RULES: Final[dict[int, tuple[Category, float, str]]] = {
    400: (_DATA, 1.5, _VALIDATION),
    401: (_AUTH, 2.5, _REFRESH),
    402: (_DATA, 2.0, _CARD),
    # 403 means "not allowed", but GitHub, Google and Salesforce also use it for rate limits.
    403: (_AUTH, 1.5, _PERMISSION),
    404: (_DATA, 2.0, _NOT_FOUND),
    405: (_DATA, 2.0, _VALIDATION),
    406: (_DATA, 2.0, _VALIDATION),
    407: (_NET, 1.0, ""),
    408: (_NET, 2.0, _TIMEOUT),
    409: (_DATA, 2.0, _CONFLICT),
    # Gone for good, whatever the body calls it (APNs: an expired device token).
    410: (_DATA, 3.5, _NOT_FOUND),
    411: (_DATA, 2.0, _VALIDATION),
    412: (_DATA, 2.0, _CONFLICT),
    413: (_DATA, 2.0, _TOO_LARGE),
    414: (_DATA, 2.0, _TOO_LARGE),
    415: (_DATA, 2.0, _VALIDATION),
    416: (_DATA, 2.0, _VALIDATION),
    419: (_AUTH, 1.5, _REFRESH),
    420: (_RATE, 2.5, _RETRY_AFTER),
    422: (_DATA, 2.0, _VALIDATION),
    423: (_DATA, 1.5, _CONFLICT),
    424: (_DATA, 1.5, _VALIDATION),
    425: (_NET, 1.5, ""),
    428: (_DATA, 2.0, _CONFLICT),
    429: (_RATE, 3.0, _RETRY_AFTER),
    # Shopify's "security rejection" answers request floods.
    430: (_RATE, 1.5, _RETRY_AFTER),
    431: (_DATA, 2.0, _TOO_LARGE),
    440: (_AUTH, 1.5, _REFRESH),
    451: (_DATA, 2.0, _VALIDATION),
    498: (_AUTH, 2.0, _REFRESH),
    499: (_NET, 1.5, _TIMEOUT),
    500: (_NET, 2.0, _SERVER),
    501: (_DATA, 1.0, _VALIDATION),
    502: (_NET, 2.0, _SERVER),
    # 503 is also how Graph, Jira and Google shed load, so a Retry-After may outweigh it.
    503: (_NET, 1.5, _SERVER),
    504: (_NET, 2.0, _TIMEOUT),
    505: (_DATA, 1.0, _VALIDATION),
    507: (_DATA, 1.5, _TOO_LARGE),
    509: (_RATE, 2.0, _QUOTA),
    520: (_NET, 2.0, _SERVER),
    521: (_NET, 2.0, _SERVER),
    522: (_NET, 2.0, _TIMEOUT),
    523: (_NET, 2.0, _SERVER),
    524: (_NET, 2.0, _TIMEOUT),
    525: (_NET, 2.0, _TLS),
    526: (_NET, 2.0, _TLS),
    527: (_NET, 2.0, _SERVER),
    529: (_NET, 2.0, _SERVER),
    530: (_NET, 2.0, _SERVER),
}


def _status_rule(status: int) -> tuple[Category, float, str] | None:
    """What a status says on its own. One with no documented meaning (418, 299, 599) says
    nothing: a guess there would pick a recovery (data: never retried) on no evidence."""
    return _STATUS_RULES.get(status)


# --- headers ----------------------------------------------------------------------------------

_REMAINING_HEADERS: Final = (
    "x-ratelimit-remaining",
    "x-rate-limit-remaining",
    "ratelimit-remaining",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-minute",
    "x-hubspot-ratelimit-remaining",
    "x-hubspot-ratelimit-secondly-remaining",
    "x-ratelimit-remaining-hour",
    "x-app-rate-limit-remaining",
)
_RESET_HEADERS: Final = (
    "x-ratelimit-reset",
    "x-rate-limit-reset",
    "ratelimit-reset",
    "x-ratelimit-reset-after",
    "x-ratelimit-reset-requests",
)
_USED_OF_LIMIT_HEADERS: Final = ("x-shopify-shop-api-call-limit", "sforce-limit-info")
_DISCORD_LIMIT_HEADERS: Final = ("x-ratelimit-global", "x-ratelimit-scope")
_JIRA_LOGIN_FAILURES: Final = frozenset(
    {"authenticated_failed", "authentication_denied", "authorisation_failed"}
)


def _quota_left(value: str) -> float | None:
    # Repeated headers arrive joined with ", "; the first one counts.
    return parse_number(value.split(",", 1)[0])


def _header_evidence(
    headers: Mapping[str, str], status: int | None, found: list[_Evidence]
) -> None:
    if not headers:
        return
    # A 2xx/3xx Retry-After is polling advice, not back-pressure.
    answers_error = status is None or status >= 400
    if answers_error:
        if "retry-after" in headers:
            found.append(_Evidence(_RATE, 2.0, _HEADER, "header:retry-after", _RETRY_AFTER))
        if "x-ms-retry-after-ms" in headers:
            found.append(_Evidence(_RATE, 2.0, _HEADER, "header:x-ms-retry-after-ms", _RETRY_AFTER))
        for name in _REMAINING_HEADERS:
            value = headers.get(name)
            remaining = None if value is None else _quota_left(value)
            if remaining is not None and remaining <= 0:
                found.append(_Evidence(_RATE, 2.5, _HEADER, f"header:{name}:0", _RETRY_AFTER))
                break
        if ratelimit_exhausted(headers.get("ratelimit")):
            found.append(_Evidence(_RATE, 2.5, _HEADER, "header:ratelimit:0", _RETRY_AFTER))
        for name in _RESET_HEADERS:
            if name in headers:
                found.append(_Evidence(_RATE, 0.5, _HEADER, f"header:{name}", _RETRY_AFTER))
                break
        for name in _USED_OF_LIMIT_HEADERS:
            value = headers.get(name)
            if value is None:
                continue
            match = _USED_OF_LIMIT_RE.search(value[:128])
            if match and int(match.group(1)) >= int(match.group(2)) > 0:
                found.append(_Evidence(_RATE, 2.0, _HEADER, f"header:{name}:full", _RETRY_AFTER))
        for name in _DISCORD_LIMIT_HEADERS:
            if name in headers:
                found.append(_Evidence(_RATE, 2.0, _HEADER, f"header:{name}", _RETRY_AFTER))
                break
    challenge = headers.get("www-authenticate")
    if challenge is not None:
        lowered = challenge[:512].lower()
        if "insufficient_scope" in lowered:
            found.append(
                _Evidence(
                    _AUTH, 2.5, _HEADER, "header:www-authenticate:insufficient_scope", _PERMISSION
                )
            )
        elif "invalid_token" in lowered:
            found.append(
                _Evidence(_AUTH, 2.5, _HEADER, "header:www-authenticate:invalid_token", _REFRESH)
            )
        elif status == 401:
            found.append(_Evidence(_AUTH, 1.0, _HEADER, "header:www-authenticate", _REFRESH))
    login_reason = headers.get("x-seraph-loginreason")
    if login_reason is not None and login_reason[:64].strip().lower() in _JIRA_LOGIN_FAILURES:
        found.append(_Evidence(_AUTH, 2.5, _HEADER, "header:x-seraph-loginreason", _REFRESH))


# --- codes ------------------------------------------------------------------------------------


def _code_candidates(text: str, *, heads: bool) -> list[str]:
    """The code as given plus its last dotted part and, with ``heads``, its first word:
    'httpx.ReadTimeout', 'invalid_grant: Token has been expired or revoked.'. After a '#' only
    what follows counts: 'com.amazonaws.dynamodb.v20120810#ThrottlingException', but not in a
    sentence: 'rate_limited (see #42)'."""
    if "#" in text and " " not in text:
        text = text.rsplit("#", 1)[1]
    if not text:
        return []
    candidates = [text]
    if "." in text:
        candidates.append(text.rsplit(".", 1)[1])
    head = _CODE_HEAD_RE.match(text) if heads else None
    if head and head.group(0) != text:
        candidates.append(head.group(0))
        if "." in head.group(0):
            candidates.append(head.group(0).rsplit(".", 1)[1])
    return candidates


def _numeric_rule(number: int, provider: str) -> NumericRule | None:
    return _NUMERIC_CODES.get(provider, _ANY_PROVIDER_CODES).get(number)


def _provider(service: str) -> str:
    # The service name only: a message that mentions Discord is not a Discord answer. A provider
    # is one of its words; one named for itself (twilio) wins over one named by an alias
    # (whatsapp), then the first.
    provider = _PROVIDER_MEMO.get(service)
    if provider is None:
        if len(_PROVIDER_MEMO) >= _PROVIDER_MEMO_SIZE:
            _PROVIDER_MEMO.clear()
        words = [word for word in _SERVICE_WORD_SPLIT_RE.split(service) if word in _PROVIDER_OF]
        named = [word for word in words if _PROVIDER_OF[word] == word]
        provider = _PROVIDER_MEMO[service] = _PROVIDER_OF[(named or words)[0]] if words else ""
    return provider


def _code_or_shape(
    value: str,
    prefix: str,
    provider: str,
    seen: set[str],
    found: list[_Evidence],
    *,
    heads: bool = False,
) -> None:
    """Evidence for ``value`` from a table, or else from the shape of its words."""
    unknown = _code_evidence(value, prefix, provider, seen, found, heads=heads)
    if unknown is not None:
        _shape_evidence(unknown, prefix, found)


def _code_evidence(
    value: str,
    prefix: str,
    provider: str,
    seen: set[str],
    found: list[_Evidence],
    *,
    heads: bool = False,
) -> tuple[str, str] | None:
    """Evidence from a table for ``value`` or a part of it. When no table knows any part, the
    code and its canonical key to match against the shapes (None when a table knows it, it was
    seen already, or it is not one word)."""
    if heads or "." in value or "#" in value:
        return _parts_evidence(value, prefix, provider, seen, found, heads=heads)
    # Most values are one plain word.
    key = canonical(value)
    if not key or key in seen:
        return None
    seen.add(key)
    if _known(key, prefix, provider, found) or " " in value:
        return None
    return value, key


def _parts_evidence(
    value: str,
    prefix: str,
    provider: str,
    seen: set[str],
    found: list[_Evidence],
    *,
    heads: bool,
) -> tuple[str, str] | None:
    unknown: tuple[str, str] | None = None
    known = False
    for candidate in _code_candidates(value, heads=heads):
        key = canonical(candidate)
        if not key or key in seen:
            continue
        seen.add(key)
        if _known(key, prefix, provider, found):
            known = True
        elif unknown is None and " " not in candidate and "://" not in candidate:
            unknown = (candidate, key)
    return None if known else unknown


def _known(key: str, prefix: str, provider: str, found: list[_Evidence]) -> bool:
    """Whether a table knows the code (a number is known to say nothing when no table has it)."""
    if key.isdigit():
        numeric = _numeric_rule(int(key), provider) if len(key) <= 7 else None
        if numeric is not None:
            category, situation = numeric
            found.append(_Evidence(category, 3.0, _CODE, f"{prefix}:{key}", situation))
        return True
    rule = _CODES.get(key) or _suffix_rule(key)
    if rule is None:
        return False
    found.append(
        _Evidence(rule.category, rule.weight, _CODE, f"{prefix}:{rule.label}", rule.situation)
    )
    return True


def _looks_like_code(value: str) -> bool:
    return "_" in value or _CAMEL_RE.search(value) is not None


def _shape_evidence(unknown: tuple[str, str], prefix: str, found: list[_Evidence]) -> None:
    code, key = unknown
    if not _SHAPE_ANCHOR_RE.search(key):
        return
    shape = _shape(code)
    if shape is not None:
        rule = shape.rule
        found.append(
            _Evidence(
                rule.category, rule.weight, _CODE, f"{prefix}_shape:{rule.label}", rule.situation
            )
        )


# --- scoring ----------------------------------------------------------------------------------

# Equal scores go to the category whose recovery does the least harm when wrong.
_TIE_ORDER: Final = (_RATE, _AUTH, _NET, _DATA)
_SOURCE_OF: Final = operator.attrgetter("source")
_MIN_DECISIVE_SCORE: Final = 1.0


def _confidence(best: float, runner_up: float, permission_only: bool) -> float:
    # Saturating: one status alone is moderate (~0.6), status plus code plus header nears 0.95;
    # contrary evidence pulls it down.
    strength = 1.0 - math.exp(-best / 2.5)
    agreement = 1.0 - 0.5 * (runner_up / best)
    confidence = strength * agreement
    if permission_only:
        # A 403 may or may not be fixed by new credentials: stay modest.
        confidence = min(confidence * 0.85, 0.75)
    return round(min(max(confidence, 0.05), 0.98), 3)


def _scanned_text(message: str) -> str:
    """The part of a message that is read, with its case (codes are split into words by it)."""
    if len(message) <= MAX_SCANNED_HEAD + MAX_SCANNED_TAIL:
        return message
    return message[:MAX_SCANNED_HEAD] + "\n" + message[-MAX_SCANNED_TAIL:]


def _text_status(text: str) -> int | None:
    # Line numbers and ids in a long traceback are not statuses; a few candidates suffice.
    for match in itertools.islice(_STATUS_DIGITS_RE.finditer(text), 12):
        start, end = match.span()
        if (start and text[start - 1].isalnum()) or (end < len(text) and text[end].isalnum()):
            continue
        if _STATUS_BEFORE_RE.search(text, max(0, start - 24), start) or _STATUS_AFTER_RE.match(
            text, end
        ):
            return int(match.group(0))
    return None


def ok_false(body: str) -> str | None:
    """Slack and others answer 200 with `{"ok": false, "error": ...}`: the error it names
    ("ok_false" when none), or None when the body does not say `ok: false`. A JSON object
    decides by its top-level `ok`; a cut or non-JSON body by the text alone."""
    if "ok" not in body or not _OK_FALSE_RE.search(body):
        return None
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "ok_false"
    if not isinstance(parsed, dict) or parsed.get("ok") is not False:
        return None
    error = parsed.get("error")
    return error if isinstance(error, str) and error else "ok_false"


def _body_evidence(
    raw: str,
    text: str,
    provider: str,
    seen_codes: set[str],
    found: list[_Evidence],
    extra: list[str],
) -> int | None:
    """Codes inside a JSON, XML, repr or form body; returns an HTTP status the body echoes.

    ``raw`` is the body as written, ``text`` the same lower-cased."""
    echoed_status: int | None = None
    if ":" in raw:
        for match in _STRING_VALUE_RE.finditer(raw):
            unknown = _code_evidence(match.group(1), "body_code", provider, seen_codes, found)
            if (
                unknown is not None
                and _SHAPE_ANCHOR_RE.search(unknown[1])
                and _SHAPED_KEY_RE.search(raw, max(0, match.start() - _KEY_WINDOW), match.start())
            ):
                _shape_evidence(unknown, "body_code", found)
        own_codes = _NUMERIC_CODES.get(provider, {})
        numbers = _SHORT_NUMBER_VALUE_RE if provider in _SHORT_CODE_PROVIDERS else _NUMBER_VALUE_RE
        for match in numbers.finditer(text):
            key = _NUMBER_KEY_RE.search(text, max(0, match.start() - 24), match.start())
            if key is None:
                continue
            name = key.group(1)
            number = int(match.group(1))
            echoes_status = name in _STATUS_KEYS or (name == _CODE_KEY and number not in own_codes)
            if echoes_status and 100 <= number <= 599:
                echoed_status = echoed_status or number
            else:
                _code_evidence(match.group(1), "body_code", provider, seen_codes, found)
        if ok_false(text) is not None:
            extra.append("provider:slack:ok_false" if provider == "slack" else "body:ok_false")
        if "retry_after" in text and _RETRY_AFTER_BODY_RE.search(text):
            found.append(_Evidence(_RATE, 2.0, _HEADER, "body:retry_after", _RETRY_AFTER))
        if "is_transient" in text and _TRANSIENT_RE.search(text):
            found.append(_Evidence(_NET, 1.0, _HEADER, "body:is_transient", _SERVER))
    if "</" in raw:
        for match in _XML_CODE_RE.finditer(raw):
            _code_or_shape(match.group(1), "body_code", provider, seen_codes, found)
    if "error=" in text:
        for match in _FORM_CODE_RE.finditer(text):
            _code_evidence(match.group(1), "body_code", provider, seen_codes, found)
    return echoed_status


def _text_code_evidence(
    raw: str, text: str, provider: str, seen_codes: set[str], found: list[_Evidence]
) -> None:
    """Codes named inside prose: an exception's name before its message, in parentheses, as Meta's
    "(#4)"."""
    head = _HEAD_CODE_RE.match(raw)
    if head and _looks_like_code(head.group(1)):
        _code_or_shape(head.group(1), "message_code", provider, seen_codes, found)
    if "(" not in raw:
        return
    for match in _PAREN_CODE_RE.finditer(raw):
        code = match.group(1)
        if _looks_like_code(code):
            _code_or_shape(code, "message_code", provider, seen_codes, found)
    if "(#" in text:
        for match in _HASH_CODE_RE.finditer(text):
            _code_evidence(match.group(1), "message_code", provider, seen_codes, found)


def _grpc_code_evidence(
    text: str, provider: str, seen_codes: set[str], found: list[_Evidence]
) -> None:
    for match in _GRPC_CODE_RE.finditer(text):
        _code_evidence(match.group(1), "message_code", provider, seen_codes, found)


def _header_code_evidence(
    headers: Mapping[str, str], provider: str, seen_codes: set[str], found: list[_Evidence]
) -> None:
    for name in _CODE_HEADERS:
        value = headers.get(name)
        if value:
            code = value[:128].split(":", 1)[0].strip()
            _code_or_shape(code, "header_code", provider, seen_codes, found)


def _keyword_evidence(
    text: str, status: int | None, provider: str, seen_codes: set[str], found: list[_Evidence]
) -> None:
    status_is_error = status is not None and status >= 400
    quota_weight = 2.0 if status in _THROTTLING_STATUSES else 1.0
    seen: set[str] = set()
    for match in _KEYWORD_RE.finditer(text):
        word = match.group(0)
        if word in seen:
            continue
        seen.add(word)
        if word in _PROSE_CODES:
            end = match.end()
            if end == len(text) or text[end] not in _WORD_CHARS:
                _code_evidence(word, "message_code", provider, seen_codes, found)
                continue
        if text.startswith("_", match.end()):
            # Part of an identifier: "timeout_seconds" names a field, not a timeout.
            seen.discard(word)
            continue
        rule = _KEYWORDS.get(word)
        if rule is None and word in _QUOTA_WORDS:
            rule = _QUOTA_WORDS[word]
            rule = rule._replace(weight=rule.weight * quota_weight)
        if rule is None:
            rule = _WAIT_PHRASES.get(word)
            if rule is not None:
                needs = _WAIT_DURATION_RE if word in _WAIT_PHRASES_WITH_UNIT else _WAIT_NUMBER_RE
                if not needs.match(text, match.end()):
                    seen.discard(word)  # a later one may name its number
                    continue
            else:
                rule = _REASON_PHRASES.get(word)
                if rule is None or status_is_error:
                    continue
        found.append(
            _Evidence(rule.category, rule.weight, _MESSAGE, f"message:{rule.label}", rule.situation)
        )


def analyze(failure: Failure) -> Analysis:
    """Weigh every clue in ``failure`` and return the most likely category with its evidence."""
    status = failure.http_status
    raw = _scanned_text(failure.error_message or "")
    text = raw.lower()
    error_code = (failure.error_code or "")[:256].strip()
    code_text = error_code.lower()
    provider = _provider(failure.service_name[:128].lower())
    found: list[_Evidence] = []
    extra_signals: list[str] = []

    if status is not None:
        rule = _status_rule(status)
        if rule is not None:
            category, weight, situation = rule
            found.append(_Evidence(category, weight, _STATUS, f"http_status:{status}", situation))

    seen_codes: set[str] = set()
    _code_or_shape(error_code, "error_code", provider, seen_codes, found, heads=True)
    stripped = raw.strip()
    if _IDENTIFIER_RE.fullmatch(stripped):
        # Slack webhooks and some SDKs answer with the bare code as the whole body.
        _code_or_shape(stripped, "body_code", provider, seen_codes, found)
    echoed_status = _body_evidence(raw, text, provider, seen_codes, found, extra_signals)
    _text_code_evidence(raw, text, provider, seen_codes, found)
    if not failure.response_headers.keys().isdisjoint(_CODE_HEADERS):
        _header_code_evidence(failure.response_headers, provider, seen_codes, found)

    if status is None or status < 400:
        # Axios, requests and Teams webhooks put the real status in the text.
        embedded = echoed_status or _text_status(raw) or _text_status(error_code)
        rule = _status_rule(embedded) if embedded else None
        if rule is not None:
            category, weight, situation = rule
            found.append(
                _Evidence(category, weight * 0.8, _STATUS, f"embedded_status:{embedded}", situation)
            )

    _header_evidence(failure.response_headers, status, found)

    if code_text and not _IDENTIFIER_RE.fullmatch(code_text):
        # A sentence in the code field ("invalid_grant: Token has been expired or revoked.").
        text = code_text + "\n" + text
    if "statuscode." in text or "code = " in text:
        _grpc_code_evidence(text, provider, seen_codes, found)
    _keyword_evidence(text, status, provider, seen_codes, found)
    return _decide(found, extra_signals)


def _throttling_score(found: list[_Evidence]) -> float:
    """The rate-limit score without the quota words."""
    per_source: dict[int, float] = {}
    for category, weight, source, signal, _ in found:
        if category is _RATE and signal not in _QUOTA_SIGNALS:
            per_source[source] = per_source.get(source, 0.0) + weight
    return sum(min(total, _SOURCE_CAP[source]) for source, total in per_source.items())


def _decide(found: list[_Evidence], extra_signals: list[str]) -> Analysis:
    per_source: dict[tuple[Category, int], float] = {}
    for category, weight, source, _, _ in found:
        key = (category, source)
        per_source[key] = per_source.get(key, 0.0) + weight
    scores = dict.fromkeys(_TIE_ORDER, 0.0)
    for (category, source), total in per_source.items():
        cap = _SOURCE_CAP[source]
        scores[category] += cap if total > cap else total

    permission_only = False
    if scores[_AUTH]:
        auth = [evidence for evidence in found if evidence.category is _AUTH]
        permission_only = all(evidence.situation == _PERMISSION for evidence in auth)
        # Providers that say "rate limited" with a 403 (GitHub, Google, Salesforce). A quota
        # word is not enough to doubt an explicit "permission denied": "requires a quota
        # project", "quota_limit" in a body's metadata.
        if permission_only and scores[_RATE] >= 2.0 and _throttling_score(found) >= 2.0:
            scores[_AUTH] *= 0.5

    # A stable sort, so equal scores keep _TIE_ORDER.
    winner, runner_up, _, _ = sorted(_TIE_ORDER, key=scores.__getitem__, reverse=True)
    best = scores[winner]
    if best < _MIN_DECISIVE_SCORE:
        signals = [evidence.signal for evidence in found]
        signals.extend(extra_signals)
        return _analysis(Category.UNKNOWN, 0.2 if found else 0.1, signals, "")

    supporting = [evidence for evidence in found if evidence.category is winner]
    supporting.sort(key=_SOURCE_OF)
    situations = {evidence.situation for evidence in supporting}
    situation = ""
    for name in SITUATIONS[winner]:
        if name in situations:
            situation = name
            break
    confidence = _confidence(best, scores[runner_up], permission_only and winner is _AUTH)
    signals = [evidence.signal for evidence in supporting]
    signals.extend(extra_signals)
    return _analysis(winner, confidence, signals, situation)


def _analysis(
    category: Category, confidence: float, signals: list[str], situation: str
) -> Analysis:
    unique = tuple(dict.fromkeys([signal[:MAX_SIGNAL_LENGTH] for signal in signals]))[:MAX_SIGNALS]
    advice = _ADVICE.get((category, situation)) or _ADVICE[(category, "")]
    return Analysis(category=category, confidence=confidence, signals=unique, advice=advice)
