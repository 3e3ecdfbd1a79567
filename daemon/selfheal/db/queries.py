"""Every SQL statement the daemon runs, named after what it does."""

from __future__ import annotations

from typing import Final, LiteralString

# The NOTIFY channels. The trigger's is written into sql/triggers by `selfheal migrate`;
# the others are passed to the statements that notify.
FAILURES_CHANNEL: Final = "selfheal_failures"  # the trigger: failures queued
RECORDED_CHANNEL: Final = "selfheal_recorded"  # a batch of records committed (its count)
OUTCOMES_CHANNEL: Final = "selfheal_outcomes"  # a batch of outcomes committed (its count)
MIGRATION_LOCK_KEY: Final = 7_415_112_031  # any constant; shared by every `selfheal migrate`

CREATE_MIGRATIONS_TABLE: LiteralString = """
CREATE TABLE IF NOT EXISTS selfheal_migrations (
    name text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
# Held for the transaction that applies one migration: a second `selfheal migrate` waits,
# then finds it applied. Transaction-scoped, so it cannot outlive a pooled transaction.
LOCK_MIGRATIONS: LiteralString = "SELECT pg_advisory_xact_lock(%(key)s)"
APPLIED_MIGRATIONS: LiteralString = "SELECT name FROM selfheal_migrations"
IS_MIGRATION_APPLIED: LiteralString = (
    "SELECT EXISTS (SELECT 1 FROM selfheal_migrations WHERE name = %(name)s)"
)
RECORD_MIGRATION: LiteralString = "INSERT INTO selfheal_migrations (name) VALUES (%(name)s)"

IS_LISTENING: LiteralString = (
    "SELECT EXISTS (SELECT 1 FROM pg_listening_channels() AS c WHERE c = %(channel)s)"
)

# Lease a batch from the inbox: its rows become invisible to every claimer until the
# lease runs out, so a killed daemon's batch comes back by itself. `attempts` counts
# claims: a row claimed again was in flight when something went wrong. The JSON columns
# an integration writes come as text: the daemon reads them itself, within bounds.
CLAIM_FAILURES: LiteralString = """
WITH claimed AS (
    UPDATE selfheal_inbox q
    SET available_at = now() + make_interval(secs => %(lease_seconds)s),
        attempts = q.attempts + 1
    WHERE q.event_id = ANY (ARRAY(
        SELECT event_id FROM selfheal_inbox
        WHERE available_at <= now()
        ORDER BY seq
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ))
    RETURNING q.event_id, q.attempts
)
SELECT c.event_id, e.service_name, e.http_status, e.error_code, e.error_message,
       e.response_headers::text AS response_headers, e.payload::text AS payload,
       e.user_id, e.endpoint, c.attempts,
       e.id IS NULL AS vanished, e.created_at AS failed_at
FROM claimed c
LEFT JOIN integration_events e ON e.id = c.event_id
"""

# A failure reported by POST alone (POST /integration-self-heal): written as an integration
# would, so the trigger queues it like any other; an id already there is left as it is.
REPORT_FAILURE: LiteralString = """
INSERT INTO integration_events (
    id, service_name, event_type, payload, user_id, status, error_code, error_message,
    http_status, endpoint, http_method, retry_count
)
VALUES (
    COALESCE(%(event_id)s, gen_random_uuid()), %(service_name)s, 'selfheal.intake',
    %(payload)s, %(user_id)s, 'error', %(error_code)s, %(error_message)s, %(http_status)s,
    %(endpoint)s, 'POST', %(retry_count)s
)
ON CONFLICT (id) DO NOTHING
"""

# Named events (`selfheal heal`, `selfheal scan`): no lease, the unique event_id decides.
CLAIM_EVENTS: LiteralString = """
SELECT e.id AS event_id, e.service_name, e.http_status, e.error_code, e.error_message,
       e.response_headers::text AS response_headers, e.payload::text AS payload,
       e.user_id, e.endpoint,
       COALESCE(q.attempts, 0) AS attempts, false AS vanished, e.created_at AS failed_at
FROM integration_events e
LEFT JOIN selfheal_inbox q ON q.event_id = e.id
WHERE e.id = ANY (%(event_ids)s::uuid[]) AND e.status <> 'success'
  AND NOT EXISTS (SELECT 1 FROM system_integrity_events s WHERE s.event_id = e.id)
