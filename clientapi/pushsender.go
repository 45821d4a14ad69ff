package clientapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/scrambledeggs/eggs/netguard"
	"github.com/scrambledeggs/eggs/push"
	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/storage"
)

// Delivery of push notifications to push gateways (client-server API "Push Notifications",
// "Server behaviour"; push gateway API "Homeserver behaviour", push_notifier.yaml).
//
// The push sender works off the send path, in two halves:
//
//   - follow reads the stream behind Current(): each new event in a room where a local
//     member has a pusher is evaluated against the push rules of each such member (not
//     its sender: "Homeservers MUST NOT notify the Push Gateway for events that the user
//     has sent themselves"), and each notification that results is queued for each of the
//     member's pushers set before the event, in the transaction that moves the sender's
//     stored position past the event. A restarted server resumes from that position, so
//     that no event is pushed twice or skipped; on the very first start it begins at the
//     current position. The stored position only moves from where it is, so that two
//     processes on one database do not both queue an event (their deliver halves are not
//     kept apart yet: both may send the same queued notification). Read receipts of
//     pushers' owners queue a badge update: the unread count alone.
//   - deliver posts the queue to the gateways, oldest first per pusher, one request per
//     notification and pusher. A gateway that fails (network error, 5xx, 429) is retried
//     with exponential backoff: "If the endpoint returns an HTTP error code, the homeserver
//     SHOULD retry for a reasonable amount of time using exponential backoff". Pushkeys the
//     gateway lists as rejected lose their pusher.

// Limits and timings of the push sender, NOTSPEC unless said otherwise.
const (
	// pushBatch bounds the events evaluated per step, and pushBadgeBatch the badge updates.
	pushBatch      = 100
	pushBadgeBatch = 1000
	// pushRequestTimeout bounds one request to a gateway, connection included.
	pushRequestTimeout = 10 * time.Second
	// maxGatewayResponse bounds what is read of a gateway's answer.
	maxGatewayResponse = 64 << 10
	// maxGatewayRedirects bounds the redirects followed, all to the gateway's own host.
	maxGatewayRedirects = 3
	// The backoff of a failing gateway, as Synapse's: 1 s doubling up to an hour; a
	// notification is given up after a day of failures ("so that if the URL gets fixed, we
	// don't suddenly deliver a load of old notifications").
	pushInitialBackoff = time.Second
	pushMaxBackoff     = time.Hour
	pushGiveUpAfter    = 24 * time.Hour
	// maxQueuedPerPusher bounds what waits for a failing gateway: the oldest go first.
	maxQueuedPerPusher = 1000
	// pushConcurrency bounds the requests in flight, over all gateways.
	pushConcurrency = 16
	// pushPositionFlush is how long a position with nothing queued may go unsaved: a
	// restart evaluates that stretch again, which queues nothing unless a pusher was set in
	// between.
	pushPositionFlush = time.Second
	// pushFollowInterval is how often the stream is looked at for new events: how long
	// after it was sent an event may wait to be evaluated.
	pushFollowInterval = 50 * time.Millisecond
	// pushErrorDelay is the pause after a database error; pushPoll the longest the
	// delivery half sleeps without being woken.
	pushErrorDelay = 5 * time.Second
	pushPoll       = time.Minute
	// pushOrphanSweep is how often notifications of pushers deleted with their device are
	// removed.
	pushOrphanSweep = time.Hour
	// maxBadgeCount caps the unread count sent (each room's is capped at maxUnreadCount).
	maxBadgeCount = 10_000
)

// SendPushes runs the push sender until ctx ends.
func (a *API) SendPushes(ctx context.Context) { a.newPushSender().run(ctx) }

