-- What operators did, and what came of it: Re-enable and Retry-now on the Self-Healing
-- Activity page, `selfheal enable` in a shell. Written in the statement that acts, so no
-- action goes unrecorded and no record claims an action that did not happen.
CREATE TABLE IF NOT EXISTS selfheal_operator_actions (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    action text NOT NULL CHECK (action IN ('enable', 'retry')),
    via text NOT NULL CHECK (via IN ('dashboard', 'cli')),
    client text,            -- the page's peer address
    service_name text,
    user_id uuid,           -- the user connection re-enabled
    record_id uuid,         -- the record retried
    result text NOT NULL
        CHECK (result IN ('enabled', 'not_found', 'due', 'held', 'not_retried'))
);
