package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/scrambledeggs/eggs/spec"
)

// Reading a send_join response (server-server API, PUT /_matrix/federation/v2/send_join)
// as a stream: its "state" and "auth_chain" arrays are read one event at a time and staged
// (join.go), so that no more than a batch of the response is held in memory however large
// the room.

// JoinFromStream stores a room joined over federation from the body of the resident
// server's send_join (v2) response to our join. Events that fail their checks are left out
// (a state event that fails leaves its tuple out of the state); events that do not parse
// are ignored, as a receiver of malformed PDUs does. When the response carries the resident
// server's copy of our join ("event", signed by it too for a restricted join), that copy is
// the one stored. It returns our stored join event.
func (s *Server) JoinFromStream(ctx context.Context, join *spec.Event, body io.Reader, keys spec.KeyLookup) (*Event, error) {
	j, err := s.beginJoin(ctx, join, keys)
	if err != nil {
		return nil, err
	}
	defer j.discard(ctx)
	signed, err := j.readSendJoin(ctx, body)
	if err != nil {
		return nil, fmt.Errorf("send_join response: %w", err)
	}
	if len(signed) > 0 {
		if ev, err := spec.ParseEvent(signed, join.Version()); err == nil && ev.EventID() == join.EventID() {
			j.join = ev
		}
	}
	return j.finish(ctx)
}

// readSendJoin reads a send_join response object, offering the events of "state" and
// "auth_chain" to the join as they come, and returns its "event" as sent. Other keys
// ("origin", "members_omitted", "servers_in_room") are skipped.
func (j *stagedJoin) readSendJoin(ctx context.Context, body io.Reader) (json.RawMessage, error) {
	dec := json.NewDecoder(body)
	if err := expectDelim(dec, '{'); err != nil {
		return nil, err
	}
	var event json.RawMessage
	for dec.More() {
		token, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, _ := token.(string)
		switch key {
		case "state", "auth_chain":
			if err := j.readPDUs(ctx, dec, key == "state"); err != nil {
				return nil, fmt.Errorf("%s: %w", key, err)
			}
		case "event":
			if err := dec.Decode(&event); err != nil {
				return nil, fmt.Errorf("event: %w", err)
			}
		default:
			var skipped json.RawMessage
			if err := dec.Decode(&skipped); err != nil {
				return nil, fmt.Errorf("%s: %w", key, err)
			}
		}
	}
	if err := expectDelim(dec, '}'); err != nil {
		return nil, err
	}
	return event, nil
}

// readPDUs reads an array of PDUs (null reads as empty) and offers each that parses.
func (j *stagedJoin) readPDUs(ctx context.Context, dec *json.Decoder, inState bool) error {
	token, err := dec.Token()
	if err != nil {
		return err
	}
	if token == nil {
		return nil
	}
	if token != json.Delim('[') {
		return errors.New("not an array of events")
	}
	rv := j.join.Version()
	// One buffer serves every element: ParseEvent keeps a canonical copy of its own.
	var raw json.RawMessage
	for dec.More() {
		if err := dec.Decode(&raw); err != nil {
			return err
		}
		if j.live {
			// Nothing is staged for a room live here already.
			if err := j.count(); err != nil {
				return err
			}
			continue
		}
		ev, err := spec.ParseEvent(raw, rv)
		if err != nil {
			// Counted all the same, so that junk cannot be sent without limit.
			if err := j.count(); err != nil {
				return err
			}
			continue
		}
		if err := j.offer(ctx, ev, inState); err != nil {
			return err
		}
	}
	return expectDelim(dec, ']')
}

// expectDelim reads the next token, which must be delim.
func expectDelim(dec *json.Decoder, delim json.Delim) error {
	token, err := dec.Token()
	if err != nil {
		return err
	}
	if token != delim {
		return fmt.Errorf("expected %q, found %v", delim, token)
	}
	return nil
}
