-- Row-level security on user_integrations: only the service role reads tokens.
-- `service_role` follows the Supabase convention; elsewhere it is created here
-- (NOLOGIN) and granted to the daemon's login role by an operator.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        CREATE ROLE service_role NOLOGIN;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'cannot create role service_role; create it and grant it to the daemon';
END $$;

ALTER TABLE user_integrations ENABLE ROW LEVEL SECURITY;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        IF NOT EXISTS (
            SELECT 1 FROM pg_policies
            WHERE tablename = 'user_integrations' AND policyname = 'selfheal_service_role_all'
        ) THEN
            CREATE POLICY selfheal_service_role_all ON user_integrations
                FOR ALL TO service_role USING (true) WITH CHECK (true);
        END IF;
        GRANT SELECT, INSERT, UPDATE, DELETE ON user_integrations TO service_role;
    END IF;
END $$;
