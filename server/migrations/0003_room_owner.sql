-- Room ownership (the "ownership record"): the node that applies a room's commands, and a
-- fencing epoch that grows with every change of owner. A room write names the owner and epoch
-- it holds; a write whose owner or epoch is no longer the row's is refused (a stale owner cannot
-- overwrite the room after losing it). Rooms stored before this migration have no owner: the
-- next node to start claims them.
ALTER TABLE rooms ADD COLUMN owner TEXT;
ALTER TABLE rooms ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;

CREATE INDEX rooms_owner ON rooms (state, owner);
