-- Plans, each user's current plan, idempotency keys per user, and the history of changes.
CREATE TABLE plans (
    id text PRIMARY KEY,
    position integer NOT NULL,
    name text NOT NULL,
    price_cents integer NOT NULL,
    currency text NOT NULL,
    features jsonb NOT NULL
);
CREATE TABLE subscriptions (
    user_id integer PRIMARY KEY,
    plan_id text REFERENCES plans(id),
    status text NOT NULL CHECK (status IN ('active', 'none')),
    updated_at timestamptz NOT NULL
);
-- One row per (user, key): the unique key is what makes a write apply once across replicas.
CREATE TABLE idempotency_keys (
    user_id integer NOT NULL,
    key text NOT NULL,
    method text NOT NULL,
    fingerprint text NOT NULL,       -- of the request: a reused key must carry the same request
    response jsonb NOT NULL,         -- answered the first time, answered again on retries
    created_at double precision NOT NULL,  -- unix seconds
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
CREATE TABLE subscription_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id integer NOT NULL,
    idempotency_key text NOT NULL,
    method text NOT NULL,            -- PUT | DELETE
    plan_id text,
    status text NOT NULL,
    created_at double precision NOT NULL  -- unix seconds
);
CREATE INDEX subscription_events_user ON subscription_events (user_id, id);