"""

# Record and take out of the inbox in one statement, and count the records into their
# alert groups (in fingerprint order: every writer locks groups in one order). A group's
# first failure since it closed is its sample, and makes it due after the group wait; an
# announced group's new failures make its digest due. One NOTIFY per batch (delivered at
# commit) tells listeners how many were recorded.
RECORD_DIAGNOSES: LiteralString = """
WITH done AS (
    DELETE FROM selfheal_inbox WHERE event_id = ANY (%(done_ids)s::uuid[])
), r AS (
    SELECT * FROM unnest(
        %(event_ids)s::uuid[], %(service_names)s::text[], %(user_ids)s::uuid[],
        %(reasons)s::text[], %(categories)s::text[], %(actions)s::text[],
        %(signals)s::text[], %(next_retry_at)s::timestamptz[], %(alert_groups)s::text[],
        %(alert_codes)s::text[], %(second_opinions)s::boolean[]
    ) WITH ORDINALITY AS r(event_id, service_name, user_id, failure_reason, failure_category,
                           action_taken, analyzer_signals, next_retry_at, alert_group,
                           alert_code, second_opinion, ord)
), recorded AS (
    -- A record of an open episode the LLM already answered for gets the answer as it is
    -- written (a closed group's answer is the last episode's: the next starts without it).
    INSERT INTO system_integrity_events (
        event_id, service_name, user_id, failure_reason, failure_category, action_taken,
        analyzer_signals, llm_reasoning, status, next_retry_at, alert_group, created_at,
        updated_at
    )
    SELECT r.event_id, r.service_name, r.user_id, r.failure_reason, r.failure_category,
           r.action_taken,
           CASE WHEN a.llm_answer IS NULL OR a.sample_event_id IS NULL
                THEN r.analyzer_signals::jsonb
                ELSE r.analyzer_signals::jsonb || jsonb_build_object('llm', a.llm_answer) END,
           CASE WHEN a.sample_event_id IS NOT NULL THEN a.llm_reasoning END, 'pending',
           r.next_retry_at, r.alert_group, clock_timestamp(), clock_timestamp()
    FROM r LEFT JOIN selfheal_alert_groups a ON a.fingerprint = r.alert_group
    ORDER BY r.ord
    ON CONFLICT (event_id) DO NOTHING
    RETURNING id, event_id
), grouped AS (
    INSERT INTO selfheal_alert_groups AS g (
        fingerprint, service_name, category, error_code, failures, sample_event_id,
        sample_error, sample_plan, sample_at, last_failure_at, next_check_at, llm_wanted_at
    )
    SELECT DISTINCT ON (r.alert_group)
           r.alert_group, r.service_name, r.failure_category, r.alert_code,
           count(*) OVER (PARTITION BY r.alert_group), r.event_id, r.failure_reason,
           r.action_taken, now(), now(), now() + make_interval(secs => %(group_wait)s),
           CASE WHEN bool_or(r.second_opinion) OVER (PARTITION BY r.alert_group) THEN now() END
    FROM r JOIN recorded USING (event_id)
    ORDER BY r.alert_group, r.ord
    ON CONFLICT (fingerprint) DO UPDATE
    SET failures = g.failures + EXCLUDED.failures,
        -- One question per episode (a closed group's next failure starts one); one that
        -- got no answer is asked again an hour later, when the group fails again.
        llm_wanted_at = CASE
            WHEN g.sample_event_id IS NULL THEN EXCLUDED.llm_wanted_at
            WHEN g.llm_wanted_at IS NOT NULL OR EXCLUDED.llm_wanted_at IS NULL
                 OR g.llm_answer IS NOT NULL THEN g.llm_wanted_at
            WHEN g.llm_asked_at IS NULL OR g.llm_asked_at < now() - interval '1 hour'
                THEN EXCLUDED.llm_wanted_at END,
        llm_asked_at = CASE WHEN g.sample_event_id IS NOT NULL THEN g.llm_asked_at END,
        llm_answered_at = CASE WHEN g.sample_event_id IS NOT NULL THEN g.llm_answered_at END,
        llm_answer = CASE WHEN g.sample_event_id IS NOT NULL THEN g.llm_answer END,
        llm_reasoning = CASE WHEN g.sample_event_id IS NOT NULL THEN g.llm_reasoning END,
        llm_stop = CASE WHEN g.sample_event_id IS NOT NULL THEN g.llm_stop END,
        sample_event_id = COALESCE(g.sample_event_id, EXCLUDED.sample_event_id),
        sample_error = CASE WHEN g.sample_event_id IS NULL THEN EXCLUDED.sample_error
                            ELSE g.sample_error END,
        sample_plan = CASE WHEN g.sample_event_id IS NULL THEN EXCLUDED.sample_plan
                           ELSE g.sample_plan END,
        sample_at = CASE WHEN g.sample_event_id IS NULL THEN EXCLUDED.sample_at
                         ELSE g.sample_at END,
        last_failure_at = EXCLUDED.last_failure_at,
        next_check_at = LEAST(g.next_check_at, CASE
            WHEN g.closed_at IS NULL AND g.alerted_at IS NOT NULL
                THEN g.reported_at + make_interval(secs => %(group_interval)s)
            ELSE EXCLUDED.next_check_at END)
), notified AS (
    SELECT pg_notify(%(channel)s, count(*)::text) FROM recorded
)
SELECT recorded.id, recorded.event_id FROM recorded CROSS JOIN notified
"""

# A failure whose processing failed: try again later, or park it for good.
DEFER_FAILURE: LiteralString = """
INSERT INTO selfheal_inbox (event_id, attempts, available_at, last_error)
VALUES (%(event_id)s, %(attempts)s, now() + make_interval(secs => %(delay)s), %(error)s)
ON CONFLICT (event_id) DO UPDATE
SET attempts = EXCLUDED.attempts, available_at = EXCLUDED.available_at,
    last_error = EXCLUDED.last_error
"""
# On shutdown: leased rows not recorded go back to the inbox at once.
RELEASE_FAILURES: LiteralString = """
UPDATE selfheal_inbox SET available_at = now(), attempts = greatest(attempts - 1, 0)
WHERE event_id = ANY (%(event_ids)s::uuid[])
"""
PARK_FAILURE: LiteralString = """
WITH gone AS (DELETE FROM selfheal_inbox WHERE event_id = %(event_id)s)
INSERT INTO system_integrity_events (
    event_id, service_name, failure_reason, failure_category, action_taken,
    analyzer_signals, status
)
SELECT e.id, e.service_name, %(reason)s, 'unknown', 'parked', %(signals)s::jsonb, 'pending'
FROM integration_events e WHERE e.id = %(event_id)s
ON CONFLICT (event_id) DO NOTHING
"""

# The backlog catch-up: failures with neither a record nor an inbox row, in
# keyset-paged chunks so that no transaction is long and no outage is too long.
ENQUEUE_BACKLOG: LiteralString = """
WITH chunk AS (
    SELECT e.id, e.created_at
    FROM integration_events e
    WHERE e.status = 'error'
      AND (e.created_at, e.id)
          > (COALESCE(%(after_created_at)s::timestamptz, '-infinity'), %(after_id)s::uuid)
    ORDER BY e.created_at, e.id
    LIMIT %(limit)s
), queued AS (
    INSERT INTO selfheal_inbox (event_id)
    SELECT c.id FROM chunk c
    JOIN integration_events e ON e.id = c.id
    WHERE e.selfheal_attempt IS NULL
      AND NOT EXISTS (SELECT 1 FROM system_integrity_events s WHERE s.event_id = c.id)
    ON CONFLICT (event_id) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM chunk), (SELECT count(*) FROM queued),
       (SELECT created_at FROM chunk ORDER BY created_at DESC, id DESC LIMIT 1),
       (SELECT id FROM chunk ORDER BY created_at DESC, id DESC LIMIT 1)
"""

UNRECORDED_FAILURES: LiteralString = """
SELECT e.id FROM integration_events e
WHERE e.status = 'error' AND e.selfheal_attempt IS NULL
  AND e.created_at >= now() - make_interval(secs => %(window_minutes)s * 60)
  AND NOT EXISTS (SELECT 1 FROM system_integrity_events s WHERE s.event_id = e.id)
ORDER BY e.created_at, e.id
LIMIT %(limit)s
"""

RECORD_FOR_EVENT: LiteralString = """
SELECT id AS recovery_id, failure_category AS category, action_taken, status, next_retry_at,
       status = 'pending' AND lease_expires_at > now() AS in_recovery
FROM system_integrity_events WHERE event_id = %(event_id)s
"""
EVENT_EXISTS: LiteralString = (
    "SELECT EXISTS (SELECT 1 FROM integration_events WHERE id = %(event_id)s)"
)

# `selfheal status`: the KPIs (views of sql/migrations/0010_kpis.sql, each through an index).
# What stands now (the inbox, due records, the last hour)...
STATUS_COUNTS: LiteralString = """
SELECT (SELECT count(*) FROM selfheal_inbox) AS inbox,
       (SELECT enqueued_at FROM selfheal_inbox ORDER BY seq LIMIT 1) AS oldest_inbox,
       (SELECT count(*) FROM system_integrity_events
        WHERE status = 'pending' AND next_retry_at <= now()) AS due,
       (SELECT count(*) FROM system_integrity_events
        WHERE created_at >= now() - interval '1 hour') AS last_hour
"""
# ... and the last 24 hours, which read every record of the day.
LAST_DAY: LiteralString = "SELECT * FROM selfheal_kpi_last_day"
STATUS_BY_CATEGORY: LiteralString = "SELECT category, status, failures FROM selfheal_kpi_categories"
STATUS_PENDING: LiteralString = "SELECT category, pending, oldest FROM selfheal_kpi_pending"
DISABLED_TARGETS: LiteralString = "SELECT * FROM selfheal_kpi_disabled ORDER BY 1, 2"
TOP_FAILING_SERVICES: LiteralString = "SELECT * FROM selfheal_kpi_top_failing_services"

# Circuits open now: what is down, since when, how many failures wait behind it.
OPEN_CIRCUITS: LiteralString = """
SELECT m.service_name, NULL::uuid AS user_id, m.circuit_opened_at AS opened_at,
       m.circuit_failed_probes AS failed_probes, m.circuit_next_probe_at AS next_probe_at,
       (SELECT count(*) FROM system_integrity_events s
        WHERE s.service_name = m.service_name AND s.held_by_circuit
          AND s.status = 'pending') AS failures_waiting
FROM integrations_master m WHERE m.circuit_opened_at IS NOT NULL
UNION ALL
SELECT m.service_name, u.user_id, u.circuit_opened_at, u.circuit_failed_probes,
       u.circuit_next_probe_at,
       (SELECT count(*) FROM system_integrity_events s
        WHERE s.service_name = m.service_name AND s.user_id = u.user_id
          AND s.held_by_circuit AND s.status = 'pending')
FROM user_integrations u JOIN integrations_master m ON m.id = u.integration_id
WHERE u.circuit_opened_at IS NOT NULL
ORDER BY 1, 2
"""

# `selfheal enable`: counters reset, circuit closed, and the service's failures that
# were disabled or waiting behind its circuit are due again, as first visits.
ENABLE_SERVICE: LiteralString = """
WITH enabled AS (
    UPDATE integrations_master
    SET auto_recovery_enabled = true, recovery_fail_count = 0, counters_reset_at = now(),
        disabled_reason = NULL, disabled_at = NULL, circuit_opened_at = NULL,
        circuit_failed_probes = 0, circuit_next_probe_at = NULL, circuit_probe_owner = NULL,
        circuit_probe_until = NULL, circuit_counted_at = NULL
    WHERE service_name = %(service_name)s
    RETURNING id
), forgotten AS (
    DELETE FROM selfheal_unhealed x USING enabled e WHERE x.service_id = e.id
), retried AS (
    UPDATE system_integrity_events s
    SET status = 'pending', held_by_circuit = false, next_retry_at = now(), counted = false,
        deferrals = 0, updated_at = now()
    FROM enabled
    WHERE s.service_name = %(service_name)s
      AND (s.status = 'disabled' OR (s.status = 'pending' AND s.held_by_circuit))
), recorded AS (
    INSERT INTO selfheal_operator_actions (action, via, client, service_name, result)
    SELECT 'enable', %(via)s, %(client)s, %(service_name)s,
           CASE WHEN EXISTS (SELECT 1 FROM enabled) THEN 'enabled' ELSE 'not_found' END
)
SELECT id FROM enabled
"""
ENABLE_USER_CONNECTION: LiteralString = """
WITH enabled AS (
    UPDATE user_integrations u
    SET auto_recovery_enabled = true, consecutive_failures = 0,
        disabled_reason = NULL, disabled_at = NULL, circuit_opened_at = NULL,
        circuit_failed_probes = 0, circuit_next_probe_at = NULL, circuit_probe_owner = NULL,
        circuit_probe_until = NULL
    FROM integrations_master m
    WHERE m.id = u.integration_id AND m.service_name = %(service_name)s
      AND u.user_id = %(user_id)s
    RETURNING u.id
), retried AS (
    UPDATE system_integrity_events s
    SET status = 'pending', held_by_circuit = false, next_retry_at = now(), counted = false,
        deferrals = 0, updated_at = now()
    FROM enabled
    WHERE s.service_name = %(service_name)s AND s.user_id = %(user_id)s
      AND s.failure_category = 'auth'
      AND (s.status = 'disabled' OR (s.status = 'pending' AND s.held_by_circuit))
), recorded AS (
    INSERT INTO selfheal_operator_actions (action, via, client, service_name, user_id, result)
    SELECT 'enable', %(via)s, %(client)s, %(service_name)s, %(user_id)s,
           CASE WHEN EXISTS (SELECT 1 FROM enabled) THEN 'enabled' ELSE 'not_found' END
)
SELECT id FROM enabled
"""

INJECT_FAILURE: LiteralString = """
INSERT INTO integration_events (
    service_name, event_type, payload, user_id, status, error_code, error_message,
    http_status, endpoint, http_method, response_headers
)
SELECT %(service_name)s, 'selfheal.inject', %(payload)s, %(user_id)s, 'error', %(error_code)s,
       %(error_message)s, %(http_status)s, %(endpoint)s, 'POST', %(response_headers)s
FROM generate_series(1, %(count)s)
RETURNING id
"""

# --- recovery ---------------------------------------------------------------------------

# Lease due records (not in their service's rate-limit window, not waiting behind a
# circuit) with everything recovery needs, as the columns of models.Job: the tail below is
# shared by CLAIM_DUE and CLAIM_NAMED, after their own `due` CTE. `threshold_count` counts
# the service's counted failures of this category (within the window for network),
# capped: the number core/thresholds.py decides on.
_LEASED_JOBS: LiteralString = """
), claimed AS (
    UPDATE system_integrity_events s
    SET lease_owner = %(owner)s,
        lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
    FROM due WHERE s.id = due.id
    RETURNING s.id, s.event_id, s.service_name, s.failure_category, s.attempts, s.deferrals,
              s.created_at, s.counted, s.user_id, s.alert_group
)
SELECT c.id AS record_id, c.event_id, c.service_name, c.failure_category AS category,
       c.attempts, c.deferrals, e.endpoint, e.http_method,
       e.payload::text AS payload, e.response_headers::text AS response_headers,
       COALESCE(e.created_at, c.created_at) AS failed_at,
       m.id AS service_id, COALESCE(m.auto_recovery_enabled, true) AS service_enabled,
       m.oauth_config, m.allowed_hosts,
       u.id AS user_connection_id,
       COALESCE(u.auto_recovery_enabled, true) AS user_connection_enabled,
       u.access_token, u.refresh_token,
       COALESCE(u.consecutive_failures, 0) AS user_connection_failures,
       (SELECT count(*) FROM (
            SELECT 1 FROM selfheal_unhealed x
            WHERE x.service_id = m.id AND x.category = c.failure_category
              AND (c.failure_category <> 'network'
                   OR x.at > now() - make_interval(secs => %(window_seconds)s))
            LIMIT %(count_cap)s) AS counted) AS threshold_count,
       e.id IS NULL AS event_deleted,
       COALESCE(m.circuit_opened_at IS NOT NULL, false) AS service_circuit_open,
       COALESCE(m.circuit_failed_probes, 0) AS service_failed_probes,
       COALESCE(u.circuit_opened_at IS NOT NULL, false) AS user_connection_circuit_open,
       COALESCE(u.circuit_failed_probes, 0) AS user_connection_failed_probes,
       COALESCE(m.circuit_next_probe_at, u.circuit_next_probe_at) AS circuit_next_probe_at,
       m.circuit_counted_at,
       c.id = ANY (%(probe_ids)s::uuid[]) AS probe,
       c.counted AS counted_before, c.user_id, c.alert_group, a.llm_stop AS retry_stopped