// pushSender is the push sender of one server. Its timings are fields so that tests can
// shorten them.
type pushSender struct {
	a      *API
	client *http.Client

	initialBackoff, maxBackoff, giveUpAfter         time.Duration
	followInterval, errorDelay, positionFlush, poll time.Duration

	// persisted is the position stored in push_position, flushedAt when it was stored
	// (follow's own).
	persisted int64
	flushedAt time.Time

	wake     chan struct{} // wakes deliver: something was queued or finished
	mu       sync.Mutex
	inFlight map[int64]bool // pushers with a request in flight
	// lastBadge is the unread count last delivered to each pusher: a badge update that
	// would not change it is not sent (as Synapse).
	lastBadge *boundedMap[int64, int]
}

func (a *API) newPushSender() *pushSender {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 4
	transport.ResponseHeaderTimeout = pushRequestTimeout
	if !a.cfg.PrivatePushGatewaysAllowed() {
		// Users choose gateway URLs: none on this machine or its private network (NOTSPEC:
		// as Synapse's ip_range_blacklist for pushers), unless EGGS_PUSH_PRIVATE_GATEWAYS.
		transport.DialContext = netguard.Dialer(pushRequestTimeout).DialContext
	}
	return &pushSender{
		a: a,
		client: &http.Client{Transport: transport, Timeout: pushRequestTimeout,
			CheckRedirect: sameHostRedirect},
		initialBackoff: pushInitialBackoff, maxBackoff: pushMaxBackoff, giveUpAfter: pushGiveUpAfter,
		followInterval: pushFollowInterval, errorDelay: pushErrorDelay, positionFlush: pushPositionFlush, poll: pushPoll,
		wake:      make(chan struct{}, 1),
		inFlight:  map[int64]bool{},
		lastBadge: newBoundedMap[int64, int](maxPushRulesEntries),
	}
}

// sameHostRedirect follows a gateway's redirects only to the same host (and never from
// https to http): pusher URLs are chosen by clients, and a redirect elsewhere would let a
// gateway aim the server at any address. The redirect answer itself is taken otherwise.
func sameHostRedirect(req *http.Request, via []*http.Request) error {
	first := via[0].URL
	if len(via) > maxGatewayRedirects || req.URL.Host != first.Host || (first.Scheme == "https" && req.URL.Scheme != "https") {
		return http.ErrUseLastResponse
	}
	return nil
}

// run follows the stream and delivers until ctx ends.
func (s *pushSender) run(ctx context.Context) {
	var work sync.WaitGroup
	work.Go(func() { s.follow(ctx) })
	work.Go(func() { s.deliver(ctx) })
	work.Wait()
}

