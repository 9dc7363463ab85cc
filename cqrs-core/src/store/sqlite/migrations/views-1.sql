-- Views and checkpoints. Stores made before the views had their own
-- migrations created these tables in the event store's migration 2.
CREATE TABLE IF NOT EXISTS {p}views (
    projection TEXT NOT NULL,
    view_id TEXT NOT NULL,
    document TEXT NOT NULL,
    PRIMARY KEY (projection, view_id)
);
CREATE TABLE IF NOT EXISTS {p}checkpoints (
    processor TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
