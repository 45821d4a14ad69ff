package storage

import "context"

// MoveRoomDirectory hands what the directory holds of an upgraded room to its replacement
// (client-server API "Room Upgrades", server behaviour step 4, "Moves any local aliases to
// the new room"): every local alias of oldRoomID points to newRoomID afterwards, and if
// oldRoomID was published in the room directory, newRoomID is published in its place
// (NOTSPEC: the spec says nothing of the directory; Synapse moves the publication too). It
// returns the aliases it moved. One transaction: either all of it happens or none.
func MoveRoomDirectory(ctx context.Context, db *DB, oldRoomID, newRoomID string) ([]string, error) {
	var moved []string
	err := db.WithTx(ctx, func(tx *Tx) error {
		var err error
		if moved, err = AliasesOfRoom(ctx, tx, oldRoomID); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE room_aliases SET room_id = $1 WHERE room_id = $2`, newRoomID, oldRoomID); err != nil {
			return err
		}
		public, err := RoomIsPublic(ctx, tx, oldRoomID)
		if err != nil || !public {
			return err
		}
		if err := SetRoomPublic(ctx, tx, oldRoomID, false); err != nil {
			return err
		}
		return SetRoomPublic(ctx, tx, newRoomID, true)
	})
	return moved, err
}
