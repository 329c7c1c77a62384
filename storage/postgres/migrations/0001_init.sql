-- vaultd schema version 1 (docs/architecture.md, "A PostgreSQL backend").
-- Ids are COLLATE "C" so that ORDER BY id is byte order, as in bbolt.
CREATE TABLE tenants (
  id text COLLATE "C" PRIMARY KEY,
  record jsonb NOT NULL,
  revision bigint NOT NULL);

CREATE TABLE integrations (
  tenant_id text COLLATE "C" NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  id text COLLATE "C" NOT NULL,
  record jsonb NOT NULL,
  revision bigint NOT NULL,
  PRIMARY KEY (tenant_id, id));

CREATE TABLE connect_sessions (
  tenant_id text COLLATE "C" NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  id text COLLATE "C" NOT NULL,
  record jsonb NOT NULL,
  revision bigint NOT NULL,
  expires_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, id));

-- The one tenant-less lookup: link and state digests, unique across both.
CREATE TABLE connect_digests (
  digest bytea PRIMARY KEY CHECK (octet_length(digest) = 32),
  tenant_id text COLLATE "C" NOT NULL,
  id text COLLATE "C" NOT NULL,
  FOREIGN KEY (tenant_id, id) REFERENCES connect_sessions ON DELETE CASCADE);
CREATE INDEX connect_digests_session ON connect_digests (tenant_id, id);

-- data is text, not jsonb: the chain is verified over the bytes as written.
CREATE TABLE audit_events (
  seq bigint PRIMARY KEY,
  hash text NOT NULL,
  data text NOT NULL);

CREATE TABLE audit_meta (
  one boolean PRIMARY KEY DEFAULT true CHECK (one),
  head_seq bigint NOT NULL,
  head_hash text NOT NULL,
  anchor_seq bigint NOT NULL,
  anchor_hash text NOT NULL);
INSERT INTO audit_meta (head_seq, head_hash, anchor_seq, anchor_hash) VALUES
  (0, '0000000000000000000000000000000000000000000000000000000000000000',
   0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE offboarded_tenants (
  id text COLLATE "C" PRIMARY KEY,
  offboarded_at timestamptz NOT NULL DEFAULT now());

-- Platform level: no foreign key to tenants, they outlive their tenant.
CREATE TABLE revocations (
  id text COLLATE "C" PRIMARY KEY,
  record jsonb NOT NULL,
  revision bigint NOT NULL);

-- Times as (Unix seconds, nanoseconds): exact, so the due order matches
-- storage.CompareDeliveries to the nanosecond (timestamptz keeps microseconds).
CREATE TABLE webhook_deliveries (
  id text COLLATE "C" PRIMARY KEY,
  record jsonb NOT NULL,
  revision bigint NOT NULL,
  status text NOT NULL,
  next_attempt_s bigint NOT NULL,
  next_attempt_ns integer NOT NULL,
  updated_s bigint NOT NULL,
  updated_ns integer NOT NULL);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_s, next_attempt_ns, id);

CREATE TABLE webhook_meta (
  one boolean PRIMARY KEY DEFAULT true CHECK (one),
  cursor bigint NOT NULL DEFAULT 0);
INSERT INTO webhook_meta (cursor) VALUES (0);

-- Row-level security, the second wall behind the tenant_id in every
-- statement: each transaction sets vaultd.tenant (set_config(..., true)),
-- and a statement that forgot it sees no row of any tenant. FORCE makes it
-- apply to the owning role too; a superuser or BYPASSRLS role skips it, so
-- vaultd's role must be neither.
ALTER TABLE integrations ENABLE ROW LEVEL SECURITY;
ALTER TABLE integrations FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_scope ON integrations
  USING (tenant_id = current_setting('vaultd.tenant'))
  WITH CHECK (tenant_id = current_setting('vaultd.tenant'));
ALTER TABLE connect_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE connect_sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_scope ON connect_sessions
  USING (tenant_id = current_setting('vaultd.tenant'))
  WITH CHECK (tenant_id = current_setting('vaultd.tenant'));
