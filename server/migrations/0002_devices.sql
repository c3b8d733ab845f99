-- Devices (seed 003's App Players): registry, current state and a bounded state history,
-- scoped by tenant (seed 004's systemId). Snapshot images are kept gzip-compressed, base64
-- text so the schema stays in the common subset of SQLite and PostgreSQL.
CREATE TABLE devices (
    tenant      TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    name        TEXT NOT NULL,
    info        TEXT NOT NULL,              -- JSON: what player:register sent besides id and name
    state       TEXT NOT NULL,              -- JSON: the latest player:state
    rev         BIGINT NOT NULL,            -- increments on every stored state
    last_seen   DOUBLE PRECISION NOT NULL,  -- ms since the Unix epoch
    PRIMARY KEY (tenant, device_id)
);

CREATE TABLE device_history (
    tenant      TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    rev         BIGINT NOT NULL,
    at          DOUBLE PRECISION NOT NULL,
    state       TEXT NOT NULL,
    PRIMARY KEY (tenant, device_id, rev)
);

CREATE TABLE snapshots (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    at          DOUBLE PRECISION NOT NULL,
    mime        TEXT NOT NULL,
    bytes       BIGINT NOT NULL,            -- size before compression
    data        TEXT NOT NULL               -- base64 of the gzip-compressed image
);

CREATE INDEX snapshots_device ON snapshots (tenant, device_id, at);
