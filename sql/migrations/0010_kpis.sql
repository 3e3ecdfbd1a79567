-- The KPIs of `selfheal status` (and the dashboard), as views an operator can query too.
-- Each reads through an index, so they stay fast on a table of millions of records: the
-- last day's slice by created_at, and what is pending (usually few) by its own index.

CREATE INDEX IF NOT EXISTS system_integrity_events_created_idx
    ON system_integrity_events (created_at);
CREATE INDEX IF NOT EXISTS system_integrity_events_pending_idx
    ON system_integrity_events (created_at, failure_category) WHERE status = 'pending';

-- The last 24 hours: failures recorded, the share resolved, and time to recover.
CREATE OR REPLACE VIEW selfheal_kpi_last_day AS
SELECT count(*) AS failures_24h,
       count(*) FILTER (WHERE status = 'resolved') AS resolved_24h,
       round(count(*) FILTER (WHERE status = 'resolved')::numeric / NULLIF(count(*), 0), 4)
           ::float8 AS recovery_rate_24h,
       round(avg(EXTRACT(EPOCH FROM resolved_at - created_at))
                 FILTER (WHERE status = 'resolved'), 3)::float8 AS mttr_seconds,
       round((percentile_cont(0.9) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM resolved_at - created_at))
                 FILTER (WHERE status = 'resolved'))::numeric, 3)::float8 AS ttr_p90_seconds
FROM system_integrity_events
WHERE created_at > now() - interval '24 hours';

-- The last 24 hours by category and status (the category distribution).
CREATE OR REPLACE VIEW selfheal_kpi_categories AS
SELECT failure_category AS category, status, count(*) AS failures
FROM system_integrity_events
WHERE created_at > now() - interval '24 hours'
GROUP BY 1, 2;

-- Active failures, however old: by category, and the oldest.
CREATE OR REPLACE VIEW selfheal_kpi_pending AS
SELECT failure_category AS category, count(*) AS pending, min(created_at) AS oldest
FROM system_integrity_events
WHERE status = 'pending'
GROUP BY 1;

-- The services that failed most in the last 24 hours, and where they stand.
CREATE OR REPLACE VIEW selfheal_kpi_top_failing_services AS
SELECT s.service_name, count(*) AS failures_24h,
       count(*) FILTER (WHERE s.status = 'resolved') AS resolved_24h,
       count(*) FILTER (WHERE s.status = 'pending') AS pending_24h,
       COALESCE(bool_and(m.auto_recovery_enabled), true) AS enabled,
       max(m.recovery_fail_count) AS unhealed_since_success
FROM system_integrity_events s
LEFT JOIN integrations_master m ON m.service_name = s.service_name
WHERE s.created_at > now() - interval '24 hours'
GROUP BY s.service_name
ORDER BY failures_24h DESC, s.service_name
LIMIT 10;

-- Disabled integrations: services and user connections, with the reason and since when.
CREATE OR REPLACE VIEW selfheal_kpi_disabled AS
SELECT m.service_name, NULL::uuid AS user_id, m.disabled_reason AS reason, m.disabled_at
FROM integrations_master m WHERE NOT m.auto_recovery_enabled
UNION ALL
SELECT m.service_name, u.user_id, u.disabled_reason, u.disabled_at
FROM user_integrations u JOIN integrations_master m ON m.id = u.integration_id
WHERE NOT u.auto_recovery_enabled;

-- The LLM's last 24 hours.
CREATE OR REPLACE VIEW selfheal_kpi_llm_usage AS
SELECT count(*) AS calls,
       count(*) FILTER (WHERE result = 'answered') AS answered,
       count(*) FILTER (WHERE result = 'failed') AS failed,
       count(*) FILTER (WHERE at > now() - interval '1 hour') AS last_hour,
       round(avg(latency_ms) FILTER (WHERE result = 'answered')::numeric, 1)::float8
           AS mean_latency_ms,
       round((percentile_cont(0.9) WITHIN GROUP (ORDER BY latency_ms)
              FILTER (WHERE result = 'answered'))::numeric, 1)::float8 AS p90_latency_ms,
       COALESCE(sum(prompt_tokens), 0) AS prompt_tokens,
       COALESCE(sum(completion_tokens), 0) AS completion_tokens
FROM selfheal_llm_calls
WHERE at > now() - interval '24 hours';
