-- Times are UTC milliseconds since the epoch; resources are milli-vCPU, MiB and whole GPUs.

CREATE TABLE tenants (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    max_cpu         BIGINT,
    max_instances   BIGINT,
    rate_per_second BIGINT,
    used_cpu        BIGINT NOT NULL DEFAULT 0,
    used_instances  BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    CHECK (used_cpu >= 0 AND used_instances >= 0)
);

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT REFERENCES tenants (id),
    is_admin   BIGINT NOT NULL,
    key_hash   TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT,
    CHECK (is_admin = 1 OR tenant_id IS NOT NULL)
);

-- One row per IDC, carrying its line of the capacity ledger.
CREATE TABLE idcs (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    region       TEXT NOT NULL,
    province     TEXT NOT NULL,
    city         TEXT NOT NULL,
    carriers     TEXT NOT NULL,
    runtimes     TEXT NOT NULL,
    status       TEXT NOT NULL,
    kube_context TEXT,
    total_cpu    BIGINT NOT NULL,
    total_memory BIGINT NOT NULL,
    total_gpu    BIGINT NOT NULL,
    reserved_cpu    BIGINT NOT NULL DEFAULT 0,
    reserved_memory BIGINT NOT NULL DEFAULT 0,
    reserved_gpu    BIGINT NOT NULL DEFAULT 0,
    allocated_cpu    BIGINT NOT NULL DEFAULT 0,
    allocated_memory BIGINT NOT NULL DEFAULT 0,
    allocated_gpu    BIGINT NOT NULL DEFAULT 0,
    updated_at   BIGINT NOT NULL,
    CHECK (reserved_cpu >= 0 AND reserved_memory >= 0 AND reserved_gpu >= 0),
    CHECK (allocated_cpu >= 0 AND allocated_memory >= 0 AND allocated_gpu >= 0)
);

CREATE TABLE reservations (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    state      TEXT NOT NULL,
    count      BIGINT NOT NULL,
    cpu        BIGINT NOT NULL,
    memory     BIGINT NOT NULL,
    gpu        BIGINT NOT NULL,
    runtime    TEXT NOT NULL,
    request    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    ends_at    BIGINT NOT NULL,
    ended_at   BIGINT,
    updated_at BIGINT NOT NULL
);
CREATE INDEX reservations_by_tenant ON reservations (tenant_id, id);
CREATE INDEX reservations_due ON reservations (state, ends_at);

-- Where a reservation holds its capacity: `count` slots per IDC, `used` of them drawn by batches.
CREATE TABLE reservation_slots (
    reservation_id TEXT NOT NULL REFERENCES reservations (id),
    idc_id         TEXT NOT NULL REFERENCES idcs (id),
    carrier        TEXT NOT NULL,
    count          BIGINT NOT NULL,
    used           BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (reservation_id, idc_id),
    CHECK (used >= 0 AND used <= count)
);

CREATE TABLE batches (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    state           TEXT NOT NULL,
    count           BIGINT NOT NULL,
    cpu             BIGINT NOT NULL,
    memory          BIGINT NOT NULL,
    gpu             BIGINT NOT NULL,
    runtime         TEXT NOT NULL,
    image           TEXT NOT NULL,
    request         TEXT NOT NULL,
    placement       TEXT NOT NULL,
    labels          TEXT NOT NULL,
    reservation_id  TEXT REFERENCES reservations (id),
    idempotency_key TEXT,
    request_hash    TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT,
    ended_at        BIGINT,
    CONSTRAINT batches_idempotency_key UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX batches_by_tenant ON batches (tenant_id, id);
CREATE INDEX batches_due ON batches (state, expires_at);

CREATE TABLE batch_labels (
    batch_id TEXT NOT NULL REFERENCES batches (id),
    key      TEXT NOT NULL,
    value    TEXT NOT NULL,
    PRIMARY KEY (batch_id, key)
);
CREATE INDEX batch_labels_by_value ON batch_labels (key, value);

CREATE TABLE instances (
    id             TEXT PRIMARY KEY,
    batch_id       TEXT NOT NULL REFERENCES batches (id),
    tenant_id      TEXT NOT NULL REFERENCES tenants (id),
    state          TEXT NOT NULL,
    cpu            BIGINT NOT NULL,
    memory         BIGINT NOT NULL,
    gpu            BIGINT NOT NULL,
    runtime        TEXT NOT NULL,
    idc_id         TEXT NOT NULL REFERENCES idcs (id),
    region         TEXT NOT NULL,
    province       TEXT NOT NULL,
    city           TEXT NOT NULL,
    carrier        TEXT NOT NULL,
    reservation_id TEXT REFERENCES reservations (id),
    ip             TEXT,
    ssh_host       TEXT,
    ssh_port       BIGINT,
    ssh_user       TEXT,
    failure_reason TEXT,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    started_at     BIGINT,
    ended_at       BIGINT
);
CREATE INDEX instances_by_tenant ON instances (tenant_id, id);
CREATE INDEX instances_by_batch ON instances (batch_id, id);
CREATE INDEX instances_by_idc ON instances (idc_id, state);
