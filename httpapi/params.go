package httpapi

import (
	"net/url"
	"strconv"
)

// TimestampQuery reads the ts and dir parameters of /timestamp_to_event (client-server and
// server-server API alike): ts in milliseconds since the epoch, dir "f" (forward) or "b".
func TimestampQuery(query url.Values) (ts int64, forward bool, err error) {
	if query.Get("ts") == "" {
		return 0, false, MissingParam("Missing ts")
	}
	if ts, err = strconv.ParseInt(query.Get("ts"), 10, 64); err != nil {
		return 0, false, InvalidParam("ts must be an integer")
	}
	switch query.Get("dir") {
	case "f":
		return ts, true, nil
	case "b":
		return ts, false, nil
	case "":
		return 0, false, MissingParam("Missing dir")
	}
	return 0, false, InvalidParam("dir must be f or b")
}
