-- One decision record per failed event, and the inbox of failures not yet diagnosed.
CREATE TABLE IF NOT EXISTS system_integrity_events (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    event_id uuid NOT NULL,
    service_name text NOT NULL,
    failure_reason text,
    failure_category text NOT NULL DEFAULT 'unknown',
    action_taken text,
    analyzer_signals jsonb NOT NULL DEFAULT '{}'::jsonb,
    llm_reasoning text,
    status text NOT NULL DEFAULT 'pending',
    resolved_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE system_integrity_events
    ADD COLUMN IF NOT EXISTS user_id uuid,
    ADD COLUMN IF NOT EXISTS attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS deferrals integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS next_retry_at timestamptz,
    ADD COLUMN IF NOT EXISTS lease_owner text,
    ADD COLUMN IF NOT EXISTS lease_expires_at timestamptz;

-- NOT VALID: rows of an older table keep whatever status they had; new ones are checked.
DO $$
BEGIN
    ALTER TABLE system_integrity_events
        ADD CONSTRAINT system_integrity_events_status_check
        CHECK (status IN ('pending', 'resolved', 'disabled')) NOT VALID;
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

-- One record per failed event. An older table may hold several rows for one event:
-- say so plainly rather than fail on the index.
DO $$
DECLARE
    doubled bigint;
BEGIN
    SELECT count(*) INTO doubled FROM (
        SELECT event_id FROM system_integrity_events GROUP BY event_id HAVING count(*) > 1
    ) AS d;
    IF doubled > 0 THEN
        RAISE EXCEPTION 'system_integrity_events has % event_id values with more than one row', doubled
            USING HINT = 'Keep one row per event_id (e.g. the newest), then run selfheal migrate again.';
    END IF;
END $$;

CREATE UNIQUE INDEX IF NOT EXISTS system_integrity_events_event_id_key
    ON system_integrity_events (event_id);
-- The recovery timer: due pending work, earliest first.
CREATE INDEX IF NOT EXISTS system_integrity_events_due_idx
    ON system_integrity_events (next_retry_at) WHERE status = 'pending';

-- Failures waiting for a diagnosis. The trigger fills it in the writer's own
-- transaction, so a failure is never lost between commit and daemon.
CREATE TABLE IF NOT EXISTS selfheal_inbox (
    event_id uuid PRIMARY KEY,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    enqueued_at timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 0,
    available_at timestamptz NOT NULL DEFAULT '-infinity',
    last_error text
);
CREATE INDEX IF NOT EXISTS selfheal_inbox_seq_idx ON selfheal_inbox (seq);