// wakeDelivery tells deliver to look at the queue again.
func (s *pushSender) wakeDelivery() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// pause waits d or until ctx ends, and reports whether ctx is still alive.
func pause(ctx context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// follow queues the notifications of the stream's events, from the stored position on.
func (s *pushSender) follow(ctx context.Context) {
	var pos int64
	for {
		var err error
		if pos, err = storage.InitPushPosition(ctx, s.a.db, s.a.rooms.Stream().Current()); err == nil {
			break
		}
		s.a.log.Warn("push: read the position", "err", err)
		if !pause(ctx, s.errorDelay) {
			return
		}
	}
	s.persisted, s.flushedAt = pos, time.Now()
	for ctx.Err() == nil {
		next, err := s.step(ctx, pos)
		if err != nil {
			if ctx.Err() == nil {
				s.a.log.Warn("push: evaluate events", "after", pos, "err", err)
				pause(ctx, s.errorDelay)
			}
			pos = next
			continue
		}
		if next != pos {
			pos = next
			continue
		}
		if s.persisted == pos {
			s.waitPast(ctx, pos, 0)
			continue
		}
		// Caught up with a position not yet saved: save it once the stream has rested.
		s.waitPast(ctx, pos, s.positionFlush)
		if ctx.Err() == nil && time.Since(s.flushedAt) >= s.positionFlush {
			if pos, err = s.save(ctx, pos, nil); err != nil && ctx.Err() == nil {
				s.a.log.Warn("push: save the position", "pos", pos, "err", err)
				pause(ctx, s.errorDelay)
			}
		}
	}
	if s.persisted != pos {
		saveCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		if _, err := s.save(saveCtx, pos, nil); err != nil {
			s.a.log.Warn("push: save the position", "pos", pos, "err", err)
		}
		cancel()
	}
}

// waitPast waits until the stream's current position passes pos, ctx ends or (unless it is
// 0) limit has passed. The stream wakes only the users it names, so it is polled, every
// followInterval: a mutex and a comparison.
func (s *pushSender) waitPast(ctx context.Context, pos int64, limit time.Duration) {
	stream := s.a.rooms.Stream()
	ticker := time.NewTicker(s.followInterval)
	defer ticker.Stop()
	var deadline <-chan time.Time
	if limit > 0 {
		timer := time.NewTimer(limit)
		defer timer.Stop()
		deadline = timer.C
	}
	for stream.Current() <= pos {
		select {
		case <-ctx.Done():
			return
		case <-deadline:
			return
		case <-ticker.C:
		}
	}
}

// save stores pos as the position, with the notifications queued up to it, and returns the
// position to go on from: pos, or when another process moved the stored position, that one
// (its work on the range stands, ours is dropped). On an error nothing was saved and the
// stored position is returned, to go on from there.
func (s *pushSender) save(ctx context.Context, pos int64, pushes []storage.QueuedPush) (int64, error) {
	trim := map[int64]bool{}
	for _, p := range pushes {
		trim[p.PusherID] = true
	}
	moved := false
	err := s.a.db.WithTx(ctx, func(tx *storage.Tx) error {
		ok, err := storage.AdvancePushPosition(ctx, tx, s.persisted, pos)
		if err != nil || !ok {
			moved = !ok
			return err
		}
		if err := storage.EnqueuePushes(ctx, tx, pushes); err != nil {
			return err
		}
		for pusherID := range trim {
			if err := storage.TrimPushQueue(ctx, tx, pusherID, maxQueuedPerPusher); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return s.persisted, err
	}
	if moved {
		stored, _, err := storage.PushPosition(ctx, s.a.db)
		if err != nil {
			return s.persisted, err
		}
		s.persisted = stored
		return stored, nil
	}
	s.persisted, s.flushedAt = pos, time.Now()
	if len(pushes) > 0 {
		s.wakeDelivery()
	}
	return pos, nil
}

// step evaluates the events after from (one batch, up to the stream's current position),
// queues their notifications and the badge updates of the receipts in that range, and
// returns the position reached.
func (s *pushSender) step(ctx context.Context, from int64) (int64, error) {
	to := s.a.rooms.Stream().Current()
	if to <= from {
		return from, nil
	}
	rows, err := storage.PushCandidateEvents(ctx, s.a.db, from, to, pushBatch)
	if err != nil {
		return from, err
	}
	if len(rows) == pushBatch {
		to = rows[len(rows)-1].StreamPos
	}
	events, err := s.a.rooms.EventsFromRows(rows)
	if err != nil {
		return from, err
	}
	readers, err := storage.ReadersWithPushers(ctx, s.a.db, from, to, pushBadgeBatch)
	if err != nil {
		return from, err
	}
	roomNIDs := make([]int64, len(rows))
	for i, row := range rows {
		roomNIDs[i] = row.RoomNID
	}
	pushes, err := s.notificationsOf(ctx, events, roomNIDs, readers, to)
	if err != nil {
		return from, err
	}
	if len(pushes) == 0 && time.Since(s.flushedAt) < s.positionFlush {
		return to, nil
	}
	return s.save(ctx, to, pushes)
}

// gatewayNotification is the notification object of POST /_matrix/push/v1/notify
// (push_notifier.yaml). It is queued without content and devices, which are added when it
// is sent.
type gatewayNotification struct {
	EventID           string `json:"event_id,omitempty"`
	RoomID            string `json:"room_id,omitempty"`
	Type              string `json:"type,omitempty"`
	Sender            string `json:"sender,omitempty"`
	SenderDisplayName string `json:"sender_display_name,omitempty"`
	RoomName          string `json:"room_name,omitempty"`
	RoomAlias         string `json:"room_alias,omitempty"`
	UserIsTarget      *bool  `json:"user_is_target,omitempty"`
	// Membership is the membership of a member event. NOTSPEC: Synapse sends it, and
	// gateways word invitations with it.
	Membership string          `json:"membership,omitempty"`
	Prio       string          `json:"prio,omitempty"`
	Content    json.RawMessage `json:"content,omitempty"`
	Counts     *gatewayCounts  `json:"counts,omitempty"`
	Devices    []gatewayDevice `json:"devices,omitempty"`
}

// gatewayCounts are the counts of a notification. NOTSPEC: unread is sent even when it is
// 0 ("Counts whose value is zero should be omitted"), as Synapse does: gateways set an app's
// badge only from a count that is there, and 0 is what clears it.
type gatewayCounts struct {
	Unread int `json:"unread"`
}

// gatewayDevice is one pusher of a notification: its data without url, and the tweaks of
// the rule that matched.
type gatewayDevice struct {
	AppID     string                     `json:"app_id"`
	PushKey   string                     `json:"pushkey"`
	PushKeyTS int64                      `json:"pushkey_ts"`
	Data      map[string]json.RawMessage `json:"data"`
	Tweaks    map[string]json.RawMessage `json:"tweaks,omitempty"`
}

// pushStep is what one step knows of the users, rooms and counts it has looked at.
type pushStep struct {
	to      int64
	pushers map[string][]*storage.Pusher
	unread  map[string]int
	rooms   map[string]*pushRoomFacts
}

// pushersAfter lists the user's pushers set before stream position pos: those that are
// sent the event there.
func (st *pushStep) pushersAfter(userID string, pos int64) []*storage.Pusher {
	var out []*storage.Pusher
	for _, p := range st.pushers[userID] {
		if p.FromPos < pos {
			out = append(out, p)
		}
	}
	return out
}

// notificationsOf evaluates events (of the rooms roomNIDs, one for each) for the local users
// with pushers who may be notified of them, and builds the notifications to queue, with the
// badge updates of readers.
func (s *pushSender) notificationsOf(ctx context.Context, events []*rooms.Event, roomNIDs []int64, readers []string, to int64) ([]storage.QueuedPush, error) {
	owners, err := storage.JoinedPusherOwners(ctx, s.a.db, slices.Compact(slices.Sorted(slices.Values(roomNIDs))))
	if err != nil {
		return nil, err
	}
	users := slices.Clone(readers)
	for _, members := range owners {
		users = append(users, members...)
	}
	for _, e := range events {
		if target, ok := memberTarget(e); ok {
			users = append(users, target)
		}
	}
	slices.Sort(users)
	st := &pushStep{to: to, unread: map[string]int{}, rooms: map[string]*pushRoomFacts{}}
	if st.pushers, err = storage.PushersOfUsers(ctx, s.a.db, slices.Compact(users)); err != nil {
		return nil, err
	}
	var out []storage.QueuedPush
	for i, e := range events {
		pushes, err := s.eventNotifications(ctx, st, e, owners[roomNIDs[i]])
		if err != nil {
			return nil, err
		}
		out = append(out, pushes...)
	}
	for _, userID := range readers {
		if len(st.pushers[userID]) == 0 {
			continue
		}
		unread, err := s.unreadTotal(ctx, st, userID)
		if err != nil {
			return nil, err
		}
		notification, _ := json.Marshal(gatewayNotification{Prio: "low", Counts: &gatewayCounts{Unread: unread}})
		for _, p := range st.pushers[userID] {
			if last, ok := s.lastBadge.get(p.ID); ok && last == unread {
				continue
			}
			out = append(out, storage.QueuedPush{PusherID: p.ID, Notification: notification, Tweaks: []byte("{}"), CreatedTS: s.a.nowMS()})
		}
	}
	return out, nil
}

// memberTarget is the user a member event is about.
func memberTarget(e *rooms.Event) (string, bool) {
	if e.Type() != "m.room.member" || e.StateKey() == nil {
		return "", false
	}
	return *e.StateKey(), true
}

// eventNotifications evaluates one event for the room's members with pushers (and the
// user a member event is about, who may be invited rather than joined).
func (s *pushSender) eventNotifications(ctx context.Context, st *pushStep, e *rooms.Event, members []string) ([]storage.QueuedPush, error) {
	if e.RedactedBy != "" {
		return nil, nil
	}
	target, isMember := memberTarget(e)
	var candidates []string
	for _, userID := range members {
		if userID != e.Sender() && len(st.pushersAfter(userID, e.StreamPos)) > 0 {
			candidates = append(candidates, userID)
		}
	}
	if isMember && target != e.Sender() && len(st.pushersAfter(target, e.StreamPos)) > 0 && !slices.Contains(candidates, target) {
		candidates = append(candidates, target)
	}
	if len(candidates) == 0 {
		return nil, nil
	}
	state, err := s.stateAt(ctx, e, candidates)
	if err != nil {
		return nil, err
	}
	room, ok := st.rooms[e.RoomID()]
	if !ok {
		room = s.a.pushRoom(ctx, e.RoomID())
		st.rooms[e.RoomID()] = room
	}
	var out []storage.QueuedPush
	for _, userID := range candidates {
		// Members of the room when the event was sent, and whom a member event is about.
		member := state[[2]string{"m.room.member", userID}]
		membership := ""
		if member != nil {
			membership, _ = member.Membership()
		}
		if membership != "join" && !(isMember && target == userID) {
			continue
		}
		displayName := ""
		if member != nil {
			if name, _ := memberProfile(member); name != nil {
				displayName = *name
			}
		}
		rules, err := s.a.pushRuleset(ctx, userID)
		if err != nil {
			return nil, err
		}
		result := push.Evaluate(rules.rules, *s.a.evalEvent(e), room.context(userID, displayName, e.Sender()))
		if !result.Notify {
			continue
		}
		unread, err := s.unreadTotal(ctx, st, userID)
		if err != nil {
			return nil, err
		}
		notification, tweaks := eventNotification(e, state, userID, result, unread)
		for _, p := range st.pushersAfter(userID, e.StreamPos) {
			out = append(out, storage.QueuedPush{PusherID: p.ID, EventNID: e.NID, Notification: notification, Tweaks: tweaks,
				CreatedTS: s.a.nowMS()})
		}
	}
	return out, nil
}

// stateAt reads the state after e that a notification names: the room's name and canonical
// alias, and the member events of the sender and of users.
func (s *pushSender) stateAt(ctx context.Context, e *rooms.Event, users []string) (map[[2]string]*rooms.Event, error) {
	tuples := [][2]string{{"m.room.name", ""}, {"m.room.canonical_alias", ""}, {"m.room.member", e.Sender()}}
	for _, userID := range users {
		tuples = append(tuples, [2]string{"m.room.member", userID})
	}
	nids, err := storage.SnapshotStateEventNIDs(ctx, s.a.db, e.StateAfter, tuples)
	if err != nil {
		return nil, err
	}
	want := make([]int64, 0, len(nids))
	for _, nid := range nids {
		want = append(want, nid)
	}
	events, err := s.a.rooms.EventsByNID(ctx, want)
	if err != nil {
		return nil, err
	}
	state := make(map[[2]string]*rooms.Event, len(events))
	for _, se := range events {
		if se.StateKey() != nil {
			state[[2]string{se.Type(), *se.StateKey()}] = se
		}
	}
	return state, nil
}

// eventNotification builds the notification of e for userID (push_notifier.yaml) and the
// tweaks of the rule that matched.
func eventNotification(e *rooms.Event, state map[[2]string]*rooms.Event, userID string, result push.Result, unread int) (notification, tweaks []byte) {
	n := gatewayNotification{EventID: e.EventID(), RoomID: e.RoomID(), Type: e.Type(), Sender: e.Sender(),
		Prio: "low", Counts: &gatewayCounts{Unread: unread}}
	// NOTSPEC: as Synapse, high priority only for what makes a sound or highlights, or may
	// (encrypted events, whose rules the client applies).
	if result.Highlight || result.Sound != "" || e.Type() == "m.room.encrypted" {
		n.Prio = "high"
	}
	if member := state[[2]string{"m.room.member", e.Sender()}]; member != nil {
		if name, _ := memberProfile(member); name != nil {
			n.SenderDisplayName = *name
		}
	}
	if nameEvent := state[[2]string{"m.room.name", ""}]; nameEvent != nil {
		var c struct {
			Name string `json:"name"`
		}
		_ = json.Unmarshal(nameEvent.Content(), &c)
		n.RoomName = c.Name
	}
	if aliasEvent := state[[2]string{"m.room.canonical_alias", ""}]; aliasEvent != nil {
		var c struct {
			Alias string `json:"alias"`
		}
		_ = json.Unmarshal(aliasEvent.Content(), &c)
		n.RoomAlias = c.Alias
	}
	if target, ok := memberTarget(e); ok {
		isTarget := target == userID
		n.UserIsTarget = &isTarget
		n.Membership, _ = e.Membership()
	}
	notification, _ = json.Marshal(n)
	// A set_tweak without a value is true ("Actions": so for highlight), as in Synapse.
	tweakMap := map[string]json.RawMessage{}
	for _, action := range result.Actions {
		if action.Name != push.ActionSetTweak {
			continue
		}
		value := action.Value
		if value == nil {
			value = json.RawMessage("true")
		}
		tweakMap[action.Tweak] = value
	}
	tweaks, _ = json.Marshal(tweakMap)
	return notification, tweaks
}

// unreadTotal is the user's unread notification count over their joined rooms at the
// step's position, as /sync counts each room (unreadNotifications): the "number of unread
// messages a user has across all of the rooms they are a member of".
func (s *pushSender) unreadTotal(ctx context.Context, st *pushStep, userID string) (int, error) {
	if total, ok := st.unread[userID]; ok {
		return total, nil
	}
	memberships, err := storage.UserMemberships(ctx, s.a.db, userID, "join")
	if err != nil {
		return 0, err
	}
	counter := newUnreadCounter(userID)
	total := 0
	for _, m := range memberships {
		counts, err := s.a.unreadNotifications(ctx, counter, m, st.to)
		if err != nil {
			return 0, err
		}
		if total += counts.NotificationCount; total >= maxBadgeCount {
			total = maxBadgeCount
			break
		}
	}
	st.unread[userID] = total
	return total, nil
}

// deliver sends the queued notifications until ctx ends: the oldest of each pusher whose
// gateway may be tried, up to pushConcurrency at a time.
func (s *pushSender) deliver(ctx context.Context) {
	slots := make(chan struct{}, pushConcurrency)
	var sending sync.WaitGroup
	defer sending.Wait()
	var swept time.Time
	for {
		if time.Since(swept) >= pushOrphanSweep {
			if err := storage.DeleteOrphanPushes(ctx, s.a.db); err == nil {
				swept = time.Now()
			}
		}
		wait := s.poll
		heads, err := storage.PushHeads(ctx, s.a.db, s.busyPushers(), 2*pushConcurrency)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.a.log.Warn("push: read the queue", "err", err)
			wait = s.errorDelay
		}
		now := s.a.nowMS()
	start:
		for _, h := range heads {
			if h.Pusher.RetryAt > now {
				wait = min(wait, time.Duration(h.Pusher.RetryAt-now)*time.Millisecond)
				break
			}
			select {
			case slots <- struct{}{}:
			default:
				break start // a request that finishes wakes us
			}
			s.setBusy(h.PusherID, true)
			sending.Go(func() {
				defer func() {
					<-slots
					s.setBusy(h.PusherID, false)
					s.wakeDelivery()
				}()
				s.send(ctx, h)
			})
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-s.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

func (s *pushSender) busyPushers() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]int64, 0, len(s.inFlight))
	for id := range s.inFlight {
		out = append(out, id)
	}
	return out
}

func (s *pushSender) setBusy(pusherID int64, busy bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if busy {
		s.inFlight[pusherID] = true
	} else {
		delete(s.inFlight, pusherID)
	}
}

// gatewayOutcome is how a gateway answered.
type gatewayOutcome int

const (
	// gatewayAccepted: a 2xx answer.
	gatewayAccepted gatewayOutcome = iota
	// gatewayUnavailable: no answer, 5xx or 429; worth trying again.
	gatewayUnavailable
	// gatewayRefused: any other answer (4xx, a redirect elsewhere); trying again would
	// get the same. NOTSPEC: Synapse retries these too.
	gatewayRefused
)

// send posts one queued notification and records the outcome.
func (s *pushSender) send(ctx context.Context, h storage.PushHead) {
	log := s.a.log.With("user", h.Pusher.UserID, "app_id", h.Pusher.AppID, "queue_id", h.QueueID)
	gatewayURL, body, err := s.request(ctx, h)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		// Only a pusher stored before its checks could get here; its notification cannot be
		// sent.
		log.Warn("push: cannot build the notification", "err", err)
		s.dequeue(ctx, h, false)
		return
	}
	outcome, rejected, err := s.post(ctx, gatewayURL, body)
	if outcome == gatewayUnavailable && ctx.Err() != nil {
		return // cut short by the shutdown: sent again after the restart
	}
	if errors.Is(err, netguard.ErrBlocked) {
		outcome = gatewayRefused // a gateway on a private address never becomes reachable
	}
	// What the gateway answered is recorded even if the server is stopping meanwhile.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	switch outcome {
	case gatewayAccepted:
		if slices.Contains(rejected, h.Pusher.PushKey) {
			log.Info("push: the gateway rejected the pushkey; removing the pusher")
			if _, err := storage.DeletePusher(ctx, s.a.db, h.Pusher.UserID, h.Pusher.AppID, h.Pusher.PushKey); err != nil {
				log.Warn("push: remove a rejected pusher", "err", err)
			}
			return
		}
		var n gatewayNotification
		if json.Unmarshal(h.Notification, &n) == nil && n.Counts != nil {
			s.lastBadge.put(h.PusherID, n.Counts.Unread)
		}
		s.dequeue(ctx, h, true)
	case gatewayRefused:
		log.Warn("push: the gateway refused a notification; dropping it", "err", err)
		s.dequeue(ctx, h, true)
	case gatewayUnavailable:
		if h.EventNID == 0 {
			// NOTSPEC: badge updates are not retried, as in Synapse; the next one or the
			// next notification carries the count.
			s.dequeue(ctx, h, false)
			return
		}
		now := s.a.nowMS()
		failingSince := h.Pusher.FailingSince
		if failingSince == 0 {
			failingSince = now
		}
		if now-failingSince >= s.giveUpAfter.Milliseconds() {
			log.Warn("push: giving up on a notification after failures since", "since", time.UnixMilli(failingSince), "err", err)
			s.dequeue(ctx, h, true)
			return
		}
		attempts := h.Pusher.FailedAttempts + 1
		backoff := s.maxBackoff
		if shift := attempts - 1; shift < 32 {
			backoff = min(s.initialBackoff<<shift, s.maxBackoff)
		}
		log.Info("push: the gateway failed; retrying later", "in", backoff, "err", err)
		if err := storage.SetPusherFailures(ctx, s.a.db, h.PusherID, failingSince, attempts, now+backoff.Milliseconds()); err != nil {
			log.Warn("push: record a failure", "err", err)
		}
	}
}

