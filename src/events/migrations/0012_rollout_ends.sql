-- The rollouts whose end is not recorded (src/events/sql/unfinished-rollouts.ts): a worker looks
-- for them every minute, so finding them must not read every event of a large store.
CREATE INDEX events_rollout_ends ON events (stream_id) WHERE type IN ('RolloutStarted', 'RolloutFinished');
