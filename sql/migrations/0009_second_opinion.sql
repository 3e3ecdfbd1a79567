-- The LLM's second opinion: one question per episode of an alert group, asked by one
-- daemon at a time, its answer kept on the group and copied to its records; and a row per
-- call, for the hourly budget every daemon shares and for the KPIs.

-- Each episode of a group gets one question. `llm_wanted_at`: when to ask it; set by a
-- failure the analyzer was unsure of, moved a lease ahead by the daemon asking (so a
-- question lost with its daemon is asked again), NULL once answered or failed. A new
-- episode starts without the last one's answer.
ALTER TABLE selfheal_alert_groups
    ADD COLUMN IF NOT EXISTS llm_wanted_at timestamptz,
    ADD COLUMN IF NOT EXISTS llm_asked_at timestamptz,
    ADD COLUMN IF NOT EXISTS llm_answered_at timestamptz,
    ADD COLUMN IF NOT EXISTS llm_answer jsonb,  -- analyzer_signals.llm of its records
    ADD COLUMN IF NOT EXISTS llm_reasoning text,  -- llm_reasoning of its records
    -- Set when the answer stops the remaining retries of the episode's failures: why.
    ADD COLUMN IF NOT EXISTS llm_stop text;
CREATE INDEX IF NOT EXISTS selfheal_alert_groups_llm_wanted_idx
    ON selfheal_alert_groups (llm_wanted_at) WHERE llm_wanted_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS selfheal_alert_groups_llm_answered_idx
    ON selfheal_alert_groups (llm_answered_at) WHERE llm_answered_at IS NOT NULL;

-- The records still without their group's answer: the ones written before it get it with
-- the answer, the ones after it as they are written, and any written while it was, from
-- a later look.
CREATE INDEX IF NOT EXISTS system_integrity_events_unread_group_idx
    ON system_integrity_events (alert_group)
    WHERE alert_group IS NOT NULL AND llm_reasoning IS NULL;

-- One row per question: 'asking' while in flight (for the lease from `at`; a question whose
-- daemon stopped is marked failed when its group is asked again), then 'answered' or
-- 'failed' with the reason. Never the prompt or the answer's text.
CREATE TABLE IF NOT EXISTS selfheal_llm_calls (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    fingerprint text NOT NULL,
    owner text NOT NULL,
    model text NOT NULL,
    result text NOT NULL DEFAULT 'asking' CHECK (result IN ('asking', 'answered', 'failed')),
    reason text,
    latency_ms double precision,
    prompt_tokens integer,
    completion_tokens integer
);
CREATE INDEX IF NOT EXISTS selfheal_llm_calls_at_idx ON selfheal_llm_calls (at);
