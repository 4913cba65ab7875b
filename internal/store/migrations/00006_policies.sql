-- Policies (a tree), firewall rules and reusable lists, rule assignments,
-- and per-computer overrides. IDs of policies, rules and lists are integers,
-- as in Deep Security, so exported rules that reference lists by ID import
-- with their references remapped rather than rewritten by hand. They are
-- allocated by the store (MAX(id)+1 inside the writing transaction; a
-- concurrent writer on PostgreSQL collides on the key and retries).

-- +goose Up
CREATE TABLE policies (
    id          BIGINT PRIMARY KEY,
    name        TEXT   NOT NULL,
    description TEXT   NOT NULL DEFAULT '',
    -- NULL: a root of the tree.
    parent_id   BIGINT REFERENCES policies (id),
    -- JSON object setting key → value; an absent key is "inherited".
    settings    TEXT   NOT NULL DEFAULT '{}',
    version     BIGINT NOT NULL DEFAULT 1,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE UNIQUE INDEX policies_name ON policies (name);
CREATE INDEX policies_parent ON policies (parent_id);

CREATE TABLE firewall_rules (
    id         BIGINT PRIMARY KEY,
    name       TEXT   NOT NULL,
    -- The rule in Deep Security's JSON form (firewall.Rule), ID omitted.
    body       TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- IP, MAC and port lists share one table and one ID space; kind says which.
CREATE TABLE firewall_lists (
    id          BIGINT PRIMARY KEY,
    kind        TEXT   NOT NULL, -- ip, mac, port
    name        TEXT   NOT NULL,
    description TEXT   NOT NULL DEFAULT '',
    items       TEXT   NOT NULL DEFAULT '[]', -- JSON array of entries
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX firewall_lists_kind ON firewall_lists (kind, id);

-- Which rules a list is used by, kept with every rule write, so deleting a
-- list can name the rules that still use it without scanning rule bodies.
CREATE TABLE firewall_rule_lists (
    rule_id BIGINT NOT NULL REFERENCES firewall_rules (id) ON DELETE CASCADE,
    list_id BIGINT NOT NULL REFERENCES firewall_lists (id),
    PRIMARY KEY (rule_id, list_id)
);
CREATE INDEX firewall_rule_lists_list ON firewall_rule_lists (list_id);

-- Rule assignments of policies (owner_kind 'policy', owner_id its ID in
-- decimal) and computers ('computer', its ID). assigned = 1 adds the rule;
-- 0 removes a rule the owner would otherwise inherit.
CREATE TABLE rule_assignments (
    owner_kind TEXT    NOT NULL,
    owner_id   TEXT    NOT NULL,
    rule_id    BIGINT  NOT NULL REFERENCES firewall_rules (id),
    assigned   INTEGER NOT NULL,
    PRIMARY KEY (owner_kind, owner_id, rule_id)
);
CREATE INDEX rule_assignments_rule ON rule_assignments (rule_id);

-- Effective configurations by fingerprint, so the manager can send an agent
-- the delta from the version it holds (any manager node, after restarts).
CREATE TABLE policy_documents (
    fingerprint TEXT   PRIMARY KEY,
    body        TEXT   NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX policy_documents_created ON policy_documents (created_at);

ALTER TABLE computers ADD COLUMN policy_id BIGINT;
-- JSON object of setting overrides; absent keys come from the policy.
ALTER TABLE computers ADD COLUMN settings TEXT NOT NULL DEFAULT '{}';
-- The fingerprint the agent last reported, and when.
ALTER TABLE computers ADD COLUMN policy_fingerprint TEXT NOT NULL DEFAULT '';
-- Isolation state: '' (not isolated), 'isolating', 'isolated', 'releasing'.
ALTER TABLE computers ADD COLUMN isolation TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE computers DROP COLUMN isolation;
ALTER TABLE computers DROP COLUMN policy_fingerprint;
ALTER TABLE computers DROP COLUMN settings;
ALTER TABLE computers DROP COLUMN policy_id;
DROP TABLE policy_documents;
DROP TABLE rule_assignments;
DROP TABLE firewall_rule_lists;
DROP TABLE firewall_lists;
DROP TABLE firewall_rules;
DROP TABLE policies;
