-- A claim (src/events/sql/claims.ts) reads a step's running hosts whose lease lapsed, then its
-- planned hosts, each in position order. The claim index of 0007, (rollout, wave, step, status,
-- position), serves that only while the planner believes it: autovacuum analyses the work list
-- right after the preflight fills it, when every host is planned, and with those statistics the
-- planner walked the step in position order (rollout_targets_order), filtering on status, past
-- every host already finished, on every claim. That was quadratic in the step's size: at 10,000
-- hosts about 10 ms of PostgreSQL's CPU per claim, most of the database's work in a rollout.
--
-- Partial indexes hold only the hosts a claim can take, so a claim reads a few entries whatever
-- the statistics say, and the hosts that finished leave them. They replace the claim indexes.
-- The same for a rollback's work list, whose primary key is in host order too.
CREATE INDEX rollout_targets_planned ON rollout_targets (rollout_id, wave, step, position) WHERE status = 'planned';
CREATE INDEX rollout_targets_running ON rollout_targets (rollout_id, wave, step, position) WHERE status = 'running';
DROP INDEX rollout_targets_claim;

CREATE INDEX rollback_targets_planned ON rollback_targets (rollback_id, host_id) WHERE status = 'planned';
CREATE INDEX rollback_targets_running ON rollback_targets (rollback_id, host_id) WHERE status = 'running';
DROP INDEX rollback_targets_claim;
