-- The inboxes: the ids of the messages each inbox consumer handled or
-- parked, written in the batch that handled them, so a message delivered
-- again is not handled again.
CREATE TABLE {p}inbox (
    consumer TEXT NOT NULL,
    message_id TEXT NOT NULL,
    handled_at BIGINT NOT NULL,
    PRIMARY KEY (consumer, message_id)
);
CREATE INDEX {p}inbox_handled_at ON {p}inbox (consumer, handled_at);

-- A message an inbox parked, to handle again on a retry: no log holds it.
ALTER TABLE {p}parked_events ADD COLUMN message TEXT;
