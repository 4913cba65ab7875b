-- People, API clients, OAuth2 tokens and the audit log (issue #4).

-- +goose Up
CREATE TABLE users (
    id            TEXT   PRIMARY KEY,
    username      TEXT   NOT NULL,
    password_hash TEXT   NOT NULL,          -- argon2id, PHC string
    role          TEXT   NOT NULL,
    created_at    BIGINT NOT NULL,
    disabled_at   BIGINT
);
CREATE UNIQUE INDEX users_username ON users (username);

CREATE TABLE api_clients (
    id          TEXT   PRIMARY KEY,         -- the OAuth2 client_id
    secret_hash TEXT   NOT NULL,            -- SHA-256 of a 160-bit secret
    description TEXT   NOT NULL DEFAULT '',
    role        TEXT   NOT NULL,
    created_by  TEXT   NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    revoked_at  BIGINT
);

-- Access and refresh tokens, by the SHA-256 of the secret. A refresh token
-- belongs to a family: rotating it issues the next member; presenting one
-- that was already used revokes the whole family.
CREATE TABLE oauth_tokens (
    hash        TEXT   PRIMARY KEY,
    kind        TEXT   NOT NULL,            -- access | refresh
    family      TEXT   NOT NULL,
    subject     TEXT   NOT NULL,            -- user:ID or client:ID
    role        TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT,                     -- refresh tokens: rotated
    revoked_at  BIGINT
);
CREATE INDEX oauth_tokens_family ON oauth_tokens (family);

CREATE TABLE audit_log (
    id          TEXT   PRIMARY KEY,
    time        BIGINT NOT NULL,
    actor       TEXT   NOT NULL,            -- user:alice, client:ID, system
    remote      TEXT   NOT NULL DEFAULT '',
    method      TEXT   NOT NULL,
    route       TEXT   NOT NULL,            -- the route pattern
    resource    TEXT   NOT NULL DEFAULT '', -- the resource's ID
    summary     TEXT   NOT NULL DEFAULT '', -- JSON, secrets removed
    status      INTEGER NOT NULL
);
CREATE INDEX audit_log_time ON audit_log (time);

-- +goose Down
DROP TABLE audit_log;
DROP TABLE oauth_tokens;
DROP TABLE api_clients;
DROP TABLE users;
