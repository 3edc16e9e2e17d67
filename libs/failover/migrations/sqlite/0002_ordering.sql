-- Ordered failover: an entry of an ordered partition carries its key (`topic/partition`);
-- a partition with entries (or dead letters) has a divert mark, which is also its drain
-- lease: one worker at a time leases a partition's head run.
ALTER TABLE ballast_failover_entries ADD COLUMN part_key TEXT;
-- A partition's head; and unordered entries due first, a range scan that never walks
-- the ordered ones (which stay due while they wait their turn).
CREATE INDEX IF NOT EXISTS ballast_failover_entries_part
    ON ballast_failover_entries (queue, part_key, id);
DROP INDEX IF EXISTS ballast_failover_entries_ready;
CREATE INDEX IF NOT EXISTS ballast_failover_entries_ready_unordered
    ON ballast_failover_entries (queue, visible_at, id) WHERE part_key IS NULL;

ALTER TABLE ballast_failover_dead_letters ADD COLUMN part_key TEXT;
-- The entry's id in the queue, so a redrive puts an ordered entry back at its place.
ALTER TABLE ballast_failover_dead_letters ADD COLUMN entry_id BIGINT;
CREATE INDEX IF NOT EXISTS ballast_failover_dead_letters_part
    ON ballast_failover_dead_letters (queue, part_key);

CREATE TABLE IF NOT EXISTS ballast_failover_diverts (
    queue TEXT NOT NULL,
    part_key TEXT NOT NULL,
    -- Bumped by every enqueue into the partition; a worker clears the mark only if it is
    -- still the generation it leased.
    gen BIGINT NOT NULL,
    -- Set when the mark is made, never changed: a gateway tells a mark made again
    -- (after a clear) from the one it saw before.
    epoch BIGINT NOT NULL,
    lease_token TEXT,
    leased_until BIGINT NOT NULL DEFAULT 0,
    lease_gen BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, part_key)
);
