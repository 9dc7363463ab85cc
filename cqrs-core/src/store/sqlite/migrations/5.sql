-- Tags, for event queries across streams (consistency boundaries): one
-- row per tag of each tagged event; an untagged event has none.
CREATE TABLE {p}event_tags (
    tag TEXT NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (tag, position)
) WITHOUT ROWID;
