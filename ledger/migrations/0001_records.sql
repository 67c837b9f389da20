-- One row per settled request, partitioned by month of settlement. The
-- primary key includes the partition key (PostgreSQL requires it); a
-- record replayed carries its original time, so it meets itself.
CREATE TABLE aifirewall_ledger (
  request_id text NOT NULL,
  time timestamptz NOT NULL,
  user_id text NOT NULL,
  groups text[] NOT NULL,
  provider text NOT NULL,
  model text NOT NULL,
  billed_model text NOT NULL,
  endpoint text NOT NULL,
  prompt_tokens bigint NOT NULL,
  completion_tokens bigint NOT NULL,
  cached_tokens bigint NOT NULL,
  cache_write_tokens bigint NOT NULL,
  reasoning_tokens bigint NOT NULL,
  cost_nanos bigint NOT NULL,
  status integer NOT NULL,
  stream boolean NOT NULL,
  disconnected boolean NOT NULL,
  duration_ms bigint NOT NULL,
  budgets text[] NOT NULL,
  PRIMARY KEY (request_id, time)
) PARTITION BY RANGE (time);

CREATE INDEX aifirewall_ledger_time ON aifirewall_ledger (time);

-- The partition of the month starting at m, made if missing (replicas may
-- race: the lock serialises them).
CREATE FUNCTION aifirewall_ledger_partition(m timestamptz) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  name text := 'aifirewall_ledger_' || to_char(m AT TIME ZONE 'UTC', 'YYYY_MM');
BEGIN
  PERFORM pg_advisory_xact_lock(1634297463);
  EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF aifirewall_ledger FOR VALUES FROM (%L) TO (%L)',
    name, m, m + interval '1 month');
END $$;
