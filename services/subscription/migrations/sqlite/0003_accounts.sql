-- Accounts: a name and an Argon2id password hash per user. Their user ids start at 1,000,000, so
-- they never meet a MovieLens user's (the demo logins of development, 1 to 610). And each user's
-- session generation: a session token carries the generation it was made in, and logging out
-- bumps it, ending every session of that user (a user without a row is in generation 0).
CREATE TABLE accounts (
    user_id INTEGER PRIMARY KEY CHECK (user_id >= 1000000),
    name TEXT NOT NULL,              -- as the user typed it (shown in the page header)
    name_key TEXT NOT NULL UNIQUE,   -- the name case-folded: one account per name, whatever case
    password_hash TEXT NOT NULL,     -- argon2id in PHC form ($argon2id$v=19$m=...,t=...,p=...$salt$hash)
    created_at REAL NOT NULL         -- unix seconds
);
CREATE TABLE session_generations (
    user_id INTEGER PRIMARY KEY,
    generation INTEGER NOT NULL CHECK (generation >= 0)
);
