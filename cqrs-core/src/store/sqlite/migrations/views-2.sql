-- One word for the read side: a view's serialized state, like a snapshot's.
ALTER TABLE {p}views RENAME COLUMN document TO state;
