-- The first schema (IF NOT EXISTS: stores made before versioned migrations already have it).
CREATE TABLE IF NOT EXISTS plans (
    id TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    price_cents INTEGER NOT NULL,
    currency TEXT NOT NULL,
    features TEXT NOT NULL           -- JSON list
);
CREATE TABLE IF NOT EXISTS subscriptions (
    user_id INTEGER PRIMARY KEY,
    plan_id TEXT REFERENCES plans(id),
    status TEXT NOT NULL,            -- active | none
    updated_at TEXT NOT NULL         -- ISO 8601, UTC
);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL,
    method TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotency_keys_created ON idempotency_keys(created_at);
