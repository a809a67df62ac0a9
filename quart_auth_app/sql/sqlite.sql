-- quart_auth_app schema for SQLite. Migrations are numbered blocks below;
-- a database at PRAGMA user_version N runs every block after N, in order.

-- migration 1
CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    email         TEXT    NOT NULL UNIQUE,
    name          TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    created_at    REAL    NOT NULL
);

CREATE TABLE sessions (
    id          TEXT    PRIMARY KEY,            -- public id, shown on /account
    token_hash  BLOB    NOT NULL UNIQUE,        -- SHA-256 of the cookie token
    user_id     INTEGER REFERENCES users (id) ON DELETE CASCADE,
    data        TEXT    NOT NULL DEFAULT '{}',  -- JSON object
    remember    INTEGER NOT NULL DEFAULT 0,
    created_at  REAL    NOT NULL,
    last_seen   REAL    NOT NULL,
    expires_at  REAL    NOT NULL,
    user_agent  TEXT    NOT NULL DEFAULT '',
    ip          TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX sessions_user_id ON sessions (user_id);
CREATE INDEX sessions_expires_at ON sessions (expires_at);
CREATE INDEX sessions_last_seen ON sessions (last_seen);

CREATE TABLE throttle (
    key          TEXT    PRIMARY KEY,
    count        INTEGER NOT NULL,
    window_start REAL    NOT NULL
);
CREATE INDEX throttle_window_start ON throttle (window_start);

CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind        TEXT    NOT NULL,
    ip          TEXT    NOT NULL,
    user_agent  TEXT    NOT NULL,
    created_at  REAL    NOT NULL
);
CREATE INDEX events_user_id_created_at ON events (user_id, created_at);

-- migration 2
-- Credential epochs (SPEC §5): a session is alive only while its epoch is its user's.
ALTER TABLE users ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
-- Events are purged past EVENT_RETENTION (SPEC §8).
CREATE INDEX events_created_at ON events (created_at);

-- migration 3
-- The device name ("Firefox 128 on Ubuntu"), parsed once when the row is written.
ALTER TABLE sessions ADD COLUMN device TEXT NOT NULL DEFAULT '';
ALTER TABLE events ADD COLUMN device TEXT NOT NULL DEFAULT '';

-- migration 4
-- When a key was last counted: over its limit, an attempt waits for ones that may still
-- be running (and may succeed) instead of being refused at once.
ALTER TABLE throttle ADD COLUMN last_hit REAL NOT NULL DEFAULT 0;
