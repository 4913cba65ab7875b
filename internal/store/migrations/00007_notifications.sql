-- Alert rules, notification channels, and the outbox that delivers
-- notifications to them without ever dropping one.
--
-- A notification is written to the outbox in the same transaction as what
-- caused it (an alert, an event batch), so a crash can lose neither. A
-- dispatcher on any manager node leases it, sends it, and moves it to
-- deliveries, which keeps the outcome (and so makes enqueueing idempotent:
-- notification IDs are derived from their cause, and an ID already in the
-- outbox or in deliveries is not enqueued again).

-- +goose Up
-- What the alert is about beyond its computer ("src 203.0.113.5" for a
-- rule grouped by source); '' for the fleet monitor's alerts.
ALTER TABLE alerts ADD COLUMN subject     TEXT   NOT NULL DEFAULT '';
ALTER TABLE alerts ADD COLUMN rule_id     TEXT   NOT NULL DEFAULT '';
-- How often the condition fired while the alert was open or suppressed:
-- a storm is one alert with a count.
ALTER TABLE alerts ADD COLUMN occurrences BIGINT NOT NULL DEFAULT 1;
ALTER TABLE alerts ADD COLUMN last_at     BIGINT;
ALTER TABLE alerts ADD COLUMN acked_at    BIGINT;
ALTER TABLE alerts ADD COLUMN acked_by    TEXT   NOT NULL DEFAULT '';
-- JSON object of details (what matched), or empty.
ALTER TABLE alerts ADD COLUMN data        TEXT   NOT NULL DEFAULT '';
UPDATE alerts SET last_at = raised_at;
-- At most one open alert per type, computer and subject.
DROP INDEX alerts_open;
CREATE UNIQUE INDEX alerts_open ON alerts (type, computer_id, subject) WHERE cleared_at IS NULL;
-- The newest alert of a key, for suppression windows.
CREATE INDEX alerts_key ON alerts (type, computer_id, subject, raised_at);

CREATE TABLE alert_rules (
    id          TEXT    PRIMARY KEY,
    name        TEXT    NOT NULL,
    enabled     INTEGER NOT NULL DEFAULT 1,
    severity    TEXT    NOT NULL DEFAULT '',
    -- JSON, owned by the rule engine: filter, threshold, window, group-by,
    -- suppression.
    definition  TEXT    NOT NULL DEFAULT '{}',
    description TEXT    NOT NULL DEFAULT '',
    -- Bumped by every update, for conditional updates as with policies.
    version     BIGINT  NOT NULL DEFAULT 1,
    created_at  BIGINT  NOT NULL,
    created_by  TEXT    NOT NULL DEFAULT '',
    updated_at  BIGINT  NOT NULL,
    updated_by  TEXT    NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX alert_rules_name ON alert_rules (name);

CREATE TABLE channels (
    id          TEXT    PRIMARY KEY,
    name        TEXT    NOT NULL,
    kind        TEXT    NOT NULL,         -- smtp, syslog, webhook
    enabled     INTEGER NOT NULL DEFAULT 1,
    -- JSON sender configuration, secrets included: the API redacts it.
    config      TEXT    NOT NULL DEFAULT '{}',
    -- JSON list of routes: which alerts and events go to this channel.
    routes      TEXT    NOT NULL DEFAULT '[]',
    version     BIGINT  NOT NULL DEFAULT 1,
    created_at  BIGINT  NOT NULL,
    created_by  TEXT    NOT NULL DEFAULT '',
    updated_at  BIGINT  NOT NULL,
    updated_by  TEXT    NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX channels_name ON channels (name);

-- Notifications not yet delivered: pending, or failed (given up on, kept
-- until an administrator requeues or discards them). A dispatcher owns a
-- pending notification while lease_until is in the future.
CREATE TABLE outbox (
    id              TEXT    PRIMARY KEY,
    channel_id      TEXT    NOT NULL,
    kind            TEXT    NOT NULL,           -- alert, event, test
    status          TEXT    NOT NULL DEFAULT 'pending',
    created_at      BIGINT  NOT NULL,
    next_at         BIGINT  NOT NULL,           -- not sent before
    attempts        INTEGER NOT NULL DEFAULT 0, -- failed attempts
    last_error      TEXT    NOT NULL DEFAULT '',
    last_attempt_at BIGINT,
    lease_until     BIGINT,
    lease_owner     TEXT    NOT NULL DEFAULT '',
    payload         TEXT    NOT NULL            -- JSON message
);
CREATE INDEX outbox_due ON outbox (status, next_at);
CREATE INDEX outbox_channel ON outbox (channel_id, created_at);

-- The outcome of every notification that left the outbox, and of failed
-- ones: delivered, failed or discarded.
CREATE TABLE deliveries (
    id          TEXT    PRIMARY KEY,
    channel_id  TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    attempts    INTEGER NOT NULL,           -- every attempt, the last included
    created_at  BIGINT  NOT NULL,
    finished_at BIGINT  NOT NULL,
    finished_by TEXT    NOT NULL DEFAULT '', -- the dispatcher, or who discarded it
    last_error  TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX deliveries_finished ON deliveries (finished_at);
CREATE INDEX deliveries_channel ON deliveries (channel_id, finished_at);

-- +goose Down
DROP TABLE deliveries;
DROP TABLE outbox;
DROP TABLE channels;
DROP TABLE alert_rules;
DROP INDEX alerts_key;
DROP INDEX alerts_open;
-- Open alerts that differ only by subject would collide in the old index.
UPDATE alerts SET cleared_at = COALESCE(last_at, raised_at), cleared_by = 'system'
    WHERE cleared_at IS NULL AND subject <> '';
CREATE UNIQUE INDEX alerts_open ON alerts (type, computer_id) WHERE cleared_at IS NULL;
ALTER TABLE alerts DROP COLUMN data;
ALTER TABLE alerts DROP COLUMN acked_by;
ALTER TABLE alerts DROP COLUMN acked_at;
ALTER TABLE alerts DROP COLUMN last_at;
ALTER TABLE alerts DROP COLUMN occurrences;
ALTER TABLE alerts DROP COLUMN rule_id;
ALTER TABLE alerts DROP COLUMN subject;
