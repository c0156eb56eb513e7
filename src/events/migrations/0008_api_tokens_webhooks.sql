-- API tokens: who may act through the HTTP API, and with which role. Only a token's sha256 is kept
-- (a token is 256 random bits, so a plain hash cannot be reversed or guessed); TokenCreated and
-- TokenRevoked events in the token's access-<name> stream record the same facts, hash-chained, in
-- the same transaction. A revoked name may be given a new token later (the row is reused).
CREATE TABLE api_tokens (
  name text PRIMARY KEY,
  role text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
  token_sha256 bytea NOT NULL CHECK (length(token_sha256) = 32),
  created_at timestamptz NOT NULL,
  created_by text NOT NULL,
  revoked_at timestamptz,
  revoked_by text,
  CONSTRAINT api_tokens_sha256_key UNIQUE (token_sha256)
);

-- Webhook notifications: the outbox. A row is written in the same transaction as the rollout
-- event it announces (so no event is recorded without its notification, and none is announced
-- that was not recorded), and delivered in id order per rollout by the webhook delivery workflow.
CREATE TABLE webhook_outbox (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  rollout_id text NOT NULL,
  event_id uuid NOT NULL,
  url text NOT NULL,
  event_type text NOT NULL,
  body jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  delivered_at timestamptz,
  attempts integer NOT NULL DEFAULT 0,
  last_error text,
  CONSTRAINT webhook_outbox_event_key UNIQUE (event_id, url)
);
CREATE INDEX webhook_outbox_pending ON webhook_outbox (rollout_id, id) WHERE delivered_at IS NULL;

-- Every delivery attempt: when, what the receiver answered (or why it could not), how long it took.
CREATE TABLE webhook_attempts (
  outbox_id bigint NOT NULL REFERENCES webhook_outbox (id),
  attempt integer NOT NULL CHECK (attempt > 0),
  at timestamptz NOT NULL DEFAULT now(),
  http_status integer,
  error text,
  duration_ms integer NOT NULL,
  PRIMARY KEY (outbox_id, attempt)
);
