package federation

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

func TestSplitToDevice(t *testing.T) {
	big := json.RawMessage(`{"body":"` + strings.Repeat("x", 30*1024) + `"}`)
	messages := map[string]map[string]json.RawMessage{
		"@a:remote": {"D1": big, "D2": big, "D3": json.RawMessage(`{}`)},
		"@b:remote": {"*": big},
	}
	chunks := splitToDevice(messages)
	if len(chunks) < 2 {
		t.Fatalf("%d chunks, want the messages split", len(chunks))
	}
	seen := 0
	for _, chunk := range chunks {
		size := 0
		for u, devices := range chunk {
			for d, content := range devices {
				if string(messages[u][d]) != string(content) {
					t.Fatalf("message for %s %s changed", u, d)
				}
				size += len(content)
				seen++
			}
		}
		if size > maxToDeviceEDUSize {
			t.Fatalf("chunk of %d bytes", size)
		}
	}
	if seen != 4 {
		t.Fatalf("%d messages in the chunks, want 4", seen)
	}
	if got := splitToDevice(nil); len(got) != 0 {
		t.Fatalf("no messages make %d chunks", len(got))
	}
}

func TestGroupByServer(t *testing.T) {
	got := groupByServer("ours.example", map[string][]string{
		"@a:one.example": nil, "@b:one.example": {"D"}, "@c:two.example:8448": nil, "@me:ours.example": nil, "not-a-user": nil,
	})
	if len(got) != 2 || len(got["one.example"]) != 2 || len(got["two.example:8448"]) != 1 {
		t.Fatalf("grouped: %v", got)
	}
}

func TestServerFailure(t *testing.T) {
	remote := fmt.Errorf("wrapped: %w", &RemoteError{Status: http.StatusForbidden, ErrCode: "M_FORBIDDEN", Message: "no"})
	if f := serverFailure(remote); f["status"] != http.StatusForbidden {
		t.Fatalf("remote error: %v", f)
	}
	if f := serverFailure(context.DeadlineExceeded); f["status"] != http.StatusServiceUnavailable || f["message"] != "The server did not answer in time" {
		t.Fatalf("timeout: %v", f)
	}
}

func TestDigestSeparatesParts(t *testing.T) {
	if digest([]byte("ab"), []byte("c")) == digest([]byte("a"), []byte("bc")) {
		t.Fatal("digest does not separate its parts")
	}
	if digest([]byte("k"), nil) != digest([]byte("k"), []byte{}) {
		t.Fatal("an absent part differs from an empty one")
	}
}
