package main

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

// initialSyncResult is what the initial-sync phase measured.
type initialSyncResult struct {
	samples  []time.Duration // sorted
	rooms    int             // joined rooms in the last response, as a sanity check
	messages int             // timeline messages in the last response
}

// measureInitialSync gives a fresh user rooms×messages of history — a second user creates
// the rooms, the first joins them, then the second sends the messages — and times runs
// initial /sync requests (no since, default filter) of the first user, each from request to
// decoded response.
func measureInitialSync(ctx context.Context, c *client, runID string, rooms, messages, runs int) (*initialSyncResult, error) {
	reader, err := c.register(ctx, "load"+runID+"_initial", "load-password-"+runID)
	if err != nil {
		return nil, err
	}
	creator, err := c.register(ctx, "load"+runID+"_creator", "load-password-"+runID)
	if err != nil {
		return nil, err
	}
	roomIDs := make([]string, rooms)
	// One room at a time: in room version 12 the room ID is the hash of the create event, so
	// one creator making two rooms within the same millisecond would ask for the same ID.
	if err := parallel(ctx, 1, rooms, func(ctx context.Context, r int) error {
		id, err := c.createRoom(ctx, creator, fmt.Sprintf("initial sync room %d", r))
		if err != nil {
			return err
		}
		roomIDs[r] = id
		return c.join(ctx, reader, id)
	}); err != nil {
		return nil, fmt.Errorf("initial-sync rooms: %w", err)
	}
	if err := parallel(ctx, 8, rooms*messages, func(ctx context.Context, k int) error {
		r, m := k%rooms, k/rooms
		body := "history " + strconv.Itoa(m) + " of room " + strconv.Itoa(r)
		return c.sendText(ctx, creator, roomIDs[r], "initial-"+strconv.Itoa(k), body)
	}); err != nil {
		return nil, fmt.Errorf("initial-sync messages: %w", err)
	}

	result := &initialSyncResult{}
	for range runs {
		reqCtx, cancel := context.WithTimeout(ctx, requestTimeout)
		start := time.Now()
		resp, err := c.sync(reqCtx, reader, "", 0, "")
		elapsed := time.Since(start)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("initial sync: %w", err)
		}
		result.samples = append(result.samples, elapsed)
		result.rooms = len(resp.Rooms.Join)
		result.messages = 0
		for _, room := range resp.Rooms.Join {
			for _, ev := range room.Timeline.Events {
				if ev.Type == "m.room.message" {
					result.messages++
				}
			}
		}
	}
	result.samples = sortedCopy(result.samples)
	return result, nil
}
