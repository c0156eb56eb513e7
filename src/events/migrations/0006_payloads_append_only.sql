-- Stored payload bytes are facts like events: never changed, never removed. A build-id names one
-- payload for good, and PayloadStored (hash-chained) records its sha256 and size; this refuses
-- changing or deleting a row by accident. A superuser can disable the trigger; `fleetpatch audit
-- verify` then re-hashes every stored payload against its PayloadStored event and finds what was
-- done, and every read for an upload or a restore checks the bytes against that digest first.
CREATE FUNCTION payloads_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'the payload store is append-only: % on payloads is refused', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER payloads_append_only BEFORE UPDATE OR DELETE ON payloads
  FOR EACH ROW EXECUTE FUNCTION payloads_append_only();
CREATE TRIGGER payloads_no_truncate BEFORE TRUNCATE ON payloads
  FOR EACH STATEMENT EXECUTE FUNCTION payloads_append_only();
