-- What a rollout needs to restore every host it touched (issue: "a rollback that always restores").
-- Written once per host, just before the rollout's first change on it (first write wins, so a
-- retried or re-run step never overwrites the true former state with an intermediate one).
ALTER TABLE rollout_targets
  -- the applied stack the host had before this rollout changed anything, bottom first ([{name, buildId}])
  ADD COLUMN former_stack jsonb,
  -- every payload loaded before (name, buildId, state): ours that were already there are not unloaded
  ADD COLUMN former_loaded jsonb,
  -- what the plan's verify function returned before ({kind, value} or {kind: 'undefined', why})
  ADD COLUMN former_result jsonb,
  -- when the rollout first touched the host (null: never touched, nothing to restore)
  ADD COLUMN touched_at timestamptz,
  -- the last restore's verdict: restored | incomplete (with the reason and the stack left)
  ADD COLUMN restore jsonb;

-- rollbacks page through the hosts a rollout touched, by host id
CREATE INDEX rollout_targets_touched ON rollout_targets (rollout_id, host_id) WHERE touched_at IS NOT NULL;
