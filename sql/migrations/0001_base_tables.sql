-- The integration tables, created when absent; existing ones keep their columns and rows.
CREATE TABLE IF NOT EXISTS integrations_master (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    service_name text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS user_integrations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL,
    integration_id uuid NOT NULL REFERENCES integrations_master (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS integration_events (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    service_name text NOT NULL,
    event_type text,
    payload jsonb,
    user_id uuid,
    created_at timestamptz NOT NULL DEFAULT now()
);
