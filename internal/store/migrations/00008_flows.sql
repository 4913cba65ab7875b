-- Flow exporters and flow profiles. The flows themselves live in the
-- telemetry store (DuckDB or ClickHouse); the state store keeps what
-- administrators set: exporters' names and sampling-rate overrides, and
-- saved profiles.

-- +goose Up
-- Every exporter that ever sent flows (registered by the collector on the
-- first packet), and those an administrator configured before they sent.
CREATE TABLE flow_exporters (
    -- The exporter's source address as netip writes it (IPv4 not mapped):
    -- the flow table's exporter column holds the same text.
    address       TEXT   PRIMARY KEY,
    -- Unique when set, since filters may name an exporter ("exporter core1").
    name          TEXT   NOT NULL DEFAULT '',
    -- Administrator's override of the sampling rate; 0: none (use what the
    -- exporter says).
    sampling_rate BIGINT NOT NULL DEFAULT 0,
    -- First datagram; NULL for an exporter configured before it sent.
    first_seen    BIGINT,
    updated_at    BIGINT NOT NULL,
    -- Bumped by every change of name or override, for If-Match.
    version       BIGINT NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX flow_exporters_name ON flow_exporters (name) WHERE name <> '';

-- Saved profiles (the built-in "live" is not stored: it is made from the
-- exporters).
CREATE TABLE flow_profiles (
    id          TEXT   PRIMARY KEY,
    name        TEXT   NOT NULL,
    description TEXT   NOT NULL DEFAULT '',
    filter      TEXT   NOT NULL DEFAULT '',
    -- JSON array of {"id", "name", "filter"}.
    channels    TEXT   NOT NULL DEFAULT '[]',
    version     BIGINT NOT NULL DEFAULT 1,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE UNIQUE INDEX flow_profiles_name ON flow_profiles (name);

-- +goose Down
DROP TABLE flow_profiles;
DROP TABLE flow_exporters;
