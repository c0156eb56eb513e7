-- Projections: state derived from events, rebuildable from zero at any time.

-- How far each projection has read, as a point in the global order.
CREATE TABLE projection_checkpoints (
  name text PRIMARY KEY,
  transaction_id xid8 NOT NULL,
  global_position bigint NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- The current state of each host: what is loaded, and the applied stack (bottom first).
CREATE TABLE host_stacks (
  host_id text PRIMARY KEY,
  hypervisor_build_id text,
  loaded jsonb NOT NULL,
  applied jsonb NOT NULL,
  anomalies jsonb NOT NULL,
  stream_position bigint NOT NULL,
  updated_at timestamptz NOT NULL
);

-- Where each payload is loaded or applied now (derived from host_stacks, written with it).
CREATE TABLE payload_placements (
  build_id text NOT NULL,
  host_id text NOT NULL,
  name text NOT NULL,
  state text NOT NULL CHECK (state IN ('CHECKED', 'APPLIED')),
  -- position in the applied stack, bottom = 0; null when only loaded
  stack_index integer,
  stack_height integer NOT NULL,
  PRIMARY KEY (build_id, host_id)
);
CREATE INDEX payload_placements_host ON payload_placements (host_id);

-- One row per rollout: status, waves, counts and decisions.
CREATE TABLE rollout_summaries (
  rollout_id text PRIMARY KEY,
  plan_name text,
  status text NOT NULL,
  started_at timestamptz,
  finished_at timestamptz,
  summary jsonb NOT NULL,
  stream_position bigint NOT NULL
);
CREATE INDEX rollout_summaries_started ON rollout_summaries (started_at DESC);
