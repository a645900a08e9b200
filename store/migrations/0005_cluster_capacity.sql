-- What an IDC sells comes from its cluster. `bound_*` is the fleet file's figure, an upper bound;
-- `total_*` (what the ledger's conditional updates check) becomes what the cluster was last read to
-- offer within it, and nothing until it is read. `cluster_*` is the allocatable of its schedulable
-- Ready nodes, `foreign_*` what Pods the platform does not own request there, `node_shapes` the
-- rooms of its nodes (`cpu/memory/gpu` triples joined by `,`), `capacity_read_at` when it was read.
ALTER TABLE idcs ADD COLUMN bound_cpu BIGINT NOT NULL DEFAULT 0;
ALTER TABLE idcs ADD COLUMN bound_memory BIGINT NOT NULL DEFAULT 0;
ALTER TABLE idcs ADD COLUMN bound_gpu BIGINT NOT NULL DEFAULT 0;
UPDATE idcs SET bound_cpu = total_cpu, bound_memory = total_memory, bound_gpu = total_gpu;
UPDATE idcs SET total_cpu = 0, total_memory = 0, total_gpu = 0;
ALTER TABLE idcs ADD COLUMN headroom_percent BIGINT NOT NULL DEFAULT 0;
ALTER TABLE idcs ADD COLUMN cluster_nodes BIGINT;
ALTER TABLE idcs ADD COLUMN cluster_schedulable_nodes BIGINT;
ALTER TABLE idcs ADD COLUMN cluster_cpu BIGINT;
ALTER TABLE idcs ADD COLUMN cluster_memory BIGINT;
ALTER TABLE idcs ADD COLUMN cluster_gpu BIGINT;
ALTER TABLE idcs ADD COLUMN foreign_cpu BIGINT;
ALTER TABLE idcs ADD COLUMN foreign_memory BIGINT;
ALTER TABLE idcs ADD COLUMN foreign_gpu BIGINT;
ALTER TABLE idcs ADD COLUMN node_shapes TEXT;
ALTER TABLE idcs ADD COLUMN capacity_read_at BIGINT;

-- An instance whose object the cluster has not started by its batch's create timeout is failed
-- with the cluster's reason. `create_deadline` is set when the instance turns `creating`.
ALTER TABLE batches ADD COLUMN create_timeout_ms BIGINT NOT NULL DEFAULT 120000;
ALTER TABLE instances ADD COLUMN create_deadline BIGINT;
