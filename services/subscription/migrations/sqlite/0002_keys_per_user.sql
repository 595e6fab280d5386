-- Idempotency keys belong to a user: user B's key never collides with user A's. And a history
-- of applied writes, one row per change, each naming the key that made it.
CREATE TABLE idempotency_keys_per_user (
    user_id INTEGER NOT NULL,
    key TEXT NOT NULL,
    method TEXT NOT NULL,
    fingerprint TEXT NOT NULL,       -- of the request: a reused key must carry the same request
    response TEXT NOT NULL,          -- JSON answered the first time, answered again on retries
    created_at REAL NOT NULL,        -- unix seconds
    PRIMARY KEY (user_id, key)
);
INSERT INTO idempotency_keys_per_user
    SELECT user_id, key, method, fingerprint, response, created_at FROM idempotency_keys;
DROP TABLE idempotency_keys;
ALTER TABLE idempotency_keys_per_user RENAME TO idempotency_keys;
CREATE INDEX idempotency_keys_created ON idempotency_keys(created_at);
CREATE TABLE subscription_events (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL,
    idempotency_key TEXT NOT NULL,
    method TEXT NOT NULL,            -- PUT | DELETE
    plan_id TEXT,
    status TEXT NOT NULL,            -- active | none
    created_at REAL NOT NULL         -- unix seconds
);
CREATE INDEX subscription_events_user ON subscription_events(user_id, id);
