-- The stream registry: every stream the store ever opened, in the order it opened them, in a hash
-- chain of its own. A stream's chain and its head prove what it holds, but only while its rows
-- exist: deleting a whole stream, its events and its head, left nothing to compare with. Its entry
-- here proves it existed, independently of its own rows, so `audit verify` names it.
--
-- An entry is written by the append that opens the stream (its first event), in the same
-- transaction: only appends that open streams write here, so the registry costs nothing per event.
-- link = sha256(utf8(hex(previous link) || ' ' || position || ' ' || hex(utf8(stream id)))), the
-- first from 32 zero bytes; src/events/hash-chain.ts (registryLink) computes the same.
CREATE TABLE stream_registry (
  registry_position bigint PRIMARY KEY CHECK (registry_position > 0),
  stream_id text NOT NULL,
  transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
  hash bytea NOT NULL CHECK (length(hash) = 32),
  CONSTRAINT stream_registry_stream_key UNIQUE (stream_id)
);

-- The registry's head: how many streams it holds and its last link. One row, updated by every
-- append that opens streams, under its row lock (which serialises openings, and only them).
CREATE TABLE stream_registry_head (
  only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
  registry_position bigint NOT NULL CHECK (registry_position >= 0),
  last_hash bytea NOT NULL CHECK (length(last_hash) = 32)
);
INSERT INTO stream_registry_head (registry_position, last_hash) VALUES (0, decode(repeat('00', 32), 'hex'));

CREATE FUNCTION stream_registry_link(previous bytea, at bigint, id text) RETURNS bytea
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  AS $$ SELECT sha256(convert_to(encode(previous, 'hex') || ' ' || at::text || ' ' || encode(convert_to(id, 'UTF8'), 'hex'), 'UTF8')) $$;

-- Registers the streams of `ids` not registered yet, in name order, and moves the head. Called by
-- the append that writes their first events (src/events/sql/append-events.ts). Under READ
-- COMMITTED each statement here takes a new snapshot, so after waiting for the head's lock it sees
-- every opening committed before.
CREATE FUNCTION register_streams(ids text[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  head_position bigint;
  head_hash bytea;
  s text;
  added boolean := false;
BEGIN
  SELECT h.registry_position, h.last_hash INTO head_position, head_hash FROM stream_registry_head h FOR UPDATE;
  FOR s IN
    SELECT DISTINCT u FROM unnest(ids) AS u
     WHERE NOT EXISTS (SELECT 1 FROM stream_registry r WHERE r.stream_id = u)
     ORDER BY u
  LOOP
    head_position := head_position + 1;
    head_hash := stream_registry_link(head_hash, head_position, s);
    INSERT INTO stream_registry (registry_position, stream_id, hash) VALUES (head_position, s, head_hash);
    added := true;
  END LOOP;
  IF added THEN
    UPDATE stream_registry_head SET registry_position = head_position, last_hash = head_hash;
  END IF;
END
$$;

-- Every stream the store holds now, events or head (one whose head is gone is registered too, so
-- verify reports its missing head rather than a missing registration).
SELECT register_streams(ARRAY(SELECT stream_id FROM streams UNION SELECT DISTINCT stream_id FROM events));

-- Registrations are facts like events: never changed, never removed; the head is never removed.
-- A superuser can disable these triggers; `audit verify` then finds the gap in the registry's
-- chain, or the stream whose registration is gone, or the head that no opening wrote.
CREATE FUNCTION stream_registry_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'the stream registry is append-only: % on % is refused', TG_OP, TG_TABLE_NAME
    USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER stream_registry_append_only BEFORE UPDATE OR DELETE ON stream_registry
  FOR EACH ROW EXECUTE FUNCTION stream_registry_append_only();
CREATE TRIGGER stream_registry_no_truncate BEFORE TRUNCATE ON stream_registry
  FOR EACH STATEMENT EXECUTE FUNCTION stream_registry_append_only();
CREATE TRIGGER stream_registry_head_kept BEFORE DELETE ON stream_registry_head
  FOR EACH ROW EXECUTE FUNCTION stream_registry_append_only();
CREATE TRIGGER stream_registry_head_no_truncate BEFORE TRUNCATE ON stream_registry_head
  FOR EACH STATEMENT EXECUTE FUNCTION stream_registry_append_only();
