package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/scrambledeggs/eggs/testserver"
)

// TestNoServerErrorForBadInput drives every route of the client listener (the client API
// and media), as a signed-in user with a room and an event of their own, with bodies that are
// not JSON, the wrong JSON types, out-of-range numbers and oversized strings, and with path
// parameters of the wrong shape. Bad input must get a Matrix error, never a 500.
func TestNoServerErrorForBadInput(t *testing.T) {
	testserver.Each(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomAliasName: "badinput"})
		sent, err := alice.SendMessageEvent(ctx, room.RoomID, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: "hi"})
		if err != nil {
			t.Fatal(err)
		}

		good := map[string]string{
			"roomId": room.RoomID.String(), "userId": alice.UserID.String(), "eventId": sent.EventID.String(),
			"roomIdOrAlias": room.RoomID.String(), "roomAlias": "#badinput:" + srv.ServerName, "serverName": srv.ServerName,
			"eventType": "m.room.message", "stateKey": "", "type": "org.example.data", "deviceId": alice.DeviceID.String(),
			"kind": "override", "ruleId": "org.example.rule", "tag": "u.work", "mediaId": "abcdef", "fileName": "f.txt",
			"relType": "m.thread", "sessionId": "s1", "filterId": "1", "protocol": "irc", "version": "1",
			"algorithm": "m.megolm.v1.aes-sha2", "networkId": "n", "appserviceId": "a", "idpId": "i",
		}
		weird := map[string]string{}
		for k := range good {
			weird[k] = "%00not valid%2F" + strings.Repeat("x", 300)
		}
		bodies := []string{
			``, `{`, `[]`, `"text"`, `null`, `{"a":1.5e999}`,
			`{"presence":1,"status_msg":[],"user_id":{},"room_id":7,"body":{},"msgtype":false,"membership":3,` +
				`"content":"x","auth":"x","device_keys":[],"one_time_keys":"x","timeout":-5,"limit":-1,"new_version":9,` +
				`"search_categories":[],"filter":7,"visibility":8,"displayname":{},"avatar_url":[],"reason":5,"actions":"x",` +
				`"enabled":"yes","pattern":5,"conditions":{},"kind":1,"app_id":5,"pushkey":{},"data":"x","topic":{},"name":[]}`,
			`{"text":"` + strings.Repeat("é", 70_000) + `"}`,
			`{"displayname":"a\u0000b","name":"\u0000","topic":"\u0000","device_id":"\u0000","visibility":"public",` +
				`"user_id":"@a\u0000:x","presence":"online","status_msg":"\u0000","reason":"\u0000","msgtype":"m.text","body":"\u0000"}`,
		}
		const badQuery = "?limit=-1&from=zz&dir=q&timeout=abc&ts=x&since=s-1&filter=%7B&version=abc&url=file:///etc/passwd" +
			"&width=-5&height=99999999&method=zz&%00=1"
		param := regexp.MustCompile(`\{(\w+)(:[^}]*)?\}`)
		client := &http.Client{}
		failures := 0
		err = chi.Walk(srv.Homeserver().ClientRouter(), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
			route = strings.ReplaceAll(route, "/*", "")
			if strings.HasSuffix(route, "/logout") || strings.HasSuffix(route, "/logout/all") ||
				strings.Contains(route, "/r0/") {
				return nil // logout would end the session the walk uses; r0 routes are the v3 handlers
			}
			for _, values := range []map[string]string{good, weird} {
				path := param.ReplaceAllStringFunc(route, func(m string) string {
					name := param.FindStringSubmatch(m)[1]
					v, ok := values[name]
					if !ok {
						v = "x"
					}
					return url.PathEscape(v)
				})
				if values["roomId"] == weird["roomId"] {
					path = strings.ReplaceAll(path, "%25", "%") // keep the raw escapes: bad on purpose
				}
				for i, body := range bodies {
					if (method == http.MethodGet || method == http.MethodDelete || values["roomId"] == weird["roomId"]) && i > 0 {
						break // bad bodies with good parameters; bad parameters once
					}
					queries := []string{badQuery}
					if i == 0 {
						queries = append(queries, "?timeout=0") // no long polls (/events, /sync)
					}
					for _, query := range queries {
						req, err := http.NewRequest(method, srv.URL+path+query, bytes.NewReader([]byte(body)))
						if err != nil {
							continue // a path the HTTP client refuses to send
						}
						req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
						req.Header.Set("Content-Type", "application/json")
						resp, err := client.Do(req)
						if err != nil {
							t.Errorf("%s %s: %v", method, path, err)
							failures++
							continue
						}
						answer, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
						resp.Body.Close()
						if resp.StatusCode >= 500 && resp.StatusCode != http.StatusBadGateway && resp.StatusCode != http.StatusGatewayTimeout {
							t.Errorf("%s %s%s with body %.40q: %d %s", method, route, query, body, resp.StatusCode, answer)
							failures++
						}
						if failures > 30 {
							return fmt.Errorf("too many failures")
						}
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}
