-- The columns the specification adds to the integration tables.
ALTER TABLE integrations_master
    ADD COLUMN IF NOT EXISTS oauth_config jsonb,
    ADD COLUMN IF NOT EXISTS recovery_fail_count integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS last_recovery_at timestamptz,
    ADD COLUMN IF NOT EXISTS auto_recovery_enabled boolean NOT NULL DEFAULT true,
    ADD COLUMN IF NOT EXISTS disabled_reason text,
    ADD COLUMN IF NOT EXISTS disabled_at timestamptz;

ALTER TABLE user_integrations
    ADD COLUMN IF NOT EXISTS access_token text,
    ADD COLUMN IF NOT EXISTS refresh_token text,
    ADD COLUMN IF NOT EXISTS token_expires_at timestamptz,
    ADD COLUMN IF NOT EXISTS last_error_at timestamptz,
    ADD COLUMN IF NOT EXISTS consecutive_failures integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS auto_recovery_enabled boolean NOT NULL DEFAULT true,
    ADD COLUMN IF NOT EXISTS disabled_reason text,
    ADD COLUMN IF NOT EXISTS disabled_at timestamptz;

CREATE INDEX IF NOT EXISTS user_integrations_user_integration_idx
    ON user_integrations (user_id, integration_id);

-- Existing rows were successes: a fast default, no table rewrite.
ALTER TABLE integration_events
    ADD COLUMN IF NOT EXISTS status text NOT NULL DEFAULT 'success',
    ADD COLUMN IF NOT EXISTS error_code text,
    ADD COLUMN IF NOT EXISTS error_message text,
    ADD COLUMN IF NOT EXISTS http_status integer,
    ADD COLUMN IF NOT EXISTS retry_count integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS endpoint text,
    ADD COLUMN IF NOT EXISTS http_method text NOT NULL DEFAULT 'POST',
    ADD COLUMN IF NOT EXISTS response_headers jsonb,
    -- Set (to the attempt number) on rows an integration writes about a self-heal
    -- replay; the trigger ignores them, so a failed replay never cascades.
    ADD COLUMN IF NOT EXISTS selfheal_attempt integer;

-- The backlog scan walks only failures, oldest first.
CREATE INDEX IF NOT EXISTS integration_events_errors_idx
    ON integration_events (created_at, id) WHERE status = 'error';
