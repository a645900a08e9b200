-- Risk control. Deletion protection is read on every delete, so each protected record carries a
-- flag beside its labels (set from them by core's `is_protected`); an instance's own labels are its
-- tenant's, beside those of its batch.
ALTER TABLE instances ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
ALTER TABLE instances ADD COLUMN delete_protected BIGINT NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN delete_protected BIGINT NOT NULL DEFAULT 0;
ALTER TABLE groups ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
ALTER TABLE groups ADD COLUMN delete_protected BIGINT NOT NULL DEFAULT 0;
UPDATE batches SET delete_protected = 1
    WHERE id IN (SELECT batch_id FROM batch_labels WHERE key = 'eci.io/delete-protection' AND value = 'always');

-- The rules deletions are held to: the platform's (`scope` = 'platform') and each tenant's
-- overrides (`scope` = the tenant's id), as JSON.
CREATE TABLE risk_rules (
    scope      TEXT PRIMARY KEY,
    rules      TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Every destructive operation, allowed or refused, with who asked and the rule that decided.
CREATE TABLE risk_audit (
    id          TEXT PRIMARY KEY,
    at          BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    key_id      TEXT,
    subject     TEXT,
    tenant_id   TEXT,
    target_kind TEXT NOT NULL,
    target_id   TEXT NOT NULL,
    idc_id      TEXT,
    count       BIGINT NOT NULL,
    verdict     TEXT NOT NULL,
    rule        TEXT NOT NULL,
    breaker     TEXT,
    message     TEXT NOT NULL
);
CREATE INDEX risk_audit_by_tenant ON risk_audit (tenant_id, id);

-- Breakers tripped and reset, and held operations approved.
CREATE TABLE risk_events (
    id        TEXT PRIMARY KEY,
    at        BIGINT NOT NULL,
    kind      TEXT NOT NULL,
    breaker   TEXT,
    hold_id   TEXT,
    key_id    TEXT,
    message   TEXT NOT NULL
);

-- Operations a breaker refused that wait: one per target while held or approved. `approved` lets
-- the next attempt through once, whatever the windows say, and it is `done` then.
CREATE TABLE risk_holds (
    id          TEXT PRIMARY KEY,
    created_at  BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    key_id      TEXT,
    tenant_id   TEXT NOT NULL,
    target_kind TEXT NOT NULL,
    target_id   TEXT NOT NULL,
    count       BIGINT NOT NULL,
    rule        TEXT NOT NULL,
    breaker     TEXT NOT NULL,
    state       TEXT NOT NULL,
    decided_at  BIGINT,
    decided_by  TEXT
);
CREATE UNIQUE INDEX risk_holds_open ON risk_holds (target_kind, target_id) WHERE state <> 'done';
