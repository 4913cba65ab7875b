-- Events sent by agents. Issue #6 moves them to the telemetry store; until
-- then they live here. An event is identified by the agent that sent it and
-- the ID the agent gave it, so a resent batch is stored once and one agent
-- cannot shadow another's events by reusing their IDs.

-- +goose Up
CREATE TABLE events (
    computer_id TEXT   NOT NULL,
    id          TEXT   NOT NULL,
    type        TEXT   NOT NULL,
    severity    TEXT   NOT NULL,
    time        BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    data        TEXT   NOT NULL DEFAULT '',
    PRIMARY KEY (computer_id, id)
);
CREATE INDEX events_time ON events (time);
CREATE INDEX events_computer_time ON events (computer_id, time);

-- +goose Down
DROP TABLE events;
