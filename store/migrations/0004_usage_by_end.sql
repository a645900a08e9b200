-- Usage reads a tenant's instances that ran in its window: those still live and those that ended in
-- it or later. Keyed by the end, the current month's read skips the instances of earlier months,
-- which `instances_metered` (by start) steps over. It holds every column the read needs, so the
-- read is answered from the index alone: with `(tenant_id, ended_at)` only, PostgreSQL's estimates
-- still chose to scan the whole table for a tenant with a large share of it.
CREATE INDEX instances_metered_by_end ON instances (
    tenant_id, ended_at, started_at, id, batch_id, runtime, cpu, memory, gpu, carrier, region, province, city
);
