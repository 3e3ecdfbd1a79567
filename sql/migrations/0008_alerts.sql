-- Admin alerts: failures grouped by what they have in common, the group's state (what
-- was said, and when), and an outbox of messages the daemons deliver to Slack and Teams.

-- The alert group of each record (NULL for records from before alerts).
ALTER TABLE system_integrity_events ADD COLUMN IF NOT EXISTS alert_group text;
-- "Has the group healed?" is "is none of its failures left unresolved?".
CREATE INDEX IF NOT EXISTS system_integrity_events_unhealed_group_idx
    ON system_integrity_events (alert_group)
    WHERE status <> 'resolved' AND alert_group IS NOT NULL;

-- One row per (service, category, normalized error code), keyed by a versioned
-- fingerprint. `failures` only grows; an episode runs from `opened_at` until every
-- failure of it healed (`closed_at`), and counts `failures - episode_base`.
CREATE TABLE IF NOT EXISTS selfheal_alert_groups (
    fingerprint text PRIMARY KEY,
    service_name text NOT NULL,
    category text NOT NULL,
    error_code text NOT NULL,
    failures bigint NOT NULL DEFAULT 0,
    opened_at timestamptz NOT NULL DEFAULT now(),
    episode_base bigint NOT NULL DEFAULT 0,
    -- The episode's first failure (filled by the first failure after a close).
    sample_event_id uuid,
    sample_error text,
    sample_plan text,
    sample_at timestamptz,
    last_failure_at timestamptz,
    alerted_at timestamptz,  -- the episode's first message (NULL: none yet)
    reported_failures bigint NOT NULL DEFAULT 0,  -- `failures` as the last message said
    reported_at timestamptz,
    closed_at timestamptz,  -- NULL while open
    regression boolean NOT NULL DEFAULT false,  -- it healed once, and failed again
    resolution text,  -- how its latest failure healed
    -- Recovery attempts and disables waiting for the notifier's next look, by kind;
    -- and when each kind of attempt was last sent (at most one per group interval).
    notices jsonb NOT NULL DEFAULT '{}',
    noticed jsonb NOT NULL DEFAULT '{}',
    next_check_at timestamptz  -- when the notifier looks again (NULL: nothing to do)
);
CREATE INDEX IF NOT EXISTS selfheal_alert_groups_due_idx
    ON selfheal_alert_groups (next_check_at) WHERE next_check_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS selfheal_alert_groups_open_idx
    ON selfheal_alert_groups (opened_at) WHERE closed_at IS NULL;

-- The outbox: one row per message and channel, written in the transaction that decided
-- it; leased by one sender at a time, delivered or dead with the reason. It holds what
-- the message says, never a webhook URL.
CREATE TABLE IF NOT EXISTS selfheal_alerts (
    id bigserial PRIMARY KEY,
    channel text NOT NULL,
    alert_group text,
    kind text NOT NULL,
    alert jsonb NOT NULL,
    status text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'delivered', 'dead')),
    attempts integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    lease_owner text,
    lease_until timestamptz,
    delivered_at timestamptz,
    last_error text
);
CREATE INDEX IF NOT EXISTS selfheal_alerts_queued_idx
    ON selfheal_alerts (channel, id) WHERE status = 'queued';

-- Each channel's pace, shared by every daemon: the next send (about one a second; later
-- after a 429 or a failure), the failures in a row, and why it is broken.
CREATE TABLE IF NOT EXISTS selfheal_alert_channels (
    channel text PRIMARY KEY,
    -- The first 16 hex digits of the configured URL's SHA-256: a new URL clears a broken
    -- channel. Not the URL, from which it cannot be recovered.
    url_digest text,
    next_send_at timestamptz NOT NULL DEFAULT now(),
    failures integer NOT NULL DEFAULT 0,
    broken_at timestamptz,
    broken_reason text,
    delivered_at timestamptz
);
