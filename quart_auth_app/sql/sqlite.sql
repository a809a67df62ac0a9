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

-- migration 5
-- Mail and the account's life (SPEC §11).
ALTER TABLE users ADD COLUMN email_verified INTEGER NOT NULL DEFAULT 0;
-- Links sent by mail (reset, verify, email change): stored as the SHA-256 of the token,
-- dead once used, expired, or once the user's epoch or email is no longer the one issued.
CREATE TABLE tokens (
    token_hash  BLOB    PRIMARY KEY,
    purpose     TEXT    NOT NULL,
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email       TEXT    NOT NULL,             -- the account's address when issued
    new_email   TEXT    NOT NULL DEFAULT '',  -- for an email change: the address to confirm
    epoch       INTEGER NOT NULL,             -- the user's credential epoch when issued
    created_at  REAL    NOT NULL,
    expires_at  REAL    NOT NULL
);
CREATE INDEX tokens_user_id ON tokens (user_id);
CREATE INDEX tokens_expires_at ON tokens (expires_at);
-- Messages to send, written in the transaction of their cause. No foreign key on user_id:
-- the goodbye mail outlives its account (the one table allowed to keep the address).
CREATE TABLE mail_outbox (
    id              INTEGER PRIMARY KEY,
    kind            TEXT    NOT NULL,
    recipient       TEXT    NOT NULL,
    user_id         INTEGER,
    context         TEXT    NOT NULL DEFAULT '{}',  -- JSON: what the template needs
    created_at      REAL    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL    NOT NULL,
    claimed_until   REAL    NOT NULL DEFAULT 0,     -- a sender holds it until then
    sent_at         REAL,
    failed_at       REAL,
    last_error      TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX mail_outbox_due ON mail_outbox (next_attempt_at)
    WHERE sent_at IS NULL AND failed_at IS NULL;
CREATE INDEX mail_outbox_created_at ON mail_outbox (created_at);

-- migration 6
-- Second factors (SPEC §12). The TOTP secret is stored encrypted under a key derived from
-- SECRET_KEY; recovery codes as SHA-256 (each deleted when used); passkeys as the public
-- key and signature counter WebAuthn registration gave.
CREATE TABLE totp (
    user_id     INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    secret      TEXT    NOT NULL,
    confirmed   INTEGER NOT NULL DEFAULT 0,  -- on once a code was confirmed
    last_step   INTEGER NOT NULL DEFAULT 0,  -- the last 30 s step accepted: never again
    created_at  REAL    NOT NULL
);
CREATE TABLE recovery_codes (
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash   BLOB    NOT NULL,
    PRIMARY KEY (user_id, code_hash)
);
CREATE TABLE passkeys (
    id            TEXT    PRIMARY KEY,  -- the credential id, base64url
    user_id       INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name          TEXT    NOT NULL,
    public_key    BLOB    NOT NULL,
    sign_count    INTEGER NOT NULL DEFAULT 0,
    transports    TEXT    NOT NULL DEFAULT '[]',  -- JSON list
    created_at    REAL    NOT NULL,
    last_used_at  REAL
);
CREATE INDEX passkeys_user_id ON passkeys (user_id);

-- migration 7
-- Passkey challenges are signed and carry their expiry, so asking for one stores nothing;
-- a challenge an authenticator answered is recorded here (as its SHA-256) until it
-- expires, so its answer signs in or adds a passkey once.
CREATE TABLE used_challenges (
    digest      BLOB PRIMARY KEY,
    expires_at  REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX used_challenges_expires_at ON used_challenges (expires_at);

-- migration 8
-- A failed sign-in writes its event for an unknown email too, with no owner (user_id NULL),
-- so known and unknown emails write the same row (SPEC §7, equal cost); the purge drops
-- ownerless events after a throttle window. SQLite cannot drop a NOT NULL: the table is
-- rebuilt (nothing references it).
CREATE TABLE events_new (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER REFERENCES users (id) ON DELETE CASCADE,
    kind        TEXT    NOT NULL,
    ip          TEXT    NOT NULL,
    user_agent  TEXT    NOT NULL,
    created_at  REAL    NOT NULL,
    device      TEXT    NOT NULL DEFAULT ''
);
INSERT INTO events_new (id, user_id, kind, ip, user_agent, created_at, device)
    SELECT id, user_id, kind, ip, user_agent, created_at, device FROM events;
DROP TABLE events;
ALTER TABLE events_new RENAME TO events;
CREATE INDEX events_user_id_created_at ON events (user_id, created_at);
CREATE INDEX events_created_at ON events (created_at);
