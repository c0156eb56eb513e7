-- The batch engine's source of truth (issue: "rollouts at the speed of the fleet").
--
-- rollout_targets is the work list: a batch claims a host by bumping its fence, and every later
-- write for that host (intent, outcome) is conditioned on that fence, so a batch that lost the
-- host to a retry (worker killed, heartbeat timeout, a second worker) can no longer record for it.
-- The claim is a lease: renewed while the batch works, claimable by anyone once it lapses.
ALTER TABLE rollout_targets
  ADD COLUMN fence integer NOT NULL DEFAULT 0,
  ADD COLUMN claimed_by text,
  ADD COLUMN lease_until timestamptz,
  -- intent, written durably before each hypervisor call: what the holder is about to do
  -- (e.g. 'upload <build-id>', 'apply <build-id>', 'restore'); a re-claim reconciles from it
  ADD COLUMN intent text,
  -- the stack the host must end with, fixed at the first change (first write wins)
  ADD COLUMN target_stack jsonb;

-- Claims walk a step's planned hosts in order.
CREATE INDEX rollout_targets_claim ON rollout_targets (rollout_id, wave, step, status, position);

-- Holds every batch of a rollout stops at before claiming its next host: a pause, an abort, or a
-- budget a batch found exceeded. Batches read it with every claim, so a hold takes effect within
-- one host's time on every worker.
CREATE TABLE rollout_control (
  rollout_id text PRIMARY KEY,
  hold text CHECK (hold IN ('paused', 'aborted', 'budget')),
  reason text,
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- A rollback's own work list (automatic, or asked for later): the hosts the rollout touched, each
-- claimed, fenced and leased like rollout_targets, with its outcome.
CREATE TABLE rollback_targets (
  rollback_id text NOT NULL,
  rollout_id text NOT NULL,
  host_id text NOT NULL,
  status text NOT NULL DEFAULT 'planned',
  fence integer NOT NULL DEFAULT 0,
  claimed_by text,
  lease_until timestamptz,
  result jsonb,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (rollback_id, host_id)
);
CREATE INDEX rollback_targets_claim ON rollback_targets (rollback_id, status, host_id);
