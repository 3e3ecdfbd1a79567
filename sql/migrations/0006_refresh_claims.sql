-- One token refresh per user connection across daemons, as a lease on the row: nothing
-- outlives its transaction (PgBouncer in transaction mode hands each transaction to any
-- server connection), and a crashed holder's claim runs out by itself.
ALTER TABLE user_integrations
    ADD COLUMN IF NOT EXISTS refresh_claimed_by uuid,
    ADD COLUMN IF NOT EXISTS refresh_claimed_until timestamptz;
