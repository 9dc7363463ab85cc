-- The log and snapshots.
CREATE TABLE {p}events (
        position INTEGER NOT NULL UNIQUE,
        aggregate_type TEXT NOT NULL,
        aggregate_id TEXT NOT NULL,
        sequence INTEGER NOT NULL,
        event_id BLOB NOT NULL UNIQUE,
        event_name TEXT NOT NULL,
        event_version INTEGER NOT NULL,
        recorded_at INTEGER NOT NULL,
        metadata TEXT NOT NULL,
        payload TEXT NOT NULL,
        PRIMARY KEY (aggregate_type, aggregate_id, sequence)
    );
    CREATE TABLE {p}snapshots (
        aggregate_type TEXT NOT NULL,
        aggregate_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        schema_version INTEGER NOT NULL,
        state TEXT NOT NULL,
        taken_at INTEGER NOT NULL,
        PRIMARY KEY (aggregate_type, aggregate_id)
    );
