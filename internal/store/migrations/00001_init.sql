-- The same file runs on SQLite and PostgreSQL, so it sticks to the types both
-- understand alike: TEXT, BIGINT, INTEGER. Times are BIGINT Unix microseconds
-- (NULL for "never"), durations BIGINT nanoseconds, lists JSON in TEXT.

-- +goose Up
CREATE TABLE ca (
    -- The CHECK makes the table single-row: a second SaveCA collides on the
    -- primary key, so the first manager node to create a CA wins.
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    cert_pem   TEXT    NOT NULL,
    key_pem    TEXT    NOT NULL,
    created_at BIGINT
);

CREATE TABLE settings (
    key        TEXT   PRIMARY KEY,
    value      TEXT   NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE activation_tokens (
    id          TEXT    PRIMARY KEY,
    hash        TEXT    NOT NULL,
    description TEXT    NOT NULL DEFAULT '',
    created_at  BIGINT,
    expires_at  BIGINT,
    max_uses    INTEGER NOT NULL DEFAULT 0,
    uses        INTEGER NOT NULL DEFAULT 0,
    revoked_at  BIGINT
);
-- Enrolment looks tokens up by hash; unique so a secret names one token.
CREATE UNIQUE INDEX activation_tokens_hash ON activation_tokens (hash);

CREATE TABLE computers (
    id             TEXT   PRIMARY KEY,
    hostname       TEXT   NOT NULL DEFAULT '',
    os             TEXT   NOT NULL DEFAULT '',
    os_version     TEXT   NOT NULL DEFAULT '',
    agent_version  TEXT   NOT NULL DEFAULT '',
    ips            TEXT   NOT NULL DEFAULT '[]',
    state          TEXT   NOT NULL,
    token_id       TEXT   NOT NULL REFERENCES activation_tokens (id),
    enrolled_at    BIGINT,
    deactivated_at BIGINT,
    last_seen      BIGINT,
    uptime         BIGINT NOT NULL DEFAULT 0,
    clock_offset   BIGINT NOT NULL DEFAULT 0,
    cert_serial    TEXT   NOT NULL DEFAULT '',
    cert_not_after BIGINT
);
CREATE INDEX computers_hostname ON computers (hostname, id);

CREATE TABLE alerts (
    id          TEXT   PRIMARY KEY,
    type        TEXT   NOT NULL,
    severity    TEXT   NOT NULL,
    -- '' rather than NULL for the manager's own alerts: NULLs never collide
    -- in a unique index, which would defeat alerts_open below.
    computer_id TEXT   NOT NULL DEFAULT '',
    message     TEXT   NOT NULL DEFAULT '',
    raised_at   BIGINT NOT NULL,
    cleared_at  BIGINT,
    cleared_by  TEXT   NOT NULL DEFAULT ''
);
-- At most one open alert per type and computer, enforced by the engine so
-- that manager nodes racing to raise the same alert cannot both succeed.
CREATE UNIQUE INDEX alerts_open ON alerts (type, computer_id) WHERE cleared_at IS NULL;
CREATE INDEX alerts_raised_at ON alerts (raised_at);
CREATE INDEX alerts_computer ON alerts (computer_id, raised_at);

-- +goose Down
DROP TABLE alerts;
DROP TABLE computers;
DROP TABLE activation_tokens;
DROP TABLE settings;
DROP TABLE ca;
