-- Failures go to the inbox in the writer's transaction, and one NOTIFY per
-- statement wakes the daemon: a bulk insert of 100,000 failures sends one hint.
-- SECURITY DEFINER with the migration's search_path: the integration's role needs no
-- rights on selfheal_inbox, and its own search_path cannot redirect the insert.
-- Applied again by `selfheal migrate` whenever this file changes. The channel placeholder is
-- replaced by the channel name of db/queries.py (a quoted literal) before it runs.
CREATE OR REPLACE FUNCTION selfheal_enqueue_inserted_failures() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    queued bigint;
BEGIN
    INSERT INTO selfheal_inbox (event_id)
    SELECT id FROM selfheal_new_rows
    WHERE status = 'error' AND selfheal_attempt IS NULL
    ON CONFLICT (event_id) DO NOTHING;
    GET DIAGNOSTICS queued = ROW_COUNT;
    IF queued > 0 THEN
        PERFORM pg_notify(@FAILURES_CHANNEL@, queued::text);
    END IF;
    -- A success the integration wrote itself breaks a run of failures: the daemon resets
    -- the counts. Queued, not applied here, so that the integration's insert never waits
    -- for (or deadlocks with) the daemon's own writes; and only while something is counted.
    IF EXISTS (SELECT 1 FROM integrations_master WHERE recovery_fail_count > 0)
       OR EXISTS (SELECT 1 FROM user_integrations WHERE consecutive_failures > 0) THEN
        INSERT INTO selfheal_successes (service_name, user_id)
        SELECT DISTINCT service_name, user_id FROM selfheal_new_rows WHERE status = 'success';
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION selfheal_enqueue_updated_failures() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    queued bigint;
BEGIN
    INSERT INTO selfheal_inbox (event_id)
    SELECT n.id
    FROM selfheal_new_rows n
    JOIN selfheal_old_rows o ON o.id = n.id
    WHERE n.status = 'error' AND o.status IS DISTINCT FROM 'error'
      AND n.selfheal_attempt IS NULL
    ON CONFLICT (event_id) DO NOTHING;
    GET DIAGNOSTICS queued = ROW_COUNT;
    IF queued > 0 THEN
        PERFORM pg_notify(@FAILURES_CHANNEL@, queued::text);
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS selfheal_failures_inserted ON integration_events;
CREATE TRIGGER selfheal_failures_inserted
    AFTER INSERT ON integration_events
    REFERENCING NEW TABLE AS selfheal_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION selfheal_enqueue_inserted_failures();

DROP TRIGGER IF EXISTS selfheal_failures_updated ON integration_events;
CREATE TRIGGER selfheal_failures_updated
    AFTER UPDATE ON integration_events
    REFERENCING OLD TABLE AS selfheal_old_rows NEW TABLE AS selfheal_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION selfheal_enqueue_updated_failures();
