-- Command ids, so a stream records each command once.
ALTER TABLE {p}events ADD COLUMN command_id BLOB;
CREATE INDEX {p}events_command ON {p}events (aggregate_type, aggregate_id, command_id)
    WHERE command_id IS NOT NULL;
