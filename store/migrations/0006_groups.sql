-- Autoscaled groups. `template`, `placement` and `policy` are the group's own JSON; `generation`
-- goes up with every change its tenant makes, `revision` with every write (the scaler's too), and
-- every scaling write is conditional on the revision it was decided from. `status` is what the last tick saw and decided (JSON), and
-- `load_history` the load policy's memory (recent recommendations and scale events, JSON).
CREATE TABLE groups (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    name         TEXT NOT NULL,
    state        TEXT NOT NULL,
    template     TEXT NOT NULL,
    placement    TEXT NOT NULL,
    policy       TEXT NOT NULL,
    generation   BIGINT NOT NULL,
    revision     BIGINT NOT NULL,
    status       TEXT NOT NULL,
    load_history TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    deleted_at   BIGINT
);
CREATE INDEX groups_by_tenant ON groups (tenant_id, id);
CREATE INDEX groups_by_state ON groups (state, id);

-- A group grows by batches of its own; their instances are the group's.
ALTER TABLE batches ADD COLUMN group_id TEXT REFERENCES groups (id);
CREATE INDEX batches_by_group ON batches (group_id, state);

-- Every decision a group's scaler made, in order (ids are time-ordered).
CREATE TABLE group_events (
    id         TEXT PRIMARY KEY,
    group_id   TEXT NOT NULL REFERENCES groups (id),
    at         BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    current    BIGINT NOT NULL,
    desired    BIGINT NOT NULL,
    message    TEXT NOT NULL,
    details    TEXT NOT NULL
);
CREATE INDEX group_events_by_group ON group_events (group_id, id);

-- The last CPU use the cluster reported for each instance (milli-vCPU), and when it measured it.
CREATE TABLE instance_samples (
    instance_id TEXT PRIMARY KEY,
    cpu         BIGINT NOT NULL,
    sampled_at  BIGINT NOT NULL
);

-- The last value of a group's custom metric pushed by its tenant: per instance, or for the whole
-- group under the instance id '' (every instance without a value of its own reports it).
CREATE TABLE group_metric_samples (
    group_id    TEXT NOT NULL REFERENCES groups (id),
    instance_id TEXT NOT NULL,
    value       DOUBLE PRECISION NOT NULL,
    sampled_at  BIGINT NOT NULL,
    PRIMARY KEY (group_id, instance_id)
);

-- A tenant names each of its active groups once.
CREATE UNIQUE INDEX groups_active_name ON groups (tenant_id, name) WHERE state = 'active';
