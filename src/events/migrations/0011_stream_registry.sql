-- The stream registry: every stream the store ever opened, in the order it opened them, in hash
-- chains of its own (16, by stream id). A stream's chain and its head prove what it holds, but only while its rows
-- exist: deleting a whole stream, its events and its head, left nothing to compare with. Its entry
-- here proves it existed, independently of its own rows, so `audit verify` names it.
--
-- An entry is written by the append that opens the stream (its first event), in the same
-- transaction: only appends that open streams write here, so the registry costs nothing per event.
-- link = sha256(utf8(hex(previous link) || ' ' || position || ' ' || hex(utf8(stream id)))), the
-- first of each chain from 32 zero bytes; src/events/hash-chain.ts (registryLink) computes the same.
CREATE TABLE stream_registry (
  -- 16 chains, a stream's by the low bits of hashtext(stream id), so that appends opening streams
  -- at once mostly take different heads' locks.
  shard smallint NOT NULL CHECK (shard BETWEEN 0 AND 15),
  registry_position bigint NOT NULL CHECK (registry_position > 0),
  stream_id text NOT NULL,
  transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
  hash bytea NOT NULL CHECK (length(hash) = 32),
  PRIMARY KEY (shard, registry_position),
  CONSTRAINT stream_registry_stream_key UNIQUE (stream_id)
);

-- Each chain's head: how many streams it holds and its last link. Updated by the appends that
-- open its streams, under its row lock (which serialises those openings, and only them).
CREATE TABLE stream_registry_head (
  shard smallint PRIMARY KEY CHECK (shard BETWEEN 0 AND 15),
  registry_position bigint NOT NULL CHECK (registry_position >= 0),
  last_hash bytea NOT NULL CHECK (length(last_hash) = 32)
);
INSERT INTO stream_registry_head (shard, registry_position, last_hash)
  SELECT s, 0, decode(repeat('00', 32), 'hex') FROM generate_series(0, 15) AS s;

CREATE FUNCTION stream_registry_shard(id text) RETURNS smallint
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  AS $$ SELECT (hashtext(id) & 15)::smallint $$;

CREATE FUNCTION stream_registry_link(previous bytea, at bigint, id text) RETURNS bytea
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  AS $$ SELECT sha256(convert_to(encode(previous, 'hex') || ' ' || at::text || ' ' || encode(convert_to(id, 'UTF8'), 'hex'), 'UTF8')) $$;

-- Registers the streams of `ids` not registered yet, shard by shard in shard order (so two appends
-- never wait for each other's head locks the other way round), and moves those heads. Called by
-- the append that writes their first events (src/events/sql/append-events.ts), after the stream
-- locks: no append takes a stream lock while it holds a head's. Under READ COMMITTED each
-- statement here takes a new snapshot, so after waiting for a head's lock it sees every opening
-- committed before.
CREATE FUNCTION register_streams(ids text[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  r record;
  current_shard smallint := -1;
  head_position bigint;
  head_hash bytea;
  moved boolean := false;
BEGIN
  FOR r IN SELECT DISTINCT stream_registry_shard(u) AS shard, u AS id FROM unnest(ids) AS u ORDER BY 1, 2 LOOP
    IF r.shard <> current_shard THEN
      IF moved THEN
        UPDATE stream_registry_head SET registry_position = head_position, last_hash = head_hash WHERE shard = current_shard;
      END IF;
      SELECT h.registry_position, h.last_hash INTO head_position, head_hash FROM stream_registry_head h WHERE h.shard = r.shard FOR UPDATE;
      current_shard := r.shard;
      moved := false;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM stream_registry g WHERE g.stream_id = r.id) THEN
      head_position := head_position + 1;
      head_hash := stream_registry_link(head_hash, head_position, r.id);
      INSERT INTO stream_registry (shard, registry_position, stream_id, hash) VALUES (r.shard, head_position, r.id, head_hash);
      moved := true;
    END IF;
  END LOOP;
  IF moved THEN
    UPDATE stream_registry_head SET registry_position = head_position, last_hash = head_hash WHERE shard = current_shard;
  END IF;
END
$$;

-- Every stream the store holds now, events or head (one whose head is gone is registered too, so
-- verify reports its missing head rather than a missing registration).
SELECT register_streams(ARRAY(SELECT stream_id FROM streams UNION SELECT DISTINCT stream_id FROM events));

-- Registrations are facts like events: never changed, never removed; the head is never removed.
-- A superuser can disable these triggers; `audit verify` then finds the gap in a registry chain,
-- or the stream whose registration is gone, or a head that no opening wrote.
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
