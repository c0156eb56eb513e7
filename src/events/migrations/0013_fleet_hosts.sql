-- The fleet of enrolled hosts is a fold of the enrolment facts in the host streams
-- (src/events/projections/fleet-hosts.ts): reading the fleet reads only those events, in the
-- global order, whatever else the host streams hold.
CREATE INDEX events_enrolment ON events (transaction_id, global_position)
  WHERE type IN ('JoinTokenIssued', 'HostEnrolled', 'HostCertificateRenewed', 'HostLabelsChanged', 'HostRetired');