FROM claimed c
LEFT JOIN selfheal_alert_groups a ON a.fingerprint = c.alert_group
LEFT JOIN integration_events e ON e.id = c.event_id
LEFT JOIN integrations_master m ON m.service_name = c.service_name
LEFT JOIN LATERAL (
    SELECT * FROM user_integrations u
    WHERE u.user_id = e.user_id AND u.integration_id = m.id
    ORDER BY u.id LIMIT 1
) u ON true
"""

CLAIM_DUE: LiteralString = (
    """
WITH due AS (
    SELECT s.id
    FROM system_integrity_events s
    LEFT JOIN integrations_master m ON m.service_name = s.service_name
    WHERE s.status = 'pending' AND s.next_retry_at <= now() AND NOT s.held_by_circuit
      AND (s.lease_expires_at IS NULL OR s.lease_expires_at < now())
      AND (m.rate_limited_until IS NULL OR m.rate_limited_until <= now())
    ORDER BY s.next_retry_at
    LIMIT %(limit)s
    FOR UPDATE OF s SKIP LOCKED
"""
    + _LEASED_JOBS
)

# The same for named records (`selfheal heal`, `selfheal scan`, and circuits' probes,
# which are leased although their circuit holds them).
CLAIM_NAMED: LiteralString = (
    """
WITH due AS (
    SELECT s.id
    FROM system_integrity_events s
    LEFT JOIN integrations_master m ON m.service_name = s.service_name
    WHERE s.id = ANY (%(record_ids)s::uuid[]) AND s.status = 'pending'
      AND ((s.next_retry_at <= now() AND NOT s.held_by_circuit)
           OR s.id = ANY (%(probe_ids)s::uuid[]))
      AND (s.lease_expires_at IS NULL OR s.lease_expires_at < now())
      AND (m.rate_limited_until IS NULL OR m.rate_limited_until <= now())
    ORDER BY s.next_retry_at, s.created_at
    LIMIT %(limit)s
    FOR UPDATE OF s SKIP LOCKED
"""
    + _LEASED_JOBS
)

# Circuits due a probe: this daemon takes the probe of each (a lease on the service or
# user connection row, so that no two daemons probe one at once) and the oldest failure
# waiting behind it, which the claim then leases as the probe.
CLAIM_PROBES: LiteralString = """
WITH due_services AS (
    SELECT m.id FROM integrations_master m
    WHERE m.circuit_opened_at IS NOT NULL AND m.circuit_next_probe_at <= now()
      AND (m.circuit_probe_until IS NULL OR m.circuit_probe_until < now())
      AND m.auto_recovery_enabled
      AND EXISTS (SELECT 1 FROM system_integrity_events s
                  WHERE s.service_name = m.service_name
                    AND s.held_by_circuit AND s.status = 'pending'
                    AND (s.lease_expires_at IS NULL OR s.lease_expires_at < now()))
    ORDER BY m.circuit_next_probe_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), services AS (
    UPDATE integrations_master m
    SET circuit_probe_owner = %(owner)s,
        circuit_probe_until = now() + make_interval(secs => %(lease_seconds)s)
    FROM due_services d WHERE m.id = d.id
    RETURNING m.service_name, NULL::uuid AS user_id
), due_users AS (
    SELECT u.id FROM user_integrations u
    JOIN integrations_master m ON m.id = u.integration_id
    WHERE m.circuit_opened_at IS NULL
      AND u.circuit_opened_at IS NOT NULL AND u.circuit_next_probe_at <= now()
      AND (u.circuit_probe_until IS NULL OR u.circuit_probe_until < now())
      AND u.auto_recovery_enabled AND m.auto_recovery_enabled
      AND EXISTS (SELECT 1 FROM system_integrity_events s
                  WHERE s.service_name = m.service_name AND s.user_id = u.user_id
                    AND s.held_by_circuit AND s.status = 'pending'
                    AND (s.lease_expires_at IS NULL OR s.lease_expires_at < now()))
    ORDER BY u.circuit_next_probe_at
    LIMIT %(limit)s
    FOR UPDATE OF u SKIP LOCKED
), users AS (
    UPDATE user_integrations u
    SET circuit_probe_owner = %(owner)s,
        circuit_probe_until = now() + make_interval(secs => %(lease_seconds)s)
    FROM due_users d, integrations_master m
    WHERE u.id = d.id AND m.id = u.integration_id
    RETURNING m.service_name, u.user_id
)
SELECT p.service_name, p.user_id, w.id AS record_id, w.waiting
FROM (SELECT * FROM services UNION ALL SELECT * FROM users) AS p
CROSS JOIN LATERAL (
    -- The probe is the failure that waited longest since it was last tried, so that one
    -- failure that cannot succeed does not stand for the whole circuit.
    SELECT (SELECT s.id FROM system_integrity_events s
            WHERE s.service_name = p.service_name
              AND (p.user_id IS NULL OR s.user_id = p.user_id)
              AND s.held_by_circuit AND s.status = 'pending'
              AND (s.lease_expires_at IS NULL OR s.lease_expires_at < now())
            ORDER BY s.next_retry_at NULLS FIRST, s.created_at LIMIT 1) AS id,
           (SELECT count(*) FROM system_integrity_events s
            WHERE s.service_name = p.service_name
              AND (p.user_id IS NULL OR s.user_id = p.user_id)
              AND s.held_by_circuit AND s.status = 'pending') AS waiting
) AS w
"""

# A safety net: failures held although no circuit holds them any more (it closed while
# they were being recorded as waiting) are due again.
RELEASE_STRANDED: LiteralString = """
UPDATE system_integrity_events s SET held_by_circuit = false, next_retry_at = now()
FROM integrations_master m
WHERE s.held_by_circuit AND s.status = 'pending'
  AND (s.lease_expires_at IS NULL OR s.lease_expires_at < now())
  AND m.service_name = s.service_name AND m.circuit_opened_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM user_integrations u
                  WHERE u.integration_id = m.id AND u.user_id = s.user_id
                    AND u.circuit_opened_at IS NOT NULL AND s.failure_category = 'auth')
"""

# Successes the integrations wrote (queued by the trigger) break the runs of failures
# counted before them: consecutive thresholds start again.
APPLY_SUCCESSES: LiteralString = """
WITH seen AS (
    DELETE FROM selfheal_successes RETURNING service_name, user_id, seen_at
), services AS (
    SELECT m.id, max(s.seen_at) AS seen_at
    FROM seen s JOIN integrations_master m ON m.service_name = s.service_name
    GROUP BY m.id
), forgotten AS (
    DELETE FROM selfheal_unhealed x USING services v
    WHERE x.service_id = v.id AND x.at <= v.seen_at
), counters AS (
    UPDATE integrations_master m SET recovery_fail_count = 0, counters_reset_at = v.seen_at
    FROM services v WHERE m.id = v.id AND m.recovery_fail_count > 0
), users AS (
    UPDATE user_integrations u SET consecutive_failures = 0
    FROM seen s JOIN integrations_master m ON m.service_name = s.service_name
    WHERE s.user_id IS NOT NULL AND u.integration_id = m.id AND u.user_id = s.user_id
      AND u.consecutive_failures > 0
)
SELECT count(*) FROM seen
"""

# What the database says is down or disabled, for the recoveries in flight (partial
# indexes keep it cheap on a big user_integrations).
TARGET_STATES: LiteralString = """
SELECT 'service' AS scope, id, service_name AS name, circuit_opened_at IS NOT NULL AS open,
       NOT auto_recovery_enabled AS disabled
FROM integrations_master
WHERE circuit_opened_at IS NOT NULL OR NOT auto_recovery_enabled
UNION ALL
SELECT 'user_connection', id, NULL, circuit_opened_at IS NOT NULL, NOT auto_recovery_enabled
FROM user_integrations
WHERE circuit_opened_at IS NOT NULL OR NOT auto_recovery_enabled
"""

# How many failures wait behind each named service's circuit (for the log).
CIRCUIT_WAITING: LiteralString = """
SELECT m.id, m.service_name, count(s.id) AS waiting
FROM integrations_master m
LEFT JOIN system_integrity_events s
       ON s.service_name = m.service_name AND s.held_by_circuit AND s.status = 'pending'
WHERE m.id = ANY (%(service_ids)s::uuid[])
GROUP BY m.id, m.service_name
"""

# A service seen failing for the first time gets its row, so its counters and its
# disabled state have somewhere to live; the ids of the named services, new or not (one
# another daemon registered a moment ago included).
REGISTER_SERVICES: LiteralString = """
WITH inserted AS (
    INSERT INTO integrations_master (service_name)
    SELECT DISTINCT name FROM unnest(%(names)s::text[]) AS name
    ON CONFLICT DO NOTHING
    RETURNING id, service_name
)
SELECT id, service_name FROM inserted
UNION ALL
SELECT id, service_name FROM integrations_master
WHERE service_name = ANY (%(names)s::text[])
"""

# When the next record or probe comes due (rate-limit windows and leases included), in
# seconds from now; NULL when nothing is scheduled.
SECONDS_UNTIL_DUE: LiteralString = """
SELECT GREATEST(0, EXTRACT(EPOCH FROM LEAST(
    (SELECT min(GREATEST(s.next_retry_at, COALESCE(m.rate_limited_until, '-infinity'),
                         COALESCE(s.lease_expires_at, '-infinity')))
     FROM system_integrity_events s
     LEFT JOIN integrations_master m ON m.service_name = s.service_name
     WHERE s.status = 'pending' AND s.next_retry_at IS NOT NULL AND NOT s.held_by_circuit),
    (SELECT min(GREATEST(circuit_next_probe_at, COALESCE(circuit_probe_until, '-infinity')))
     FROM integrations_master WHERE circuit_opened_at IS NOT NULL),
    (SELECT min(GREATEST(circuit_next_probe_at, COALESCE(circuit_probe_until, '-infinity')))
     FROM user_integrations WHERE circuit_opened_at IS NOT NULL)
) - now()))::float8
"""

# Outcomes of a batch of recoveries, with their effects on events, services and user
# connections, in one statement; one NOTIFY per batch names the count.
RECORD_OUTCOMES: LiteralString = """
WITH o AS (
    SELECT * FROM unnest(
        %(record_ids)s::uuid[], %(event_ids)s::uuid[], %(statuses)s::text[],
        %(actions)s::text[], %(attempts)s::int[], %(deferrals)s::int[],
        %(next_retry_at)s::timestamptz[], %(reasons)s::text[], %(held)s::bool[],
        %(counted)s::bool[]
    ) AS o(record_id, event_id, status, action, attempts, deferrals, next_retry_at, reason,
           held, counted)
), records AS (
    UPDATE system_integrity_events s
    SET status = o.status, action_taken = o.action, attempts = s.attempts + o.attempts,
        deferrals = o.deferrals, next_retry_at = o.next_retry_at,
        failure_reason = COALESCE(o.reason, s.failure_reason),
        resolved_at = CASE WHEN o.status = 'resolved' THEN now() END,
        held_by_circuit = o.held, counted = s.counted OR o.counted,
        updated_at = now(), lease_owner = NULL, lease_expires_at = NULL
    FROM o
    WHERE s.id = o.record_id AND s.lease_owner = %(owner)s
    RETURNING s.id
), held AS (
    -- Effects count only when every record of the batch was still ours: a writer whose
    -- leases ran out, or that retries a write that went through, changes no counter.
    SELECT (SELECT count(*) FROM records) = cardinality(%(record_ids)s::uuid[]) AS ok
), events AS (
    UPDATE integration_events e
    SET retry_count = e.retry_count + o.attempts,
        status = CASE WHEN o.status = 'resolved' THEN 'success' ELSE e.status END
    FROM o, held
    WHERE e.id = o.event_id AND o.attempts > 0 AND held.ok
), sv AS (
    SELECT * FROM unnest(
        %(service_ids)s::uuid[], %(service_reset)s::bool[], %(service_failed)s::int[],
        %(service_disable)s::text[], %(service_window)s::timestamptz[],
        %(service_circuit)s::text[], %(service_next_probe)s::timestamptz[],
        %(service_probe_counted)s::bool[]
    ) AS v(id, reset, failed, disable_reason, rate_limited_until, circuit, next_probe_at,
           probe_counted)
), services AS (
    UPDATE integrations_master m
    SET last_recovery_at = now(),
        recovery_fail_count = CASE WHEN v.reset THEN v.failed
                                   ELSE m.recovery_fail_count + v.failed END,
        counters_reset_at = CASE WHEN v.reset THEN now() ELSE m.counters_reset_at END,
        auto_recovery_enabled = m.auto_recovery_enabled AND v.disable_reason IS NULL,
        disabled_reason = COALESCE(v.disable_reason, m.disabled_reason),
        disabled_at = CASE WHEN v.disable_reason IS NOT NULL THEN now() ELSE m.disabled_at END,
        rate_limited_until = GREATEST(m.rate_limited_until, v.rate_limited_until),
        -- A circuit that another daemon opened already keeps its own probe schedule.
        (circuit_opened_at, circuit_failed_probes, circuit_next_probe_at, circuit_probe_owner,
         circuit_probe_until) = (
            SELECT * FROM selfheal_circuit_after(
                v.circuit, m.circuit_opened_at, m.circuit_failed_probes,
                m.circuit_next_probe_at, m.circuit_probe_owner, m.circuit_probe_until,
                v.next_probe_at)),
        circuit_counted_at = CASE
            WHEN v.probe_counted THEN now()
            WHEN v.circuit = 'close' OR (v.circuit = 'open' AND m.circuit_opened_at IS NULL)
                THEN NULL
            ELSE m.circuit_counted_at END
    FROM sv AS v, held
    WHERE m.id = v.id AND held.ok
), forgotten AS (
    -- A success of the service: what the thresholds counted starts again.
    DELETE FROM selfheal_unhealed x USING sv AS v, held
    WHERE x.service_id = v.id AND v.reset AND held.ok
), counted AS (
    INSERT INTO selfheal_unhealed (service_id, category)
    SELECT c.service_id, c.category
    FROM unnest(%(counted_service_ids)s::uuid[], %(counted_categories)s::text[])
         AS c(service_id, category), held
    WHERE held.ok
), released AS (
    -- A closed circuit lets its waiting failures go, oldest first, at once; and the
    -- network failures that spent their attempts before it opened (their deferred retry
    -- would come later): the service is back.
    UPDATE system_integrity_events s SET held_by_circuit = false, next_retry_at = now()
    FROM integrations_master m, sv AS v, held
    WHERE v.circuit = 'close' AND m.id = v.id AND held.ok AND m.circuit_opened_at IS NOT NULL
      AND s.service_name = m.service_name AND s.status = 'pending'
      AND (s.held_by_circuit
           OR (s.failure_category IN ('network', 'unknown') AND s.next_retry_at > now()))
      AND s.id <> ALL (%(record_ids)s::uuid[])
    RETURNING s.service_name
), uv AS (
    SELECT * FROM unnest(
        %(user_connection_ids)s::uuid[], %(user_connection_reset)s::bool[],
        %(user_connection_failed)s::int[], %(user_connection_disable)s::text[],
        %(user_connection_errored)s::bool[], %(user_connection_circuit)s::text[],
        %(user_connection_next_probe)s::timestamptz[]
    ) AS v(id, reset, failed, disable_reason, errored, circuit, next_probe_at)
), user_connections AS (
    UPDATE user_integrations u
    SET consecutive_failures = CASE WHEN v.reset THEN v.failed
                                    ELSE u.consecutive_failures + v.failed END,
        last_error_at = CASE WHEN v.errored THEN now() ELSE u.last_error_at END,
        auto_recovery_enabled = u.auto_recovery_enabled AND v.disable_reason IS NULL,
        disabled_reason = COALESCE(v.disable_reason, u.disabled_reason),
        disabled_at = CASE WHEN v.disable_reason IS NOT NULL THEN now() ELSE u.disabled_at END,
        (circuit_opened_at, circuit_failed_probes, circuit_next_probe_at, circuit_probe_owner,
         circuit_probe_until) = (
            SELECT * FROM selfheal_circuit_after(
                v.circuit, u.circuit_opened_at, u.circuit_failed_probes,
                u.circuit_next_probe_at, u.circuit_probe_owner, u.circuit_probe_until,
                v.next_probe_at))
    FROM uv AS v, held
    WHERE u.id = v.id AND held.ok
), released_users AS (
    UPDATE system_integrity_events s SET held_by_circuit = false, next_retry_at = now()
    FROM user_integrations u, integrations_master m, uv AS v, held
    WHERE v.circuit = 'close' AND u.id = v.id AND m.id = u.integration_id AND held.ok
      AND s.service_name = m.service_name AND s.user_id = u.user_id
      AND s.held_by_circuit AND s.status = 'pending'
      AND s.id <> ALL (%(record_ids)s::uuid[])
), alerting AS (
    -- What the batch tells alert groups (core/alerts.touches): an announced group with a
    -- healed failure is looked at again now (has all of it healed?), and the notices
    -- (attempts, disables) wait in their group for the notifier.
    INSERT INTO selfheal_alert_groups AS g (
        fingerprint, service_name, category, error_code, resolution, notices, next_check_at
    )
    SELECT t.fingerprint, t.service_name, t.category, 'none', t.resolution,
           t.notices::jsonb, now()
    FROM unnest(
        %(touch_groups)s::text[], %(touch_services)s::text[], %(touch_categories)s::text[],
        %(touch_resolutions)s::text[], %(touch_notices)s::text[]
    ) AS t(fingerprint, service_name, category, resolution, notices), held
    WHERE held.ok
    ORDER BY t.fingerprint
    ON CONFLICT (fingerprint) DO UPDATE
    SET resolution = COALESCE(EXCLUDED.resolution, g.resolution),
        notices = g.notices || EXCLUDED.notices,
        next_check_at = LEAST(g.next_check_at, now())
    WHERE EXCLUDED.notices <> '{}'::jsonb
       OR (g.alerted_at IS NOT NULL AND g.closed_at IS NULL
           AND (EXCLUDED.resolution IS NOT NULL OR g.next_check_at IS NULL
                OR g.next_check_at > now()))
), notified AS (
    SELECT pg_notify(%(channel)s, count(*)::text) FROM records
)
SELECT (SELECT count(*) FROM records CROSS JOIN notified) AS recorded,
       (SELECT COALESCE(json_object_agg(service_name, n), '{}'::json)
        FROM (SELECT service_name, count(*) AS n FROM released GROUP BY 1) AS r) AS released
"""

# Token refresh, one at a time per user connection across daemons: a lease on the row,
# taken when free or run out, released by its holder.
CLAIM_REFRESH: LiteralString = """
WITH claimed AS (
    UPDATE user_integrations
    SET refresh_claimed_by = %(holder)s,
        refresh_claimed_until = now() + make_interval(secs => %(lease_seconds)s)
    WHERE id = %(id)s AND (refresh_claimed_until IS NULL OR refresh_claimed_until < now())
    RETURNING id
)
SELECT EXISTS (SELECT 1 FROM claimed) AS claimed,
       EXISTS (SELECT 1 FROM user_integrations WHERE id = %(id)s) AS present
"""
RELEASE_REFRESH: LiteralString = """
UPDATE user_integrations SET refresh_claimed_by = NULL, refresh_claimed_until = NULL
WHERE id = %(id)s AND refresh_claimed_by = %(holder)s
"""
USER_CONNECTION_TOKENS: LiteralString = """
SELECT access_token, refresh_token, token_refreshed_at AS refreshed_at,
       reauth_token_digest AS reauth_digest
FROM user_integrations WHERE id = %(id)s
"""
SAVE_TOKENS: LiteralString = """
UPDATE user_integrations
SET access_token = %(access_token)s,
    refresh_token = COALESCE(%(refresh_token)s, refresh_token),
    token_expires_at = CASE WHEN %(expires_in)s::float8 IS NULL THEN NULL
                            ELSE now() + make_interval(secs => %(expires_in)s::float8) END,
    token_refreshed_at = clock_timestamp(),
    reauth_required_at = NULL, reauth_token_digest = NULL
WHERE id = %(id)s
RETURNING token_refreshed_at
"""
# Recoveries in progress keep their leases (a backoff and three timeouts can outlast one).
RENEW_LEASES: LiteralString = """
UPDATE system_integrity_events
SET lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
WHERE lease_owner = %(owner)s AND status = 'pending'
"""

# On shutdown: records this daemon leased but did not finish are free again at once.
RELEASE_RECORDS: LiteralString = """
UPDATE system_integrity_events SET lease_owner = NULL, lease_expires_at = NULL
WHERE lease_owner = %(owner)s AND status = 'pending'
"""
MARK_REAUTH_REQUIRED: LiteralString = """
UPDATE user_integrations SET reauth_required_at = now(), reauth_token_digest = %(digest)s
WHERE id = %(id)s
"""

# --- alerts -------------------------------------------------------------------------------

# Alert groups the notifier should look at, locked for its look (another daemon's notifier
# skips them). Locked first, read after: a statement's own snapshot predates the locks it
# waits for, and "has every failure healed?" must see what committed before the lock.
LOCK_DUE_ALERT_GROUPS: LiteralString = """
SELECT fingerprint FROM selfheal_alert_groups
WHERE next_check_at <= now()
ORDER BY next_check_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""
# The locked groups, with whether every failure of each healed, and where its sample stands.
LOCKED_ALERT_GROUPS: LiteralString = """
SELECT g.fingerprint, g.service_name, g.category, g.error_code, g.failures, g.opened_at,
       g.episode_base, g.sample_event_id, g.sample_error, g.sample_plan, g.sample_at,
       g.alerted_at, g.reported_failures, g.reported_at, g.closed_at, g.regression,
       g.resolution, g.notices, g.noticed, g.next_check_at, g.llm_reasoning,
       NOT EXISTS (SELECT 1 FROM system_integrity_events s
                   WHERE s.alert_group = g.fingerprint AND s.status <> 'resolved') AS healed,
       (SELECT s.status FROM system_integrity_events s
        WHERE s.event_id = g.sample_event_id) AS sample_status,
       now() AS looked_at
FROM selfheal_alert_groups g
WHERE g.fingerprint = ANY (%(fingerprints)s::text[])
"""

# The groups after the look (core/alerts.advance) and their messages, one row per
# configured channel, in the look's transaction. `failures` is not written: only records
# count it.
ADVANCE_ALERT_GROUPS: LiteralString = """
WITH c AS (
    SELECT * FROM jsonb_populate_recordset(NULL::selfheal_alert_groups, %(groups)s::jsonb)
), changed AS (
    UPDATE selfheal_alert_groups g
    SET opened_at = c.opened_at, episode_base = c.episode_base,
        sample_event_id = c.sample_event_id, sample_error = c.sample_error,
        sample_plan = c.sample_plan, sample_at = c.sample_at, alerted_at = c.alerted_at,
        reported_failures = c.reported_failures, reported_at = c.reported_at,
        closed_at = c.closed_at, regression = c.regression, resolution = c.resolution,
        notices = c.notices, noticed = c.noticed, next_check_at = c.next_check_at
    FROM c WHERE g.fingerprint = c.fingerprint
), queued AS (
    INSERT INTO selfheal_alerts (channel, alert_group, kind, alert)
    SELECT ch.channel, a.alert_group, a.kind, a.alert::jsonb
    FROM unnest(%(alert_groups)s::text[], %(alert_kinds)s::text[], %(alerts)s::text[])
         WITH ORDINALITY AS a(alert_group, kind, alert, ord)
    CROSS JOIN unnest(%(channels)s::text[]) AS ch(channel)
    ORDER BY a.ord, ch.channel
    RETURNING id, channel, alert_group, kind
)
SELECT id, channel, alert_group, kind FROM queued ORDER BY id
"""

SECONDS_UNTIL_ALERT_CHECK: LiteralString = """
SELECT GREATEST(0, EXTRACT(EPOCH FROM min(next_check_at) - now()))::float8
FROM selfheal_alert_groups WHERE next_check_at IS NOT NULL
"""

# A sender's channel, as it starts: a new URL (another digest) is a new chance for a
# broken channel.
REGISTER_ALERT_CHANNEL: LiteralString = """
INSERT INTO selfheal_alert_channels AS c (channel, url_digest)
VALUES (%(channel)s, %(url_digest)s)
ON CONFLICT (channel) DO UPDATE
SET url_digest = EXCLUDED.url_digest,
    broken_at = CASE WHEN c.url_digest IS DISTINCT FROM EXCLUDED.url_digest THEN NULL
                     ELSE c.broken_at END,
    broken_reason = CASE WHEN c.url_digest IS DISTINCT FROM EXCLUDED.url_digest THEN NULL
                         ELSE c.broken_reason END,
    failures = CASE WHEN c.url_digest IS DISTINCT FROM EXCLUDED.url_digest THEN 0
                    ELSE c.failures END,
    next_send_at = CASE WHEN c.url_digest IS DISTINCT FROM EXCLUDED.url_digest THEN now()
                        ELSE c.next_send_at END
RETURNING broken_reason, broken_at
"""

# The channel's next message, when the channel's pace allows one: leased to this sender
# (a killed sender's lease runs out), and the channel's next send paced. The lock on the
# channel row makes the pace hold across daemons.
CLAIM_ALERT: LiteralString = """
WITH ch AS (
    SELECT channel, failures, broken_reason FROM selfheal_alert_channels
    WHERE channel = %(channel)s AND next_send_at <= now()
    FOR UPDATE SKIP LOCKED
), next AS (
    SELECT a.id FROM selfheal_alerts a
    WHERE a.channel = %(channel)s AND a.status = 'queued' AND EXISTS (SELECT 1 FROM ch)
      AND (a.lease_until IS NULL OR a.lease_until < now())
    ORDER BY a.id
    LIMIT 1
    FOR UPDATE OF a SKIP LOCKED
), leased AS (
    UPDATE selfheal_alerts a
    SET lease_owner = %(owner)s,
        lease_until = now() + make_interval(secs => %(lease_seconds)s),
        attempts = a.attempts + 1
    FROM next WHERE a.id = next.id
    RETURNING a.id, a.alert_group, a.kind, a.alert, a.attempts
), paced AS (
    UPDATE selfheal_alert_channels c
    SET next_send_at = now() + make_interval(secs => %(spacing)s)
    FROM leased WHERE c.channel = %(channel)s
)
SELECT l.id, l.alert_group, l.kind, l.alert, l.attempts, ch.failures,
       ch.broken_reason AS broken
FROM leased l CROSS JOIN ch
"""

# What a delivery attempt decided (core/alerts.after_delivery), for the message and for
# its channel.
ALERT_ATTEMPTED: LiteralString = """
WITH alert AS (
    UPDATE selfheal_alerts
    SET status = %(status)s::text, last_error = %(error)s::text,
        lease_owner = NULL, lease_until = NULL,
        delivered_at = CASE WHEN %(status)s::text = 'delivered' THEN now() END
    WHERE id = %(id)s AND lease_owner = %(owner)s
)
UPDATE selfheal_alert_channels
SET failures = %(failures)s,
    next_send_at = GREATEST(next_send_at, now() + make_interval(secs => %(hold)s)),
    broken_at = CASE WHEN %(broken)s::text IS NULL THEN NULL
                     ELSE COALESCE(broken_at, now()) END,
    broken_reason = %(broken)s::text,
    delivered_at = CASE WHEN %(status)s::text = 'delivered' THEN now() ELSE delivered_at END
WHERE channel = %(channel)s
"""

# When the channel's next message may go: its pace, and a lease of another sender running
# out. No row: nothing is queued.
SECONDS_UNTIL_SENDABLE: LiteralString = """
SELECT GREATEST(0, EXTRACT(EPOCH FROM GREATEST(c.next_send_at, q.claimable) - now()))::float8
FROM selfheal_alert_channels c,
     (SELECT min(COALESCE(lease_until, '-infinity')) AS claimable FROM selfheal_alerts
      WHERE channel = %(channel)s AND status = 'queued') AS q
WHERE c.channel = %(channel)s AND q.claimable IS NOT NULL
"""

# Delivered and dead messages are kept a week; groups closed for a month are forgotten.
PRUNE_ALERTS: LiteralString = """
WITH messages AS (
    DELETE FROM selfheal_alerts
    WHERE status <> 'queued' AND created_at < now() - interval '7 days'
)
DELETE FROM selfheal_alert_groups WHERE closed_at < now() - interval '30 days'
"""

# `selfheal status`: the open groups (newest first), and each channel's queue and health.
OPEN_ALERT_GROUPS: LiteralString = """
SELECT service_name, category, error_code, failures - episode_base AS failures, opened_at,
       alerted_at, regression, count(*) OVER () AS open_groups
FROM selfheal_alert_groups
WHERE closed_at IS NULL AND failures > episode_base
ORDER BY opened_at DESC
LIMIT 20
"""
ALERT_CHANNELS: LiteralString = """
SELECT ch AS channel, c.broken_at, c.broken_reason, c.next_send_at, COALESCE(c.failures, 0)
       AS failures, c.delivered_at,
       (SELECT count(*) FROM selfheal_alerts a WHERE a.channel = ch AND a.status = 'queued')
       AS queued,
       (SELECT min(created_at) FROM selfheal_alerts a
        WHERE a.channel = ch AND a.status = 'queued') AS oldest_queued,
       (SELECT count(*) FROM selfheal_alerts a WHERE a.channel = ch AND a.status = 'dead')
       AS dead
FROM (SELECT channel AS ch FROM selfheal_alert_channels
      UNION SELECT DISTINCT channel FROM selfheal_alerts WHERE status = 'queued') AS names
LEFT JOIN selfheal_alert_channels c ON c.channel = names.ch
ORDER BY ch
"""


# --- the LLM's second opinion (services/advisor.py) ---------------------------------------

QUESTION_LOCK_KEY: Final = 7_415_112_032  # serializes the budget's count across daemons
LOCK_QUESTIONS: LiteralString = "SELECT pg_advisory_xact_lock(%(key)s)"

# The groups due a question, as many as the hour's budget and the calls in flight allow
# (under LOCK_QUESTIONS, so two daemons never both take the last call), each leased: its
# question is due again when the lease runs out (the daemon asking it stopped, whose call
# is then marked failed). Each comes with the episode's first failure: the record's
# reading and the event's fields (a payload over 1 MB is not read).
CLAIM_QUESTIONS: LiteralString = """
WITH budget AS (
    SELECT GREATEST(0, LEAST(
        %(per_hour)s - count(*),
        %(concurrency)s - count(*) FILTER (
            WHERE result = 'asking' AND at > now() - make_interval(secs => %(lease_seconds)s))
    )) AS free
    FROM selfheal_llm_calls WHERE at > now() - interval '1 hour'
), due AS (
    SELECT g.fingerprint FROM selfheal_alert_groups g
    WHERE g.llm_wanted_at <= now()
    ORDER BY g.llm_wanted_at
    LIMIT LEAST((SELECT free FROM budget), %(limit)s)
    FOR UPDATE SKIP LOCKED
), asked AS (
    UPDATE selfheal_alert_groups g
    SET llm_wanted_at = now() + make_interval(secs => %(lease_seconds)s), llm_asked_at = now()
    FROM due WHERE g.fingerprint = due.fingerprint
    RETURNING g.fingerprint, g.service_name, g.category, g.sample_event_id, g.sample_error
), lost AS (
    UPDATE selfheal_llm_calls c SET result = 'failed', reason = 'lost: its daemon stopped'
    FROM asked WHERE c.fingerprint = asked.fingerprint AND c.result = 'asking'
), calls AS (
    INSERT INTO selfheal_llm_calls (fingerprint, owner, model)
    SELECT fingerprint, %(owner)s, %(model)s FROM asked
    RETURNING id, fingerprint
)
SELECT calls.id AS call_id, a.fingerprint, a.service_name, a.category,
       s.analyzer_signals::text AS signals, a.sample_error, e.http_status, e.error_code,
       e.error_message, e.retry_count,
       CASE WHEN pg_column_size(e.payload) <= 1000000 THEN e.payload::text END AS payload
FROM asked a JOIN calls USING (fingerprint)
LEFT JOIN system_integrity_events s ON s.event_id = a.sample_event_id
LEFT JOIN integration_events e ON e.id = a.sample_event_id
"""

# The episode's records that lack its answer, in one order and skipping any row another
# statement holds (a later look copies those): no deadlock with the healer's writes.
_COPY_ANSWER: LiteralString = """
UPDATE system_integrity_events s
SET llm_reasoning = g.llm_reasoning,
    analyzer_signals = s.analyzer_signals || jsonb_build_object('llm', g.llm_answer)
FROM answered g
WHERE s.id IN (
    SELECT x.id FROM system_integrity_events x JOIN answered y ON x.alert_group = y.fingerprint
    WHERE x.alert_group IS NOT NULL AND x.llm_reasoning IS NULL AND x.created_at >= y.sample_at
    ORDER BY x.id
    FOR UPDATE OF x SKIP LOCKED)
  AND s.alert_group = g.fingerprint
"""

# The answer: on the group, its call, and the episode's records written so far.
QUESTION_ANSWERED: LiteralString = (
    """
WITH answered AS (
    UPDATE selfheal_alert_groups
    SET llm_answer = %(answer)s::jsonb, llm_reasoning = %(reasoning)s, llm_stop = %(stop)s,
        llm_answered_at = now(), llm_wanted_at = NULL
    WHERE fingerprint = %(fingerprint)s
    RETURNING fingerprint, sample_at, llm_answer, llm_reasoning
), called AS (
    UPDATE selfheal_llm_calls
    SET result = 'answered', latency_ms = %(latency_ms)s, prompt_tokens = %(prompt_tokens)s,
        completion_tokens = %(completion_tokens)s
    WHERE id = %(call_id)s
)
"""
    + _COPY_ANSWER
)

# No answer: the group may be asked again an hour later, if it fails again.
QUESTION_FAILED: LiteralString = """
WITH g AS (
    UPDATE selfheal_alert_groups SET llm_wanted_at = NULL WHERE fingerprint = %(fingerprint)s
)
UPDATE selfheal_llm_calls
SET result = 'failed', reason = %(reason)s, latency_ms = %(latency_ms)s,
    prompt_tokens = %(prompt_tokens)s, completion_tokens = %(completion_tokens)s
WHERE id = %(call_id)s
"""

# Recent answers onto the records written while they were (a statement that began before
# an answer committed did not see it; none runs longer than the window).
COPY_ANSWERS: LiteralString = (
    """
WITH answered AS (
    SELECT fingerprint, sample_at, llm_answer, llm_reasoning FROM selfheal_alert_groups
    WHERE llm_answered_at > now() - make_interval(secs => %(window_seconds)s)
      AND llm_answer IS NOT NULL AND sample_at IS NOT NULL
)
"""
    + _COPY_ANSWER
)

# Calls are kept a week (the KPIs look at a day).
PRUNE_LLM_CALLS: LiteralString = """
DELETE FROM selfheal_llm_calls WHERE at < now() - interval '7 days'
"""

# `selfheal status`: the last day's questions.
LLM_CALLS: LiteralString = """
SELECT u.*,
       (SELECT count(*) FROM selfheal_alert_groups WHERE llm_wanted_at IS NOT NULL)
           AS waiting,
       (SELECT count(*) FROM selfheal_alert_groups WHERE llm_stop IS NOT NULL)
           AS groups_retry_stopped
FROM selfheal_kpi_llm_usage u
"""
LLM_FAILURES: LiteralString = """
SELECT reason, count(*) AS calls FROM selfheal_llm_calls
WHERE result = 'failed' AND at > now() - interval '24 hours'
GROUP BY reason ORDER BY count(*) DESC, reason
"""


# --- operations (services/sampler.py) --------------------------------------------------------

# The gauges /metrics and systemd's STATUS= show, read every few seconds: each count is
# served by an index.
GAUGES: LiteralString = """
SELECT (SELECT count(*) FROM system_integrity_events WHERE status = 'pending') AS pending,
       (SELECT count(*) FROM integrations_master WHERE NOT auto_recovery_enabled)
           AS disabled_services,
       (SELECT count(*) FROM user_integrations WHERE NOT auto_recovery_enabled)
           AS disabled_user_connections,
       (SELECT count(*) FROM integrations_master WHERE circuit_opened_at IS NOT NULL)
           + (SELECT count(*) FROM user_integrations WHERE circuit_opened_at IS NOT NULL)
           AS open_circuits,
       (SELECT count(*) FROM selfheal_inbox) AS inbox,
       COALESCE((SELECT EXTRACT(EPOCH FROM now() - enqueued_at) FROM selfheal_inbox
                 ORDER BY seq LIMIT 1), 0)::float8 AS oldest_inbox_seconds,
       (SELECT count(*) FROM selfheal_alerts WHERE status = 'queued') AS outbox
"""


# --- the dashboard (web/dashboard.py) --------------------------------------------------------

# The latest records, newest first, each filter optional, one keyset page: the rows
# before (created_at, id), never an OFFSET. One row more than the page tells whether
# there is a next one.
DASHBOARD_RECORDS: LiteralString = """
SELECT s.id, s.service_name, s.user_id, s.failure_category AS category, s.action_taken,
       s.status, s.attempts, s.created_at, s.resolved_at,
       EXTRACT(EPOCH FROM s.resolved_at - s.created_at)::float8 AS seconds_to_recover
FROM system_integrity_events s
WHERE (%(service)s::text IS NULL OR s.service_name = %(service)s::text)
  AND (%(category)s::text IS NULL OR s.failure_category = %(category)s::text)
  AND (%(status)s::text IS NULL OR s.status = %(status)s::text)
  AND (%(before_at)s::timestamptz IS NULL
       OR (s.created_at, s.id) < (%(before_at)s::timestamptz, %(before_id)s::uuid))
ORDER BY s.created_at DESC, s.id DESC
LIMIT %(limit)s
"""

# One record as its page shows it: never the event's payload, message or headers (only
# the record's sanitized reading of them), and where its service and connection stand.
DASHBOARD_RECORD: LiteralString = """
SELECT s.id, s.event_id, s.service_name, s.user_id, s.failure_category AS category,
       s.failure_reason, s.action_taken, s.analyzer_signals::text AS signals,
       s.llm_reasoning, s.status, s.attempts, s.deferrals, s.next_retry_at,
       s.held_by_circuit, s.created_at, s.updated_at, s.resolved_at,
       s.status = 'pending' AND s.lease_expires_at > now() AS in_recovery,
       EXTRACT(EPOCH FROM s.resolved_at - s.created_at)::float8 AS seconds_to_recover,
       COALESCE(m.auto_recovery_enabled, true) AS service_enabled,
       m.disabled_reason AS service_disabled_reason
FROM system_integrity_events s
LEFT JOIN integrations_master m ON m.service_name = s.service_name
WHERE s.id = %(id)s
"""

# Pending records a person should look at: parked ones (processing them crashed) or
# data failures (never retried on their own). Through the pending index.
DASHBOARD_PENDING_OF_KIND: LiteralString = """
SELECT s.id, s.service_name, s.failure_category AS category, s.action_taken,
       s.failure_reason, s.created_at, count(*) OVER () AS total
FROM system_integrity_events s
WHERE s.status = 'pending'
  AND CASE WHEN %(kind)s::text = 'parked' THEN s.action_taken = 'parked'
           ELSE s.failure_category = %(kind)s::text END
ORDER BY s.created_at DESC, s.id DESC
LIMIT %(limit)s
"""

# Alerts that will never be delivered (what they were about, not what they said).
DASHBOARD_DEAD_ALERTS: LiteralString = """
SELECT a.id, a.channel, a.kind, g.service_name, g.category, a.attempts, a.created_at
FROM selfheal_alerts a
LEFT JOIN selfheal_alert_groups g ON g.fingerprint = a.alert_group
WHERE a.status = 'dead'
ORDER BY a.id DESC
LIMIT %(limit)s
"""

# Retry now: a pending record nobody holds is due at once. It stays behind its circuit
# while the circuit is open (the probe decides; a manual retry must not hammer a service
# that is down); parked records are left alone (diagnosing them crashed).
DASHBOARD_RETRY_NOW: LiteralString = """
WITH retried AS (
UPDATE system_integrity_events s
SET next_retry_at = now(), updated_at = now(),
    held_by_circuit = s.held_by_circuit AND (
        EXISTS (SELECT 1 FROM integrations_master m
                WHERE m.service_name = s.service_name AND m.circuit_opened_at IS NOT NULL)
        OR EXISTS (SELECT 1 FROM user_integrations u
                   JOIN integrations_master m ON m.id = u.integration_id
                   WHERE m.service_name = s.service_name AND u.user_id = s.user_id
                     AND u.circuit_opened_at IS NOT NULL))
WHERE s.id = %(id)s AND s.status = 'pending' AND s.action_taken IS DISTINCT FROM 'parked'
  AND (s.lease_expires_at IS NULL OR s.lease_expires_at < now())
RETURNING s.id, s.service_name, s.failure_category AS category, s.held_by_circuit
), recorded AS (
    INSERT INTO selfheal_operator_actions (action, via, client, service_name, user_id,
                                           record_id, result)
    SELECT 'retry', 'dashboard', %(client)s, s.service_name, s.user_id, asked.id,
           CASE WHEN s.id IS NULL THEN 'not_found' WHEN r.id IS NULL THEN 'not_retried'
                WHEN r.held_by_circuit THEN 'held' ELSE 'due' END
    FROM (SELECT %(id)s::uuid AS id) AS asked
    LEFT JOIN retried r ON r.id = asked.id
    LEFT JOIN system_integrity_events s ON s.id = asked.id
)
SELECT * FROM retried
"""

# The operators' latest actions (selfheal_operator_actions), newest first.
DASHBOARD_ACTIONS: LiteralString = """
SELECT at, action, via, service_name, user_id, record_id, result
FROM selfheal_operator_actions ORDER BY id DESC LIMIT %(limit)s
"""

# The chart: the 24 hours to %(until)s, records and recoveries per hour (UTC hours, whatever
# the session's time zone) and category.
DASHBOARD_HOURLY: LiteralString = """
SELECT to_timestamp(floor(EXTRACT(EPOCH FROM created_at) / 3600) * 3600) AS hour,
       failure_category AS category,
       count(*) AS failures, count(*) FILTER (WHERE status = 'resolved') AS resolved
FROM system_integrity_events
WHERE created_at > %(until)s::timestamptz - interval '24 hours'
  AND created_at <= %(until)s::timestamptz
GROUP BY 1, 2
ORDER BY 1, 2
"""
