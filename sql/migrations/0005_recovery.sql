-- What recovery needs: rate-limit windows, counter resets, token refresh bookkeeping.
ALTER TABLE integrations_master
    ADD COLUMN IF NOT EXISTS rate_limited_until timestamptz,
    -- Threshold counts start here: set by a successful recovery and by `selfheal enable`.
    ADD COLUMN IF NOT EXISTS counters_reset_at timestamptz;

ALTER TABLE user_integrations
    ADD COLUMN IF NOT EXISTS token_refreshed_at timestamptz,
    -- Set when the token endpoint answered invalid_grant: the user must re-authorize.
    -- The digest (SHA-256, never the token) tells whether the refresh token has changed
    -- since, i.e. whether the user has re-authorized.
    ADD COLUMN IF NOT EXISTS reauth_required_at timestamptz,
    ADD COLUMN IF NOT EXISTS reauth_token_digest text;

-- Threshold counts: a service's recent failures of one category (and, by its prefix,
-- any lookup of a service's records).
CREATE INDEX IF NOT EXISTS system_integrity_events_threshold_idx
    ON system_integrity_events (service_name, failure_category, created_at);
