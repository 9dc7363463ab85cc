-- The table of faults.ledger (tests/faults/ledger.rs): one row per event
-- applied, keyed by its position, so an event applied twice fails.
CREATE TABLE faults_ledger_v1 (
    position BIGINT PRIMARY KEY,
    account TEXT NOT NULL
);
