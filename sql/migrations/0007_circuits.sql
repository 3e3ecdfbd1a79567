-- Circuits: a service (or, for auth, one user connection) whose replays keep failing is
-- probed, one replay at a time, while its other failures wait. The state lives here so
-- that every daemon sees it and a restart does not forget it.
ALTER TABLE integrations_master
    -- Hosts a user's token may be sent to ('api.stripe.com', or 'host:port').
    ADD COLUMN IF NOT EXISTS allowed_hosts text[],
    ADD COLUMN IF NOT EXISTS circuit_opened_at timestamptz,  -- NULL: closed
    ADD COLUMN IF NOT EXISTS circuit_failed_probes integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS circuit_next_probe_at timestamptz,
    ADD COLUMN IF NOT EXISTS circuit_probe_owner text,
    ADD COLUMN IF NOT EXISTS circuit_probe_until timestamptz,
    -- When a failed probe last counted towards a threshold (at most one a minute).
    ADD COLUMN IF NOT EXISTS circuit_counted_at timestamptz;

ALTER TABLE user_integrations
    ADD COLUMN IF NOT EXISTS circuit_opened_at timestamptz,
    ADD COLUMN IF NOT EXISTS circuit_failed_probes integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS circuit_next_probe_at timestamptz,
    ADD COLUMN IF NOT EXISTS circuit_probe_owner text,
    ADD COLUMN IF NOT EXISTS circuit_probe_until timestamptz;

ALTER TABLE system_integrity_events
    -- Waiting behind an open circuit: not claimed until it closes (or a probe picks it).
    ADD COLUMN IF NOT EXISTS held_by_circuit boolean NOT NULL DEFAULT false,
    -- Already counted towards a threshold: a failure counts once, however often retried.
    ADD COLUMN IF NOT EXISTS counted boolean NOT NULL DEFAULT false;

-- What thresholds count: one row for each failure of a service that healing could not
-- fix, and for each failed probe of its circuit; a success of the service empties it.
CREATE TABLE IF NOT EXISTS selfheal_unhealed (
    service_id uuid NOT NULL REFERENCES integrations_master (id) ON DELETE CASCADE,
    category text NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS selfheal_unhealed_service_idx
    ON selfheal_unhealed (service_id, category, at);
-- The failures waiting behind a circuit, oldest first (the next probe, the release).
CREATE INDEX IF NOT EXISTS system_integrity_events_held_idx
    ON system_integrity_events (service_name, created_at)
    WHERE held_by_circuit AND status = 'pending';
-- What is down or disabled, read every second while recoveries run: partial indexes, so
-- that a big user_integrations is not scanned.
CREATE INDEX IF NOT EXISTS integrations_master_attention_idx
    ON integrations_master (id) WHERE circuit_opened_at IS NOT NULL OR NOT auto_recovery_enabled;
CREATE INDEX IF NOT EXISTS user_integrations_attention_idx
    ON user_integrations (id) WHERE circuit_opened_at IS NOT NULL OR NOT auto_recovery_enabled;
-- Successes the integrations wrote while something was counted, for the daemon to apply
-- (append only: an integration's insert never waits on another's).
CREATE TABLE IF NOT EXISTS selfheal_successes (
    service_name text NOT NULL,
    user_id uuid,
    seen_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- A success row resets what was counted: the trigger asks these first, cheaply.
CREATE INDEX IF NOT EXISTS user_integrations_failing_idx
    ON user_integrations (integration_id, user_id) WHERE consecutive_failures > 0;

-- The circuit columns after a change ('open', 'probe_failed', 'close', or NULL for none),
-- for integrations_master and user_integrations alike. A circuit already open (another
-- daemon opened it) keeps its probe schedule; a failed probe or a close frees its lease.
CREATE OR REPLACE FUNCTION selfheal_circuit_after(
    change text, opened timestamptz, failed integer, next_probe timestamptz,
    owner text, owned_until timestamptz, new_next_probe timestamptz,
    OUT circuit_opened_at timestamptz, OUT circuit_failed_probes integer,
    OUT circuit_next_probe_at timestamptz, OUT circuit_probe_owner text,
    OUT circuit_probe_until timestamptz
) LANGUAGE sql STABLE AS $$
    SELECT
        CASE change WHEN 'open' THEN COALESCE(opened, now()) WHEN 'close' THEN NULL
                    ELSE opened END,
        CASE WHEN change = 'open' AND opened IS NULL THEN 0
             WHEN change = 'probe_failed' THEN failed + 1
             WHEN change = 'close' THEN 0
             ELSE failed END,
        CASE WHEN (change = 'open' AND opened IS NULL) OR change = 'probe_failed'
                  THEN new_next_probe
             WHEN change = 'close' THEN NULL
             ELSE next_probe END,
        CASE WHEN change IN ('probe_failed', 'close') THEN NULL ELSE owner END,
        CASE WHEN change IN ('probe_failed', 'close') THEN NULL ELSE owned_until END
$$;
