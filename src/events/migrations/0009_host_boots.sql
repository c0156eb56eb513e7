-- Reboot-aware stacks: the boot identity fleetpatch last saw on each host. A live-patch stack is
-- lost on reboot; whenever fleetpatch reads a host (preflight, every host step, audit replay) and
-- its boot id differs from the one here, it records HostRebooted with the stack the record says
-- was lost, before anything else is decided for that host.
CREATE TABLE host_boots (
  host_id text PRIMARY KEY,
  boot_id text NOT NULL,
  booted_at timestamptz,
  seen_at timestamptz NOT NULL DEFAULT now()
);

-- The boot a rollout found the host in when it first changed it: a restore after a reboot knows
-- the former stack is gone with it.
ALTER TABLE rollout_targets ADD COLUMN touched_boot_id text;