// dequeue removes a notification that was sent or given up.
func (s *pushSender) dequeue(ctx context.Context, h storage.PushHead, resetFailures bool) {
	if err := storage.DequeuePush(ctx, s.a.db, h.QueueID, h.PusherID, resetFailures && h.Pusher.FailedAttempts > 0); err != nil {
		s.a.log.Warn("push: dequeue a notification", "queue_id", h.QueueID, "err", err)
	}
}

// request builds the body of a queued notification for its pusher, and the gateway's URL.
// The pusher is read as it is now (its data may have changed since the notification was
// queued); so is the event's content, which is sent redacted if it has been redacted since.
func (s *pushSender) request(ctx context.Context, h storage.PushHead) (string, []byte, error) {
	var n gatewayNotification
	if err := json.Unmarshal(h.Notification, &n); err != nil {
		return "", nil, err
	}
	var data map[string]json.RawMessage
	if err := json.Unmarshal(h.Pusher.Data, &data); err != nil {
		return "", nil, err
	}
	var gatewayURL string
	if err := json.Unmarshal(data["url"], &gatewayURL); err != nil {
		return "", nil, err
	}
	if _, err := parseGatewayURL(gatewayURL); err != nil {
		return "", nil, err
	}
	// "Servers MUST forward the entire content including format and any custom keys but
	// excluding url" (pusher.yaml).
	delete(data, "url")
	device := gatewayDevice{AppID: h.Pusher.AppID, PushKey: h.Pusher.PushKey, PushKeyTS: h.Pusher.PushKeyTS / 1000, Data: data}
	if h.EventNID != 0 {
		if pusherFormat(h.Pusher.Data) == pusherFormatEventIDOnly {
			// "only the event_id, room_id, counts, and devices are required": as Synapse,
			// nothing more, so that no detail of the event reaches the push provider.
			n = gatewayNotification{EventID: n.EventID, RoomID: n.RoomID, Prio: n.Prio, Counts: n.Counts}
		} else {
			if err := json.Unmarshal(h.Tweaks, &device.Tweaks); err != nil {
				return "", nil, err
			}
			events, err := s.a.rooms.EventsByNID(ctx, []int64{h.EventNID})
			if err != nil {
				return "", nil, err
			}
			if len(events) == 1 && !bytes.Equal(bytes.TrimSpace(events[0].Content()), []byte("{}")) {
				n.Content = events[0].Content()
			}
		}
	}
	n.Devices = []gatewayDevice{device}
	body, err := json.Marshal(map[string]any{"notification": n})
	return gatewayURL, body, err
}

// post sends a notification to a gateway and reads its answer: the rejected pushkeys of a
// 2xx answer (push_notifier.yaml), read up to maxGatewayResponse bytes.
func (s *pushSender) post(ctx context.Context, gatewayURL string, body []byte) (gatewayOutcome, []string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, gatewayURL, bytes.NewReader(body))
	if err != nil {
		return gatewayRefused, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return gatewayUnavailable, nil, err
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, maxGatewayResponse))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		var parsed struct {
			Rejected []string `json:"rejected"`
		}
		// An answer that does not parse rejects nothing.
		_ = json.Unmarshal(answer, &parsed)
		return gatewayAccepted, parsed.Rejected, nil
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		return gatewayUnavailable, nil, errors.New(resp.Status)
	default:
		return gatewayRefused, nil, errors.New(resp.Status)
	}
}
