-- Content-addressed payload bytes, keyed by the payload's own build-id. Workflows and events carry
-- build-ids and names; the bytes live only here.
CREATE TABLE payloads (
  build_id text PRIMARY KEY,
  name text NOT NULL,
  sha256 bytea NOT NULL CHECK (length(sha256) = 32),
  size integer NOT NULL CHECK (size > 0),
  bytes bytea NOT NULL,
  depends text,
  xen_depends text,
  signature bytea,
  signature_algorithm text,
  signature_key_id text,
  stored_at timestamptz NOT NULL DEFAULT now(),
  CHECK (length(bytes) = size),
  CHECK ((signature IS NULL) = (signature_algorithm IS NULL) AND (signature IS NULL) = (signature_key_id IS NULL))
);
CREATE INDEX payloads_sha256 ON payloads (sha256);
