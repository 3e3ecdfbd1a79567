"""Classify one failed third-party API call into a recovery category.

Pure and fast: HTTP status, provider error codes, message keywords and headers are weighed together.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Mapping
from typing import Final, NamedTuple

from selfheal.models import Analysis, Category, Failure

__all__ = ["MAX_SCANNED_HEAD", "MAX_SCANNED_TAIL", "MAX_SIGNALS", "MAX_SIGNAL_LENGTH", "analyze"]

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

# Situations refine the advice inside a category.
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


class _Rule(NamedTuple):
    category: Category
    weight: float
    situation: str
    label: str


class _Evidence(NamedTuple):
    category: Category
    weight: float
    source: int
    signal: str
    situation: str


def _canonical(text: str) -> str:
    # rate_limit_exceeded, rateLimitExceeded and RATE-LIMIT-EXCEEDED are the same code.
    return _NON_ALNUM.sub("", text.lower())


_NON_ALNUM: Final = re.compile(r"[^a-z0-9]+")


# --- provider and library error codes ---------------------------------------------------------

_CodeSpec = tuple[Category, float, str, tuple[str, ...]]

_CODE_SPECS: tuple[_CodeSpec, ...] = (
    # Token missing, invalid or expired: a refresh usually fixes it.
    (
        _AUTH,
        3.0,
        _REFRESH,
        (
            "invalid_auth",
            "not_authed",
            "token_expired",
            "invalid_token",
            "expired_token",
            "authentication_error",
            "InvalidAuthenticationToken",
            "UNAUTHENTICATED",
            "authError",
            "invalidCredentials",
            "unauthenticated",
            "EXPIRED_AUTHENTICATION",
            "INVALID_AUTHENTICATION",
            "INVALID_SESSION_ID",
            "INVALID_AUTH_HEADER",
            "api_key_expired",
            "platform_api_key_expired",
            "secret_key_required",
            "invalid_api_key",
            "AuthenticationFailed",
            "AUTHENTICATION_FAILURE",
            "InvalidAuthenticationTokenTenant",
            "CompactToken.ValidationFailed",
            "token_invalid",
            "invalid_access_token",
            "expired_access_token",
            "login_required",
            "interaction_required",
            "not_authenticated",
            "authentication_failed",
            "Unauthorized",
            "Authorization_IdentityNotFound",
            "API Key Invalid",
            "API Key Missing",
            "invalid_credentials",
            "bad_credentials",
        ),
    ),
    # Grant, token or account revoked or gone: the user must re-authorize.
    (
        _AUTH,
        3.0,
        _REAUTH,
        (
            "invalid_grant",
            "token_revoked",
            "account_inactive",
            "user_deleted",
            "team_disabled",
            "no_service",
            "consent_required",
            "org_login_required",
            "two_factor_setup_required",
            "INVALID_OPERATION_WITH_EXPIRED_PASSWORD",
            "account_invalid",
            "User Disabled",
            "Account Disabled",
            "Wrong Datacenter",
            "bad_verification_code",
            "BAD_REFRESH_TOKEN",
        ),
    ),
    # The OAuth client itself is rejected or misconfigured (RFC 6749 section 5.2).
    (
        _AUTH,
        3.0,
        _CLIENT,
        (
            "invalid_client",
            "unauthorized_client",
            "unsupported_grant_type",
            "invalid_scope",
            "invalid_client_id",
            "invalid_client_secret",
            "incorrect_client_credentials",
            "redirect_uri_mismatch",
        ),
    ),
    # Authenticated but not allowed: missing scopes or roles.
    (
        _AUTH,
        3.0,
        _PERMISSION,
        (
            "missing_scope",
            "no_permission",
            "insufficient_scope",
            "insufficientPermissions",
            "Authorization_RequestDenied",
            "accessNotConfigured",
            "MISSING_SCOPES",
            "INSUFFICIENT_ACCESS",
            "INSUFFICIENT_ACCESS_OR_READONLY",
            "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY",
            "API_DISABLED_FOR_ORG",
            "API_CURRENTLY_DISABLED",
            "permission_error",
            "ekm_access_denied",
            "not_allowed_token_type",
            "restricted_action",
            "access_denied",
            "accessDenied",
            "ErrorAccessDenied",
            "posting_to_general_channel_denied",
            "action_prohibited",
            "INSUFFICIENT_SCOPES",
            "ACCESS_DENIED",
            "appNotAuthorizedToFile",
            "domainPolicy",
            "team_access_not_granted",
            "BotDisabledByAdmin",
            "insufficient_permissions",
            "missing_permissions",
            "Missing Access",
        ),
    ),
    # Generic permission words: weaker, 403 is also how some providers say "rate limited".
    (_AUTH, 2.0, _PERMISSION, ("PERMISSION_DENIED", "Forbidden", "not_allowed", "notAllowed")),
    (
        _RATE,
        3.0,
        _RETRY_AFTER,
        (
            "ratelimited",
            "rate_limited",
            "rate_limit",
            "rate_limit_error",
            "rate_limit_exceeded",
            "too_many_requests",
            "TooManyRequests",
            "rateLimitExceeded",
            "userRateLimitExceeded",
            "rateLimitExceededUnreg",
            "sharingRateLimitExceeded",
            "RESOURCE_EXHAUSTED",
            "activityLimitReached",
            "throttledRequest",
            "ApplicationThrottled",
            "throttled",
            "THROTTLED",
            "RATE_LIMITS",
            "REQUEST_LIMIT_EXCEEDED",
            "lock_timeout",
            "concurrentLimitExceeded",
            "servingLimitExceeded",
            "APIRateLimitExceeded",
            "RATE_LIMITED",
            "TooManyRequestsException",
            "ThrottlingException",
            "SlowDown",
            "Too Many Requests",
            "MailboxConcurrency",
            "ErrorTooManyObjectsOpened",
        ),
    ),
    (
        _RATE,
        3.0,
        _QUOTA,
        (
            "dailyLimitExceeded",
            "dailyLimitExceededUnreg",
            "quotaExceeded",
            "quota_exceeded",
            "limitExceeded",
            "usageLimits",
            "variableTermLimitExceeded",
        ),
    ),
    (
        _NET,
        3.0,
        _SERVER,
        (
            "api_connection_error",
            "api_error",
            "serviceNotAvailable",
            "UNAVAILABLE",
            "backendError",
            "internalError",
            "internal_error",
            "fatal_error",
            "service_unavailable",
            "temporarily_unavailable",
            "server_error",
            "SERVER_UNAVAILABLE",
            "UNABLE_TO_LOCK_ROW",
            "network_error",
            "ServiceUnavailable",
            "InternalServerError",
            "INTERNAL",
            "generalException",
            "ERR_NETWORK",
            "ERR_BAD_RESPONSE",
            "internal_server_error",
            "bad_gateway",
            "BadGateway",
            "Internal Server Error",
        ),
    ),
    (
        _NET,
        3.0,
        _TIMEOUT,
        (
            "DEADLINE_EXCEEDED",
            "request_timeout",
            "QUERY_TIMEOUT",
            "timeout",
            "gatewayTimeout",
            "gateway_timeout",
            "ETIMEDOUT",
            "ESOCKETTIMEDOUT",
            "ECONNABORTED",
            "ReadTimeout",
            "ConnectTimeout",
            "WriteTimeout",
            "PoolTimeout",
            "TimeoutError",
            "TimeoutException",
            "ServerTimeoutError",
            "socket.timeout",
            "ERR_SOCKET_CONNECTION_TIMEOUT",
            "UND_ERR_CONNECT_TIMEOUT",
            "UND_ERR_HEADERS_TIMEOUT",
            "UND_ERR_BODY_TIMEOUT",
            "SocketTimeoutException",
            "RequestTimeout",
            "CANCELLED",
        ),
    ),
    (
        _NET,
        3.0,
        _DNS,
        (
            "ENOTFOUND",
            "EAI_AGAIN",
            "EAI_NONAME",
            "EAI_FAIL",
            "gaierror",
            "NameResolutionError",
            "UnknownHostException",
        ),
    ),
    (
        _NET,
        3.0,
        _TLS,
        (
            "SSLError",
            "SSLCertVerificationError",
            "CertificateError",
            "ClientSSLError",
            "ClientConnectorCertificateError",
            "ClientConnectorSSLError",
            "CERT_HAS_EXPIRED",
            "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
            "DEPTH_ZERO_SELF_SIGNED_CERT",
            "SELF_SIGNED_CERT_IN_CHAIN",
            "ERR_TLS_CERT_ALTNAME_INVALID",
            "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
            "ERR_SSL_WRONG_VERSION_NUMBER",
            "SSLHandshakeException",
        ),
    ),
    (
        _NET,
        3.0,
        "",
        (
            "ECONNRESET",
            "ECONNREFUSED",
            "EPIPE",
            "EHOSTUNREACH",
            "ENETUNREACH",
            "ENETDOWN",
            "EHOSTDOWN",
            "ECONNCLOSED",
            "UND_ERR_SOCKET",
            "UND_ERR_CLOSED",
            "ERR_STREAM_PREMATURE_CLOSE",
            "ERR_HTTP2_STREAM_ERROR",
            "ERR_HTTP2_SESSION_ERROR",
            "ERR_SOCKET_CLOSED",
            "ConnectionError",
            "ConnectError",
            "ReadError",
            "WriteError",
            "RemoteDisconnected",
            "RemoteProtocolError",
            "ProtocolError",
            "ProxyError",
            "ChunkedEncodingError",
            "NetworkError",
            "TransportError",
            "ServerDisconnectedError",
            "ClientConnectorError",
            "ClientConnectionError",
            "ClientOSError",
            "ServerConnectionError",
            "ClientPayloadError",
            "ConnectionResetError",
            "ConnectionRefusedError",
            "ConnectionAbortedError",
            "BrokenPipeError",
            "IncompleteRead",
            "NewConnectionError",
            "ConnectException",
            "connection_error",
            "connection_reset",
            "connection_refused",
            "ERR_CONNECTION_REFUSED",
            "ERR_CONNECTION_RESET",
            "ERR_INTERNET_DISCONNECTED",
            "ERR_NAME_NOT_RESOLVED",
        ),
    ),
    # urllib3 also raises these when retries on 429 responses ran out, so they weigh less.
    (_NET, 2.0, "", ("MaxRetryError", "URLError", "ERR_CANCELED")),
    (
        _DATA,
        3.0,
        _CARD,
        (
            "card_error",
            "card_declined",
            "expired_card",
            "incorrect_cvc",
            "incorrect_number",
            "invalid_cvc",
            "invalid_number",
            "invalid_expiry_month",
            "invalid_expiry_year",
            "insufficient_funds",
            "processing_error",
            "do_not_honor",
            "generic_decline",
            "fraudulent",
            "lost_card",
            "stolen_card",
            "pickup_card",
            "incorrect_zip",
            "payment_intent_authentication_failure",
            "card_velocity_exceeded",
            "balance_insufficient",
            "transaction_not_allowed",
            "currency_not_supported",
        ),
    ),
    (
        _DATA,
        3.0,
        _NOT_FOUND,
        (
            "resource_missing",
            "channel_not_found",
            "user_not_found",
            "users_not_found",
            "message_not_found",
            "not_found",
            "NOT_FOUND",
            "notFound",
            "itemNotFound",
            "ResourceNotFound",
            "Request_ResourceNotFound",
            "ErrorItemNotFound",
            "RecordNotFound",
            "OBJECT_NOT_FOUND",
            "ENTITY_IS_DELETED",
            "InvalidEndpoint",
            "Resource Not Found",
            "ConversationNotFound",
            "not_in_channel",
            "is_archived",
            "channel_is_archived",
            "file_not_found",
            "thread_not_found",
            "no_such_subteam",
            "unknown_method",
            "ResourceNotFoundException",
            "PROPERTY_DOESNT_EXIST",
        ),
    ),
    (
        _DATA,
        3.0,
        _CONFLICT,
        (
            "ALREADY_EXISTS",
            "conflict",
            "CONFLICT",
            "duplicate",
            "DUPLICATE_VALUE",
            "DUPLICATES_DETECTED",
            "nameAlreadyExists",
            "already_exists",
            "idempotency_error",
            "idempotency_key_in_use",
            "resourceModified",
            "RecordNotUnique",
            "Member Exists",
            "OBJECT_ALREADY_EXISTS",
            "name_taken",
            "already_in_channel",
            "charge_already_refunded",
            "charge_already_captured",
            "FAILED_PRECONDITION",
        ),
    ),
    (
        _DATA,
        3.0,
        _TOO_LARGE,
        (
            "msg_too_long",
            "payload_too_large",
            "too_many_attachments",
            "STRING_TOO_LONG",
            "request_too_large",
            "RequestEntityTooLarge",
            "quotaLimitReached",
            "storageQuotaExceeded",
            "amount_too_large",
        ),
    ),
    (
        _DATA,
        3.0,
        _VALIDATION,
        (
            "validation_error",
            "VALIDATION_ERROR",
            "ValidationError",
            "schema_mismatch",
            "invalid_request",
            "INVALID_ARGUMENT",
            "invalid_arguments",
            "invalid_arg_name",
            "invalid_blocks",
            "invalid_attachments",
            "no_text",
            "invalid_payload",
            "invalid_json",
            "json_not_object",
            "invalid_form_data",
            "invalid_post_type",
            "invalid_charset",
            "invalidRequest",
            "BadRequest",
            "Request_BadRequest",
            "Request_UnsupportedQuery",
            "ErrorInvalidRequest",
            "invalidRange",
            "malformedRequest",
            "invalidParameter",
            "parseError",
            "required",
            "invalid",
            "badRequest",
            "OUT_OF_RANGE",
            "INVALID_FIELD",
            "REQUIRED_FIELD_MISSING",
            "MALFORMED_QUERY",
            "MALFORMED_ID",
            "INVALID_TYPE",
            "FIELD_CUSTOM_VALIDATION_EXCEPTION",
            "FIELD_INTEGRITY_EXCEPTION",
            "INVALID_CROSS_REFERENCE_KEY",
            "INVALID_FIELD_FOR_INSERT_UPDATE",
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            "JSON_PARSER_ERROR",
            "INVALID_EMAIL_ADDRESS",
            "INVALID_ID_FIELD",
            "INVALID_QUERY_FILTER_OPERATOR",
            "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY",
            "RecordInvalid",
            "InvalidValue",
            "InvalidPaginationParameter",
            "missing_field",
            "parameter_missing",
            "parameter_invalid_integer",
            "parameter_invalid_empty",
            "parameter_unknown",
            "email_invalid",
            "amount_too_small",
            "url_invalid",
            "testmode_charges_only",
            "invalid_email",
            "INVALID_EMAIL",
            "INVALID_OPTION",
            "INVALID_INTEGER",
            "Invalid Resource",
            "JSON Parse Error",
            "Member In Compliance State",
            "Requested fields are invalid",
            "Method Not Allowed",
            "method_deprecated",
            "deprecated_endpoint",
            "cannot_dm_bot",
            "unprocessable_entity",
            "bad_request",
            "METHOD_NOT_ALLOWED",
            "UnsupportedMediaType",
            "unsupported_response_type",
            "cant_update_message",
            "edit_window_closed",
            "ERR_BAD_REQUEST_BODY",
        ),
    ),
    # Stripe's broad type also covers 401 and 429 answers, so it only tips a tie.
    (_DATA, 1.0, _VALIDATION, ("invalid_request_error",)),
)

# Numeric codes: Twilio and Discord overlap, so the provider decides; shared numbers are only
# trusted when the provider is known.
_TWILIO_CODES: Final[dict[int, tuple[Category, str]]] = {
    20003: (_AUTH, _REFRESH),
    20005: (_AUTH, _REAUTH),
    20006: (_AUTH, _PERMISSION),
    20008: (_DATA, _VALIDATION),
    20404: (_DATA, _NOT_FOUND),
    20429: (_RATE, _RETRY_AFTER),
    20500: (_NET, _SERVER),
    20503: (_NET, _SERVER),
    21211: (_DATA, _VALIDATION),
    21212: (_DATA, _VALIDATION),
    21214: (_DATA, _VALIDATION),
    21217: (_DATA, _VALIDATION),
    21401: (_DATA, _VALIDATION),
    21408: (_DATA, _VALIDATION),
    21602: (_DATA, _VALIDATION),
    21604: (_DATA, _VALIDATION),
    21606: (_DATA, _VALIDATION),
    21608: (_DATA, _VALIDATION),
    21610: (_DATA, _VALIDATION),
    21612: (_DATA, _VALIDATION),
    21614: (_DATA, _VALIDATION),
    21617: (_DATA, _TOO_LARGE),
    21620: (_DATA, _VALIDATION),
    14107: (_RATE, _RETRY_AFTER),
    30001: (_RATE, _RETRY_AFTER),
    11200: (_NET, _SERVER),
    11205: (_NET, _SERVER),
    20001: (_DATA, _VALIDATION),
    30005: (_DATA, _VALIDATION),
    30006: (_DATA, _VALIDATION),
    30007: (_DATA, _VALIDATION),
}
_DISCORD_CODES: Final[dict[int, tuple[Category, str]]] = {
    10003: (_DATA, _NOT_FOUND),
    10004: (_DATA, _NOT_FOUND),
    10008: (_DATA, _NOT_FOUND),
    10013: (_DATA, _NOT_FOUND),
    10014: (_DATA, _NOT_FOUND),
    10015: (_DATA, _NOT_FOUND),
    10062: (_DATA, _NOT_FOUND),
    20016: (_RATE, _RETRY_AFTER),
    20022: (_RATE, _RETRY_AFTER),
    20028: (_RATE, _RETRY_AFTER),
    20029: (_RATE, _RETRY_AFTER),
    30001: (_DATA, _TOO_LARGE),
    30003: (_DATA, _TOO_LARGE),
    30005: (_DATA, _TOO_LARGE),
    30007: (_DATA, _TOO_LARGE),
    30010: (_DATA, _TOO_LARGE),
    30013: (_DATA, _TOO_LARGE),
    40001: (_AUTH, _REFRESH),
    40002: (_AUTH, _REAUTH),
    40060: (_DATA, _CONFLICT),
    50001: (_AUTH, _PERMISSION),
    50013: (_AUTH, _PERMISSION),
    50014: (_AUTH, _REFRESH),
    50025: (_AUTH, _REFRESH),
    50027: (_AUTH, _REFRESH),
    50006: (_DATA, _VALIDATION),
    50007: (_DATA, _VALIDATION),
    50035: (_DATA, _VALIDATION),
    50109: (_DATA, _VALIDATION),
    130000: (_NET, _SERVER),
    20001: (_AUTH, _PERMISSION),
    20002: (_AUTH, _PERMISSION),
}


def _numeric_table(
    *tables: Mapping[int, tuple[Category, str]],
) -> dict[int, tuple[Category, str]]:
    merged: dict[int, tuple[Category, str]] = {}
    clashing: set[int] = set()
    for table in tables:
        for number, meaning in table.items():
            if number in merged and merged[number] != meaning:
                clashing.add(number)
            merged[number] = meaning
    return {number: meaning for number, meaning in merged.items() if number not in clashing}


_ANY_PROVIDER_CODES: Final = _numeric_table(_TWILIO_CODES, _DISCORD_CODES)


def _code_table(specs: Iterable[_CodeSpec]) -> dict[str, _Rule]:
    table: dict[str, _Rule] = {}
    for category, weight, situation, names in specs:
        for name in names:
            table.setdefault(_canonical(name), _Rule(category, weight, situation, name))
    return table


_CODES: Final = _code_table(_CODE_SPECS)

# SDK exception classes wrap a provider or library prefix around a familiar name:
# StripeConnectionError, stripe.error.RateLimitError, SomeClientTimeoutException.
_CODE_SUFFIXES: Final = (
    ("connectionerror", _Rule(_NET, 2.5, "", "*ConnectionError")),
    ("timeouterror", _Rule(_NET, 2.5, _TIMEOUT, "*TimeoutError")),
    ("timeoutexception", _Rule(_NET, 2.5, _TIMEOUT, "*TimeoutException")),
    ("networkerror", _Rule(_NET, 2.5, "", "*NetworkError")),
    ("ratelimiterror", _Rule(_RATE, 2.5, _RETRY_AFTER, "*RateLimitError")),
    ("ratelimitexception", _Rule(_RATE, 2.5, _RETRY_AFTER, "*RateLimitException")),
    ("throttlingexception", _Rule(_RATE, 2.5, _RETRY_AFTER, "*ThrottlingException")),
    ("authenticationerror", _Rule(_AUTH, 2.5, _REFRESH, "*AuthenticationError")),
    ("unauthorizederror", _Rule(_AUTH, 2.5, _REFRESH, "*UnauthorizedError")),
    ("carderror", _Rule(_DATA, 2.5, _CARD, "*CardError")),
    ("invalidrequesterror", _Rule(_DATA, 1.0, _VALIDATION, "*InvalidRequestError")),
    ("notfounderror", _Rule(_DATA, 2.0, _NOT_FOUND, "*NotFoundError")),
    ("validationerror", _Rule(_DATA, 2.0, _VALIDATION, "*ValidationError")),
)


_ANY_CODE_SUFFIX: Final = tuple(suffix for suffix, _ in _CODE_SUFFIXES)
_UNDICI_RULE: Final = _Rule(_NET, 3.0, "", "UND_ERR")


def _suffix_rule(key: str) -> _Rule | None:
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

_KeywordSpec = tuple[Category, float, str, tuple[str, ...]]

_KEYWORD_SPECS: tuple[_KeywordSpec, ...] = (
    (
        _RATE,
        3.0,
        _RETRY_AFTER,
        (
            "secondary rate limit",
            "abuse detection",
            "too many 429 error responses",
            "you are being rate limited",
        ),
    ),
    (
        _RATE,
        2.0,
        _RETRY_AFTER,
        (
            "rate limit",
            "rate-limit",
            "ratelimit",
            "rate limited",
            "too many requests",
            "throttl",
            "calls per second",
            "requests per second",
            "reduce request rate",
            "slow down",
            "simultaneous connections",
            "concurrent requests",
            "request limit",
            "too many calls",
            "call limit",
        ),
    ),
    (
        _RATE,
        2.0,
        _QUOTA,
        (
            "quota exceeded",
            "exceeded your quota",
            "exceeded the quota",
            "quota has been exceeded",
            "usage limit",
            "daily limit",
            "resource exhausted",
            "resource has been exhausted",
            "ten_secondly_rolling",
        ),
    ),
    (_RATE, 1.0, _QUOTA, ("quota", "limit exceeded", "limit reached")),
    (
        _AUTH,
        2.5,
        _REFRESH,
        (
            "invalid api key",
            "api key invalid",
            "invalid token",
            "invalid access token",
            "invalid oauth",
            "bad credentials",
            "invalid credentials",
            "token expired",
            "token has expired",
            "token is expired",
            "token is invalid",
            "expired token",
            "jwt expired",
            "invalid jwt",
            "access token has expired",
            "couldn't authenticate",
            "could not authenticate",
            "must be authenticated",
            "requires authentication",
            "not authenticated",
            "authentication failed",
            "authentication credentials",
            "invalid authentication",
            "unrecognized login",
            "session expired",
            "session has expired",
            "invalid session",
            "authentication required",
            "authorization required",
        ),
    ),
    (
        _AUTH,
        2.5,
        _REAUTH,
        (
            "expired or revoked",
            "has been revoked",
            "token revoked",
            "authorization grant",
            "re-authorize",
            "reauthorize",
            "account inactive",
            "account is disabled",
            "account has been disabled",
            "account disabled",
            "has been deactivated",
        ),
    ),
    (_AUTH, 2.0, _CLIENT, ("client authentication failed", "invalid client")),
    (
        _AUTH,
        1.5,
        _REFRESH,
        (
            "unauthenticated",
            "access token",
            "oauth token",
            "refresh token",
            "api key",
            "authorization header",
            "aadsts",
            "wrong password",
            "login required",
        ),
    ),
    (
        _AUTH,
        2.0,
        _PERMISSION,
        (
            "insufficient permission",
            "insufficient scope",
            "insufficient authentication scopes",
            "missing scope",
            "missing permissions",
            "missing access",
            "scope does not match",
            "resource not accessible",
            "requires merchant approval",
            "must have admin rights",
            "does not have permission",
            "do not have permission",
            "don't have permission",
            "not have access",
            "not have authorization",
            "not authorized to",
            "access denied",
            "access forbidden",
            "permission denied",
            "not permitted",
        ),
    ),
    (
        _NET,
        3.0,
        "",
        (
            "econnreset",
            "econnrefused",
            "epipe",
            "ehostunreach",
            "enetunreach",
            "econnaborted",
            "socket hang up",
            "und_err_",
            "connection reset",
            "connection refused",
            "connection aborted",
            "remotedisconnected",
            "remote end closed connection",
            "server disconnected",
            "broken pipe",
            "network is unreachable",
            "no route to host",
            "failed to establish a new connection",
            "cannot connect to host",
            "fetch failed",
            "network error",
            "connection closed",
            "err_stream_premature_close",
            "socket disconnected",
            "connecterror",
            "connectionerror",
            "newconnectionerror",
            "clientconnectorerror",
            "serverdisconnectederror",
            "protocolerror",
            "chunkedencodingerror",
            "connection was forcibly closed",
            "econnclosed",
            "connectionreseterror",
            "connectionrefusederror",
            "connectionabortederror",
            "brokenpipeerror",
            "remoteprotocolerror",
            "maxretryerror",
            "gaierror",
        ),
    ),
    (
        _NET,
        3.0,
        _DNS,
        (
            "enotfound",
            "eai_again",
            "getaddrinfo",
            "name or service not known",
            "nodename nor servname",
            "temporary failure in name resolution",
            "no such host",
            "could not resolve host",
            "name resolution",
            "host not found",
            "dns",
        ),
    ),
    (
        _NET,
        3.0,
        _TLS,
        (
            "certificate verify failed",
            "certificate_verify_failed",
            "cert_has_expired",
            "self signed certificate",
            "self-signed certificate",
            "unable to verify the first",
            "ssl:",
            "sslerror",
            "ssl handshake",
            "tls handshake",
            "secure tls connection",
            "wrong version number",
            "eof occurred in violation of protocol",
            "err_tls_",
            "ssl routines",
        ),
    ),
    (
        _NET,
        2.5,
        _TIMEOUT,
        (
            "etimedout",
            "esockettimedout",
            "timed out",
            "timeout",
            "deadline exceeded",
            "readtimeout",
            "connecttimeout",
            "timeouterror",
            "pooltimeout",
        ),
    ),
    (_NET, 1.5, "", ("max retries exceeded", "temporarily unavailable", "upstream", "overloaded")),
    (
        _DATA,
        3.0,
        _CARD,
        (
            "card was declined",
            "card declined",
            "insufficient funds",
            "card has expired",
            "security code is incorrect",
            "card number is incorrect",
            "card is not supported",
        ),
    ),
    (
        _DATA,
        1.5,
        _NOT_FOUND,
        (
            "has been deleted",
            "was deleted",
            "permanently deleted",
            "does not exist",
            "doesn't exist",
            "could not be found",
            "unknown channel",
            "unknown message",
            "unknown user",
            "unknown guild",
            "unknown webhook",
            "no such",
        ),
    ),
    (_DATA, 1.5, _CONFLICT, ("already exists", "duplicate", "member exists")),
    (_DATA, 1.5, _TOO_LARGE, ("too large", "too long", "storage quota", "size limit")),
    (
        _DATA,
        1.5,
        _VALIDATION,
        (
            "validation",
            "invalid parameter",
            "invalid value",
            "invalid input",
            "invalid request",
            "invalid json",
            "invalid form body",
            "invalid email",
            "invalid phone",
            "not a valid",
            "is not valid",
            "malformed",
            "parse error",
            "required field",
            "is required",
            "are required",
            "missing required",
            "must be provided",
            "must specify",
            "can't be blank",
            "cannot be blank",
            "must not be empty",
            "unprocessable",
            "compliance state",
            "verified sender",
            "unsubscribed",
            "cannot send messages to this user",
            "must be a",
            "must be an",
            "must be one of",
            "invalid format",
            "unsupported media type",
            "method not allowed",
            "schema",
        ),
    ),
)

# Reason phrases only repeat what a 4xx/5xx status already says; they count when it is absent.
_REASON_PHRASE_SPECS: tuple[_KeywordSpec, ...] = (
    (
        _NET,
        2.0,
        _SERVER,
        (
            "service unavailable",
            "bad gateway",
            "gateway timeout",
            "internal server error",
            "server error",
        ),
    ),
    (_AUTH, 1.5, _REFRESH, ("unauthorized",)),
    (_AUTH, 1.0, _PERMISSION, ("forbidden",)),
    (_DATA, 1.5, _NOT_FOUND, ("not found",)),
    (_DATA, 1.0, _VALIDATION, ("bad request", "unprocessable entity")),
    (_DATA, 1.0, _CONFLICT, ("conflict",)),
)


def _keyword_table(specs: Iterable[_KeywordSpec]) -> dict[str, _Rule]:
    table: dict[str, _Rule] = {}
    for category, weight, situation, words in specs:
        for word in words:
            table.setdefault(word, _Rule(category, weight, situation, word))
    return table


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


_KEYWORDS: Final = _keyword_table(_KEYWORD_SPECS)
_REASON_PHRASES: Final = _keyword_table(_REASON_PHRASE_SPECS)
# Snake-case codes also turn up in prose ("An API error occurred: token_revoked"); the same scan
# finds them, and they count as codes.
_PROSE_CODES: Final = frozenset(
    rule.label.lower() for rule in _CODES.values() if "_" in rule.label and " " not in rule.label
)
_KEYWORD_RE: Final = re.compile(
    r"(?<![a-z0-9_])" + _trie_pattern([*_KEYWORDS, *_REASON_PHRASES, *_PROSE_CODES])
)
_WORD_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


# --- patterns inside bodies and texts ---------------------------------------------------------

# Every short string value in a JSON body or Python repr is a candidate code: "error":
# "invalid_auth", 'error': 'ratelimited', "errorCode":"INVALID_SESSION_ID", "title": "Not Found".
# Keying on the colon alone keeps the scan fast; unknown values are simply not in the table.
_STRING_VALUE_RE: Final = re.compile(r""":\s*["']([a-z][a-z0-9_.\- ]{1,47})["']""")
# "code": 20003, "code":50001, "status": 401: provider codes or echoed HTTP statuses.
_NUMBER_VALUE_RE: Final = re.compile(r""":\s*["']?(\d{3,7})(?![\d.])""")
_NUMBER_KEY_RE: Final = re.compile(
    r"""["']?(code|error_code|errorcode|status|status_code|statuscode|subcode|error_subcode)"""
    r"""["']?\s*$"""
)
_STATUS_KEYS: Final = frozenset({"code", "status", "status_code", "statuscode"})
# application/x-www-form-urlencoded OAuth answers: error=invalid_grant&error_description=...
_FORM_CODE_RE: Final = re.compile(r"(?:^|[?&\s])error=([a-z][a-z0-9_]{1,47})")
_OK_FALSE_RE: Final = re.compile(r"""["']ok["']\s*:\s*false""")
_RETRY_AFTER_BODY_RE: Final = re.compile(r"""["']retry_after["']\s*:\s*["']?\d""")
# A status inside text: "status code 429" (axios), "429 Client Error" (requests), "HTTP error 429"
# (Teams webhooks). Digits are rare, so find them first and check the words around them.
_STATUS_DIGITS_RE: Final = re.compile(r"[1-5]\d\d")
_STATUS_BEFORE_RE: Final = re.compile(
    r"(?:status(?: code)?|http(?:/\d(?:\.\d)?| error| status)?|response code|returned)\s*:?\s*$"
)
_STATUS_AFTER_RE: Final = re.compile(r" (?:client|server) error")
_IDENTIFIER_RE: Final = re.compile(r"[a-z][a-z0-9_.\-]{1,63}")
_CODE_HEAD_RE: Final = re.compile(r"[a-z0-9_.\-]{2,64}")
_USED_OF_LIMIT_RE: Final = re.compile(r"(\d+)\s*/\s*(\d+)")
_STRUCTURED_REMAINING_ZERO_RE: Final = re.compile(r"(?:\bremaining=|;\s*r=)0(?![\d.])")


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
    410: (_DATA, 2.0, _NOT_FOUND),
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
    rule = _STATUS_RULES.get(status)
    if rule is not None:
        return rule
    if 400 <= status < 500:
        return (_DATA, 1.0, _VALIDATION)
    if status >= 500:
        return (_NET, 1.5, _SERVER)
    return None


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


def _is_zero(value: str) -> bool:
    try:
        return float(value.split(",", 1)[0]) <= 0
    except ValueError:
        return False


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
            if value is not None and _is_zero(value):
                found.append(_Evidence(_RATE, 2.5, _HEADER, f"header:{name}:0", _RETRY_AFTER))
                break
        structured = headers.get("ratelimit")
        if structured is not None and _STRUCTURED_REMAINING_ZERO_RE.search(structured[:256]):
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


def _code_candidates(text: str) -> list[str]:
    """The code as given plus its last dotted part and first word: 'httpx.ReadTimeout',
    'invalid_grant: Token has been expired or revoked.'"""
    if not text:
        return []
    candidates = [text]
    if "." in text:
        candidates.append(text.rsplit(".", 1)[1])
    head = _CODE_HEAD_RE.match(text)
    if head and head.group(0) != text:
        candidates.append(head.group(0))
        if "." in head.group(0):
            candidates.append(head.group(0).rsplit(".", 1)[1])
    return candidates


def _numeric_rule(number: int, provider: str) -> tuple[Category, str] | None:
    if provider == "twilio":
        return _TWILIO_CODES.get(number)
    if provider == "discord":
        return _DISCORD_CODES.get(number)
    return _ANY_PROVIDER_CODES.get(number)


def _provider(service: str, text: str) -> str:
    for name in ("twilio", "discord", "slack"):
        if name in service or name in text:
            return name
    return ""


def _code_evidence(
    value: str, prefix: str, provider: str, seen: set[str], found: list[_Evidence]
) -> None:
    key = _canonical(value)
    if not key or key in seen:
        return
    seen.add(key)
    if key.isdigit():
        if len(key) > 7:
            return
        numeric = _numeric_rule(int(key), provider)
        if numeric is not None:
            category, situation = numeric
            found.append(_Evidence(category, 3.0, _CODE, f"{prefix}:{key}", situation))
        return
    rule = _CODES.get(key) or _suffix_rule(key)
    if rule is not None:
        found.append(
            _Evidence(rule.category, rule.weight, _CODE, f"{prefix}:{rule.label}", rule.situation)
        )


# --- scoring ----------------------------------------------------------------------------------

# Equal scores go to the category whose recovery does the least harm when wrong.
_TIE_ORDER: Final = (_RATE, _AUTH, _NET, _DATA)
_SITUATION_ORDER: Final[dict[Category, tuple[str, ...]]] = {
    _AUTH: (_CLIENT, _REAUTH, _REFRESH, _PERMISSION),
    _RATE: (_QUOTA, _RETRY_AFTER),
    _NET: (_DNS, _TLS, _TIMEOUT, _SERVER),
    _DATA: (_CARD, _NOT_FOUND, _CONFLICT, _TOO_LARGE, _VALIDATION),
}

_ADVICE: Final[dict[tuple[Category, str], str]] = {
    (_AUTH, _REFRESH): (
        "Refresh the OAuth token and replay; if refresh fails with invalid_grant the user "
        "must re-authorize."
    ),
    (_AUTH, _REAUTH): (
        "The grant, token or account was revoked, expired or deactivated; a refresh will not "
        "help, so ask the user to re-authorize the integration."
    ),
    (_AUTH, _CLIENT): (
        "The OAuth client was rejected; check client_id, client_secret, grant type and scopes "
        "in oauth_config before retrying."
    ),
    (_AUTH, _PERMISSION): (
        "The credentials lack a permission or scope; grant it or re-authorize with the needed "
        "scopes, since a token refresh alone rarely helps."
    ),
    (_RATE, _RETRY_AFTER): (
        "Rate limited; wait for Retry-After or the limit reset before replaying, and lower the "
        "call rate to this service."
    ),
    (_RATE, _QUOTA): (
        "A quota or usage limit is exhausted; pause calls until it resets or ask the provider "
        "for a higher quota."
    ),
    (_AUTH, ""): (
        "Refresh the OAuth token and replay; if refresh fails with invalid_grant the user "
        "must re-authorize."
    ),
    (_RATE, ""): "Rate limited; back off exponentially before replaying.",
    (_NET, _DNS): (
        "The host name did not resolve; check the endpoint URL and DNS, then retry with backoff."
    ),
    (_NET, _TLS): (
        "The TLS handshake or certificate check failed; check certificates, proxy and clock, "
        "retrying alone may not help."
    ),
    (_NET, _TIMEOUT): (
        "The call timed out; retry with exponential backoff and jitter, and review the timeout "
        "if it keeps happening."
    ),
    (_NET, _SERVER): (
        "The provider answered with a server error; retry with exponential backoff and jitter."
    ),
    (_NET, ""): ("The connection failed in transit; retry with exponential backoff and jitter."),
    (_DATA, _CARD): (
        "The payment was declined; do not retry, the customer must fix or change the payment "
        "method."
    ),
    (_DATA, _NOT_FOUND): (
        "The referenced resource does not exist or is unavailable; fix the ID, channel or URL "
        "before replaying."
    ),
    (_DATA, _CONFLICT): (
        "The request conflicts with the resource's current state; reconcile it before replaying."
    ),
    (_DATA, _TOO_LARGE): "The request is too large; trim or split the payload before replaying.",
    (_DATA, ""): (
        "The provider rejected the request as invalid; fix the payload, automatic retries "
        "will not help."
    ),
    (_DATA, _VALIDATION): (
        "The provider rejected the request as invalid; fix the payload, automatic retries "
        "will not help."
    ),
    (Category.UNKNOWN, ""): (
        "Unrecognized failure; retry once, then review the sanitized error by hand."
    ),
}

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


def _signal(text: str) -> str:
    return text[:MAX_SIGNAL_LENGTH]


def _scanned_text(message: str) -> str:
    if len(message) <= MAX_SCANNED_HEAD + MAX_SCANNED_TAIL:
        return message.lower()
    return (message[:MAX_SCANNED_HEAD] + "\n" + message[-MAX_SCANNED_TAIL:]).lower()


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


def _body_evidence(
    text: str, provider: str, seen_codes: set[str], found: list[_Evidence], extra: list[str]
) -> int | None:
    """Codes inside a JSON, repr or form body; returns an HTTP status the body echoes."""
    echoed_status: int | None = None
    if ":" in text:
        for match in _STRING_VALUE_RE.finditer(text):
            _code_evidence(match.group(1), "body_code", provider, seen_codes, found)
        for match in _NUMBER_VALUE_RE.finditer(text):
            key = _NUMBER_KEY_RE.search(text, max(0, match.start() - 24), match.start())
            if key is None:
                continue
            number = int(match.group(1))
            if 100 <= number <= 599 and key.group(1) in _STATUS_KEYS:
                echoed_status = echoed_status or number
            else:
                _code_evidence(match.group(1), "body_code", provider, seen_codes, found)
        if ("ok" in text) and _OK_FALSE_RE.search(text):
            extra.append("provider:slack:ok_false" if provider == "slack" else "body:ok_false")
        if "retry_after" in text and _RETRY_AFTER_BODY_RE.search(text):
            found.append(_Evidence(_RATE, 2.0, _HEADER, "body:retry_after", _RETRY_AFTER))
    if "error=" in text:
        for match in _FORM_CODE_RE.finditer(text):
            _code_evidence(match.group(1), "body_code", provider, seen_codes, found)
    return echoed_status


def _keyword_evidence(
    text: str, status: int | None, provider: str, seen_codes: set[str], found: list[_Evidence]
) -> None:
    status_is_error = status is not None and status >= 400
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
        rule = _KEYWORDS.get(word)
        if rule is None:
            rule = _REASON_PHRASES.get(word)
            if rule is None or status_is_error:
                continue
        found.append(
            _Evidence(rule.category, rule.weight, _MESSAGE, f"message:{rule.label}", rule.situation)
        )


def analyze(failure: Failure) -> Analysis:
    """Weigh every clue in ``failure`` and return the most likely category with its evidence."""
    status = failure.http_status
    text = _scanned_text(failure.error_message or "")
    error_code = (failure.error_code or "")[:256]
    code_text = error_code.strip().lower()
    provider = _provider(failure.service_name[:128].lower(), text)
    found: list[_Evidence] = []
    extra_signals: list[str] = []

    if status is not None:
        rule = _status_rule(status)
        if rule is not None:
            category, weight, situation = rule
            found.append(_Evidence(category, weight, _STATUS, f"http_status:{status}", situation))

    seen_codes: set[str] = set()
    for candidate in _code_candidates(code_text):
        _code_evidence(candidate, "error_code", provider, seen_codes, found)
    stripped = text.strip()
    if _IDENTIFIER_RE.fullmatch(stripped):
        # Slack webhooks and some SDKs answer with the bare code as the whole body.
        _code_evidence(stripped, "body_code", provider, seen_codes, found)
    echoed_status = _body_evidence(text, provider, seen_codes, found, extra_signals)

    if status is None or status < 400:
        # Axios, requests and Teams webhooks put the real status in the text.
        embedded = echoed_status or _text_status(text) or _text_status(code_text)
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
    _keyword_evidence(text, status, provider, seen_codes, found)
    return _decide(found, extra_signals)


def _decide(found: list[_Evidence], extra_signals: list[str]) -> Analysis:
    per_source: dict[tuple[Category, int], float] = {}
    for evidence in found:
        key = (evidence.category, evidence.source)
        per_source[key] = per_source.get(key, 0.0) + evidence.weight
    scores = dict.fromkeys(_TIE_ORDER, 0.0)
    for (category, source), total in per_source.items():
        scores[category] += min(total, _SOURCE_CAP[source])

    permission_only = scores[_AUTH] > 0 and all(
        evidence.situation == _PERMISSION for evidence in found if evidence.category is _AUTH
    )
    if permission_only and scores[_RATE] >= 2.0:
        # Providers that say "rate limited" with a 403 (GitHub, Google, Salesforce).
        scores[_AUTH] *= 0.5

    ranked = sorted(_TIE_ORDER, key=lambda category: -scores[category])
    winner, runner_up = ranked[0], ranked[1]
    best = scores[winner]
    if best < _MIN_DECISIVE_SCORE:
        signals = [evidence.signal for evidence in found]
        confidence = 0.1 if not found else 0.2
        return _analysis(Category.UNKNOWN, confidence, signals + extra_signals, "")

    supporting = sorted(
        (evidence for evidence in found if evidence.category is winner),
        key=lambda evidence: evidence.source,
    )
    situations = {evidence.situation for evidence in supporting}
    situation = next((name for name in _SITUATION_ORDER[winner] if name in situations), "")
    confidence = _confidence(best, scores[runner_up], permission_only and winner is _AUTH)
    signals = [evidence.signal for evidence in supporting]
    return _analysis(winner, confidence, signals + extra_signals, situation)


def _analysis(
    category: Category, confidence: float, signals: list[str], situation: str
) -> Analysis:
    unique = tuple(dict.fromkeys(_signal(signal) for signal in signals))[:MAX_SIGNALS]
    advice = _ADVICE.get((category, situation)) or _ADVICE[(category, "")]
    return Analysis(category=category, confidence=confidence, signals=unique, advice=advice)
