-- The log head is a position: a head edited below 0 would make appends
-- commit rows at positions no reader takes.
ALTER TABLE {p}log_head ADD CONSTRAINT {p}log_head_in_range CHECK (position >= 0);
