-- What an IDC's cluster needs beyond its kubeconfig context: the RuntimeClass of rich containers
-- there, and the address its ssh NodePorts are reached at from outside.
ALTER TABLE idcs ADD COLUMN rich_runtime_class TEXT;
ALTER TABLE idcs ADD COLUMN ssh_ingress_host TEXT;
