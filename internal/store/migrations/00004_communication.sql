-- A computer may override the communication direction (agent-initiated,
-- bidirectional, manager-initiated); empty: the manager-wide setting. Issue
-- #5 folds this into policy overrides.

-- +goose Up
ALTER TABLE computers ADD COLUMN communication TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE computers DROP COLUMN communication;
