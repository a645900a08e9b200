-- The price catalogue: integer micro-units of currency per vCPU-second, GiB-second and GPU-second, by
-- runtime and area/carrier tier (unset levels match everything), each version in force from
-- `effective_from` (UTC ms) until a later version of the same tier.
CREATE TABLE prices (
    id             TEXT PRIMARY KEY,
    runtime        TEXT NOT NULL,
    region         TEXT,
    province       TEXT,
    city           TEXT,
    carrier        TEXT,
    effective_from BIGINT NOT NULL,
    cpu_micros     BIGINT NOT NULL,
    memory_micros  BIGINT NOT NULL,
    gpu_micros     BIGINT NOT NULL,
    created_at     BIGINT NOT NULL,
    CHECK (cpu_micros >= 0 AND memory_micros >= 0 AND gpu_micros >= 0)
);
CREATE UNIQUE INDEX prices_one_version_per_moment ON prices (
    runtime, COALESCE(region, ''), COALESCE(province, ''), COALESCE(city, ''), COALESCE(carrier, ''),
    effective_from
);

-- Every runtime has a base price from the beginning of time, so nothing that runs is ever unpriced.
INSERT INTO prices (id, runtime, effective_from, cpu_micros, memory_micros, gpu_micros, created_at) VALUES
    ('base-container', 'container', 0, 40, 5, 1500, 0),
    ('base-rich', 'rich', 0, 48, 6, 1800, 0),
    ('base-vm', 'vm', 0, 52, 7, 1900, 0);

-- Final invoices, never rewritten: one per tenant and month once the month and its grace period are
-- over. `lines` holds the invoice's lines (usage and adjustments) as JSON.
CREATE TABLE invoices (
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    period       TEXT NOT NULL,
    finalized_at BIGINT NOT NULL,
    total_micros BIGINT NOT NULL,
    lines        TEXT NOT NULL,
    PRIMARY KEY (tenant_id, period)
);

-- Usage reads a tenant's instances that ran in a window.
CREATE INDEX instances_metered ON instances (tenant_id, started_at);
