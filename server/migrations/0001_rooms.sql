-- Rooms, mirroring seed 000's SALAS table (codigo_sala, id_maestro, current_song_id,
-- current_position, is_playing, estado), extended with what a timing vector needs.
-- Written in the common subset of SQLite and PostgreSQL: one schema for both.
CREATE TABLE rooms (
    code            TEXT PRIMARY KEY,           -- codigo_sala
    tenant          TEXT NOT NULL DEFAULT 'default',
    name            TEXT NOT NULL,
    host            TEXT,                       -- id_maestro (session id)
    current_song_id TEXT,                       -- current_song_id
    current_song    TEXT,                       -- the song as JSON (title, provider, url, durationMs)
    position_ms     DOUBLE PRECISION NOT NULL,  -- current_position: the anchor position…
    anchor_time     DOUBLE PRECISION NOT NULL,  -- …at this server time (ms since the Unix epoch)
    is_playing      BOOLEAN NOT NULL,
    rate            DOUBLE PRECISION NOT NULL,
    rev             BIGINT NOT NULL,
    state           TEXT NOT NULL,              -- estado: 'open' | 'closed'
    queue           TEXT NOT NULL,              -- JSON array of queue items
    next_item       BIGINT NOT NULL,
    settings        TEXT NOT NULL,              -- JSON room settings
    created_at      DOUBLE PRECISION NOT NULL,
    updated_at      DOUBLE PRECISION NOT NULL
);

CREATE INDEX rooms_state ON rooms (state);
