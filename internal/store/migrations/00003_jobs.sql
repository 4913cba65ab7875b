-- Jobs: commands for one or many computers, with a status per target.

-- +goose Up
CREATE TABLE jobs (
    id           TEXT   PRIMARY KEY,
    kind         TEXT   NOT NULL,
    params       TEXT   NOT NULL DEFAULT '',
    description  TEXT   NOT NULL DEFAULT '',
    created_by   TEXT   NOT NULL DEFAULT '',
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    cancelled_at BIGINT
);
CREATE INDEX jobs_created ON jobs (created_at);

CREATE TABLE job_targets (
    job_id       TEXT   NOT NULL,
    computer_id  TEXT   NOT NULL,
    status       TEXT   NOT NULL,
    updated_at   BIGINT NOT NULL,
    delivered_at BIGINT,
    started_at   BIGINT,
    finished_at  BIGINT,
    result       TEXT   NOT NULL DEFAULT '',
    file_id      TEXT   NOT NULL DEFAULT '',
    PRIMARY KEY (job_id, computer_id)
);
CREATE INDEX job_targets_computer ON job_targets (computer_id, status);

-- Files agents upload for jobs (collect-logs). The bytes live in the
-- manager's data folder; this row says what they are and whether they are
-- complete.
CREATE TABLE files (
    id          TEXT    PRIMARY KEY,
    job_id      TEXT    NOT NULL,
    computer_id TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    size        BIGINT  NOT NULL,
    sha256      TEXT    NOT NULL,
    received    BIGINT  NOT NULL DEFAULT 0,
    created_at  BIGINT  NOT NULL,
    complete_at BIGINT
);

-- +goose Down
DROP TABLE files;
DROP TABLE job_targets;
DROP TABLE jobs;
