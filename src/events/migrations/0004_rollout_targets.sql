-- The rollout's work list: which host goes in which wave and step, in what order, and how it
-- ended. Written once by the preflight (idempotently), updated as each host finishes. Rollout
-- workflows page through it instead of carrying host lists in their Temporal history.
CREATE TABLE rollout_preflights (
  rollout_id text PRIMARY KEY,
  summary jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE rollout_targets (
  rollout_id text NOT NULL REFERENCES rollout_preflights (rollout_id),
  host_id text NOT NULL,
  wave integer NOT NULL,
  step integer NOT NULL,
  position integer NOT NULL,
  grp text,
  -- what the preflight expects: apply | replace | unreachable
  assignment text NOT NULL CHECK (assignment IN ('apply', 'replace', 'unreachable')),
  build_ids text[] NOT NULL,
  -- planned | patched | already | failed, then after a rollback: rolled-back | nothing-to-do | stack-grew | rollback-failed
  status text NOT NULL DEFAULT 'planned',
  -- what this rollout applied on the host, bottom first ([{name, buildId}])
  applied jsonb NOT NULL DEFAULT '[]',
  -- REPLACE: the stack the replacement swapped out
  replaced_stack jsonb,
  failure jsonb,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (rollout_id, host_id)
);
CREATE UNIQUE INDEX rollout_targets_order ON rollout_targets (rollout_id, wave, step, position);
-- rollbacks page through the hosts a rollout patched, by host id
CREATE INDEX rollout_targets_patched ON rollout_targets (rollout_id, host_id) WHERE jsonb_array_length(applied) > 0;
