-- Version 1 of scale.trail_table (tests/scale_out/processors.rs): per
-- account stream, the events applied, the last sequence, how many came out
-- of sequence, and the version that built the row; one row per event
-- applied, keyed by its position, so an event applied twice fails.
CREATE TABLE scale_trail_v1 (
    account TEXT PRIMARY KEY,
    events BIGINT NOT NULL,
    last_sequence BIGINT NOT NULL,
    out_of_order BIGINT NOT NULL,
    built_by BIGINT NOT NULL
);

CREATE TABLE scale_trail_events_v1 (
    position BIGINT PRIMARY KEY
);
