CREATE TABLE IF NOT EXISTS ballast_failover_entries (
    id BIGSERIAL PRIMARY KEY,
    queue TEXT NOT NULL,
    body BYTEA NOT NULL,
    enqueued_at BIGINT NOT NULL,
    visible_at BIGINT NOT NULL,
    deliveries INTEGER NOT NULL DEFAULT 0,
    lease_token TEXT,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS ballast_failover_entries_ready
    ON ballast_failover_entries (queue, visible_at, id);

CREATE TABLE IF NOT EXISTS ballast_failover_dead_letters (
    id BIGSERIAL PRIMARY KEY,
    queue TEXT NOT NULL,
    body BYTEA NOT NULL,
    topic TEXT NOT NULL,
    message_id TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    reason TEXT NOT NULL,
    first_failed_at BIGINT NOT NULL,
    dead_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS ballast_failover_dead_letters_queue
    ON ballast_failover_dead_letters (queue, id);
