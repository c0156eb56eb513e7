-- The append-only event store: one table of events, a head per stream.
--
-- Global order: a reader sees only events of transactions below pg_snapshot_xmin (every one of them
-- has committed or rolled back) and orders them by (transaction_id, global_position). An event that
-- becomes visible later always has a transaction id at or above that horizon, so it can never land
-- before a point a reader has passed. global_position alone is NOT that order: identity values are
-- taken at insert time, not commit time, and have gaps.
CREATE TABLE events (
  global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
  event_id uuid NOT NULL,
  stream_id text NOT NULL,
  stream_position bigint NOT NULL CHECK (stream_position > 0),
  type text NOT NULL,
  schema_version integer NOT NULL,
  occurred_at timestamptz NOT NULL,
  recorded_at timestamptz NOT NULL,
  actor jsonb NOT NULL,
  correlation jsonb NOT NULL,
  data jsonb NOT NULL,
  -- sha256(previous hash of the stream + canonical JSON of this event); see src/events/hash-chain.ts
  hash bytea NOT NULL CHECK (length(hash) = 32),
  CONSTRAINT events_event_id_key UNIQUE (event_id),
  CONSTRAINT events_stream_position_key UNIQUE (stream_id, stream_position)
);

-- readAll: the global order.
CREATE INDEX events_global_order ON events (transaction_id, global_position);

-- A host's outcomes recorded in rollout streams, for its timeline.
CREATE INDEX events_host_outcomes ON events ((data->>'hostId'), transaction_id, global_position)
  WHERE type IN ('HostPatchFinished', 'HostRollbackFinished');

-- Dependency checks: all of them, by payload, by outcome (by host: the host stream).
CREATE INDEX events_checks ON events (transaction_id, global_position) WHERE type = 'DependencyChecked';
CREATE INDEX events_checks_payload ON events ((data->'payload'->>'buildId'), transaction_id, global_position)
  WHERE type = 'DependencyChecked';
CREATE INDEX events_checks_outcome ON events ((data->>'outcome'), transaction_id, global_position)
  WHERE type = 'DependencyChecked';

-- Everything a rollout caused, wherever it was recorded.
CREATE INDEX events_rollout ON events ((correlation->>'rolloutId'), transaction_id, global_position)
  WHERE (correlation->>'rolloutId') IS NOT NULL;

-- Where a payload was (or is) applied: the hosts that ever applied it.
CREATE INDEX events_payload_applied ON events ((data->'payload'->>'buildId'), recorded_at)
  WHERE type IN ('PayloadApplied', 'PayloadReplaced');
CREATE INDEX events_drift ON events (stream_id) WHERE type = 'DriftDetected';

-- The head of each stream: its version and last hash (appends take an advisory lock per stream,
-- then read this row). Also how verify notices events deleted from the end of a stream.
CREATE TABLE streams (
  stream_id text PRIMARY KEY,
  stream_position bigint NOT NULL CHECK (stream_position > 0),
  last_hash bytea NOT NULL,
  -- recorded_at never goes backwards within a stream, so "as of a time" is a prefix of the stream.
  last_recorded_at timestamptz NOT NULL
);

-- Facts are never changed or removed by fleetpatch. This refuses it by accident; a superuser can
-- still disable the trigger, and then `fleetpatch audit verify` finds what was done.
CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'the event store is append-only: % on events is refused', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
  FOR EACH ROW EXECUTE FUNCTION events_append_only();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
  FOR EACH STATEMENT EXECUTE FUNCTION events_append_only();
