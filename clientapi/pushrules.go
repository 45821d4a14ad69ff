package clientapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/push"
	"github.com/scrambledeggs/eggs/storage"
)

// Push rules (client-server API "Push Rules: API", pushrules.yaml). A user's ruleset is
// their global account data m.push_rules, {"global": ruleset}, which only these endpoints
// write (the account data API refuses it). Every change is one read-modify-write of that
// account data (storage.UpdateAccountData: concurrent changes are serialised, none lost)
// and takes a stream position, so that /sync delivers the new rules ("Push Rules: Events").
// A user who never changed a rule has push.Defaults; what is served is always push.Upgrade
// of what is stored, so that every user has this server's predefined rules.

// pushRulesType is the account data type that holds a user's push rules.
const pushRulesType = "m.push_rules"

// maxPushRuleBody bounds the body of a push rules request. NOTSPEC: as other account data;
// push.MaxRuleSize bounds the rule itself.
const maxPushRuleBody = maxAccountDataSize

func (a *API) pushRuleRoutes(r chi.Router, authed func(func(http.ResponseWriter, *http.Request, *Device) error) http.Handler) {
	// pushrules.yaml names /pushrules/ and /pushrules/global/ with a trailing slash; clients
	// also ask without it.
	for _, path := range []string{"/pushrules", "/pushrules/"} {
		r.Method(http.MethodGet, path, authed(a.getPushRules))
	}
	for _, path := range []string{"/pushrules/global", "/pushrules/global/"} {
		r.Method(http.MethodGet, path, authed(a.getGlobalPushRules))
	}
	const rule = "/pushrules/global/{kind}/{ruleId}"
	r.Method(http.MethodGet, rule, authed(a.getPushRule))
	r.Method(http.MethodPut, rule, authed(a.putPushRule))
	r.Method(http.MethodDelete, rule, authed(a.deletePushRule))
	r.Method(http.MethodGet, rule+"/enabled", authed(a.getPushRuleEnabled))
	r.Method(http.MethodPut, rule+"/enabled", authed(a.putPushRuleEnabled))
	r.Method(http.MethodGet, rule+"/actions", authed(a.getPushRuleActions))
	r.Method(http.MethodPut, rule+"/actions", authed(a.putPushRuleActions))
}

// pushRulesContent is the content of m.push_rules, and the answer of GET /pushrules/.
type pushRulesContent struct {
	Global push.Ruleset `json:"global"`
}

// pushRulesAccountData is the content of the user's m.push_rules account data as clients
// should see it: the stored rules upgraded, or the defaults when none are stored. /sync
// puts it in account_data, for an initial sync even when the user never changed a rule
// (clients, Element among them, rely on finding it there, as Synapse sends it).
func (a *API) pushRulesAccountData(ctx context.Context, userID string) (json.RawMessage, error) {
	rs, err := a.loadPushRules(ctx, userID)
	if err != nil {
		return nil, err
	}
	return json.Marshal(pushRulesContent{Global: rs})
}

// withPushRules puts the user's m.push_rules, as pushRulesAccountData gives it, in a list
// of global account data events, in place of any stored one.
func (a *API) withPushRules(ctx context.Context, userID string, events []any) ([]any, error) {
	content, err := a.pushRulesAccountData(ctx, userID)
	if err != nil {
		return nil, err
	}
	out := make([]any, 0, len(events)+1)
	for _, ev := range events {
		if m, ok := ev.(map[string]any); ok && m["type"] == pushRulesType {
			continue
		}
		out = append(out, ev)
	}
	return append(out, map[string]any{"type": pushRulesType, "content": content}), nil
}

// loadPushRules reads a user's ruleset.
func (a *API) loadPushRules(ctx context.Context, userID string) (push.Ruleset, error) {
	raw, err := storage.GetAccountData(ctx, a.db, userID, "", pushRulesType)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return push.Ruleset{}, err
	}
	return a.parsePushRules(raw, userID), nil
}

// parsePushRules reads stored m.push_rules content (nil when there is none) and upgrades
// it. Content that does not parse, which only a hand-edited database could hold, reads as
// the defaults, so that the user's clients still start; the next change overwrites it.
func (a *API) parsePushRules(raw []byte, userID string) push.Ruleset {
	if raw == nil {
		return push.Defaults(userID)
	}
	var content pushRulesContent
	if err := json.Unmarshal(raw, &content); err != nil {
		a.log.Warn("stored push rules do not parse; serving the defaults", "user", userID, "err", err)
		return push.Defaults(userID)
	}
	return push.Upgrade(content.Global, userID)
}

// answerPushRuleEdit applies edit to the requester's rules and answers {}.
func (a *API) answerPushRuleEdit(w http.ResponseWriter, r *http.Request, d *Device, edit func(push.Ruleset) (push.Ruleset, error)) error {
	if err := a.editPushRules(r.Context(), d.UserID, edit); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// editPushRules changes a user's ruleset by edit, atomically.
func (a *API) editPushRules(ctx context.Context, userID string, edit func(push.Ruleset) (push.Ruleset, error)) error {
	return a.updateAccountData(ctx, userID, "", pushRulesType, func(current []byte) ([]byte, error) {
		next, err := edit(a.parsePushRules(current, userID))
		if err != nil {
			return nil, pushRuleError(err)
		}
		return json.Marshal(pushRulesContent{Global: next})
	})
}

// pushRuleError answers an error of the push package: pushrules.yaml gives 404 M_NOT_FOUND
// for unknown rules and 400 M_UNKNOWN for a before or after naming none. NOTSPEC: an
// invalid rule ID is 400 M_INVALID_PARAM, an invalid rule 400 M_BAD_JSON; deleting a
// server-default rule is 400 M_INVALID_PARAM (Synapse answers 404, as it stores no such
// rule, though GET finds it), and too many rules 400 M_UNKNOWN.
func pushRuleError(err error) error {
	switch {
	case errors.Is(err, push.ErrNotFound):
		return httpapi.NotFound("The push rule was not found.")
	case errors.Is(err, push.ErrAnchorNotFound), errors.Is(err, push.ErrTooManyRules):
		return httpapi.NewError(http.StatusBadRequest, "M_UNKNOWN", "%s", err)
	case errors.Is(err, push.ErrInvalidRuleID), errors.Is(err, push.ErrServerDefault):
		return httpapi.InvalidParam("%s", err)
	case errors.Is(err, push.ErrInvalidRule):
		return httpapi.BadJSON("%s", err)
	}
	return err
}

// pushRuleTarget reads the {kind} and {ruleId} of a request: an unknown kind is 400
// M_INVALID_PARAM.
func pushRuleTarget(r *http.Request) (push.Kind, string, error) {
	kind, ok := push.ParseKind(pathParam(r, "kind"))
	if !ok {
		return "", "", httpapi.InvalidParam("Unknown push rule kind %q", pathParam(r, "kind"))
	}
	return kind, pathParam(r, "ruleId"), nil
}

// GET /pushrules/ (getPushRules): {"global": ruleset}.
func (a *API) getPushRules(w http.ResponseWriter, r *http.Request, d *Device) error {
	rs, err := a.loadPushRules(r.Context(), d.UserID)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, pushRulesContent{Global: rs})
	return nil
}

// GET /pushrules/global/ (getPushRulesGlobal): the ruleset.
func (a *API) getGlobalPushRules(w http.ResponseWriter, r *http.Request, d *Device) error {
	rs, err := a.loadPushRules(r.Context(), d.UserID)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, rs)
	return nil
}

// findPushRule reads the rule a request names.
func (a *API) findPushRule(r *http.Request, d *Device) (push.Rule, error) {
	kind, ruleID, err := pushRuleTarget(r)
	if err != nil {
		return push.Rule{}, err
	}
	rs, err := a.loadPushRules(r.Context(), d.UserID)
	if err != nil {
		return push.Rule{}, err
	}
	rule, err := push.Get(rs, kind, ruleID)
	if err != nil {
		return push.Rule{}, pushRuleError(err)
	}
	return rule, nil
}

// GET /pushrules/global/{kind}/{ruleId} (getPushRule).
func (a *API) getPushRule(w http.ResponseWriter, r *http.Request, d *Device) error {
	rule, err := a.findPushRule(r, d)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, rule)
	return nil
}

// GET /pushrules/global/{kind}/{ruleId}/enabled (isPushRuleEnabled).
func (a *API) getPushRuleEnabled(w http.ResponseWriter, r *http.Request, d *Device) error {
	rule, err := a.findPushRule(r, d)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]bool{"enabled": rule.Enabled})
	return nil
}

// GET /pushrules/global/{kind}/{ruleId}/actions (getPushRuleActions).
func (a *API) getPushRuleActions(w http.ResponseWriter, r *http.Request, d *Device) error {
	rule, err := a.findPushRule(r, d)
	if err != nil {
		return err
	}
	actions := rule.Actions
	if actions == nil {
		actions = []push.Action{}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string][]push.Action{"actions": actions})
	return nil
}

// PUT /pushrules/global/{kind}/{ruleId} (setPushRule), with the before and after query
// parameters; push.Put says where the rule goes.
func (a *API) putPushRule(w http.ResponseWriter, r *http.Request, d *Device) error {
	kind, ruleID, err := pushRuleTarget(r)
	if err != nil {
		return err
	}
	if err := push.ValidateRuleID(ruleID); err != nil {
		return pushRuleError(err)
	}
	body, err := httpapi.ReadBody(r, maxPushRuleBody)
	if err != nil {
		return err
	}
	var request struct {
		Actions    *[]push.Action    `json:"actions"`
		Conditions *[]push.Condition `json:"conditions"`
		Pattern    *string           `json:"pattern"`
	}
	if err := httpapi.DecodeJSON(body, &request); err != nil {
		return err
	}
	if request.Actions == nil {
		return httpapi.BadJSON("actions is required")
	}
	rule := push.Rule{RuleID: ruleID, Actions: *request.Actions}
	if request.Conditions != nil {
		rule.Conditions = *request.Conditions
	}
	if request.Pattern != nil {
		rule.Pattern = *request.Pattern
	}
	query := r.URL.Query()
	before, after := query.Get("before"), query.Get("after")
	return a.answerPushRuleEdit(w, r, d, func(rs push.Ruleset) (push.Ruleset, error) {
		return push.Put(rs, kind, rule, before, after)
	})
}

// DELETE /pushrules/global/{kind}/{ruleId} (deletePushRule).
func (a *API) deletePushRule(w http.ResponseWriter, r *http.Request, d *Device) error {
	kind, ruleID, err := pushRuleTarget(r)
	if err != nil {
		return err
	}
	return a.answerPushRuleEdit(w, r, d, func(rs push.Ruleset) (push.Ruleset, error) {
		return push.Delete(rs, kind, ruleID)
	})
}

// PUT /pushrules/global/{kind}/{ruleId}/enabled (setPushRuleEnabled): {"enabled": bool}.
// NOTSPEC: as Synapse, a bare true or false is taken too ("many clients pass bools
// directly").
func (a *API) putPushRuleEnabled(w http.ResponseWriter, r *http.Request, d *Device) error {
	kind, ruleID, err := pushRuleTarget(r)
	if err != nil {
		return err
	}
	body, err := httpapi.ReadBody(r, maxPushRuleBody)
	if err != nil {
		return err
	}
	var enabled bool
	switch string(bytes.TrimSpace(body)) {
	case "true":
		enabled = true
	case "false":
	default:
		var request struct {
			Enabled *bool `json:"enabled"`
		}
		if err := httpapi.DecodeJSON(body, &request); err != nil {
			return err
		}
		if request.Enabled == nil {
			return httpapi.BadJSON("enabled must be a boolean")
		}
		enabled = *request.Enabled
	}
	return a.answerPushRuleEdit(w, r, d, func(rs push.Ruleset) (push.Ruleset, error) {
		return push.SetEnabled(rs, kind, ruleID, enabled)
	})
}

// PUT /pushrules/global/{kind}/{ruleId}/actions (setPushRuleActions): {"actions": [...]};
// server-default rules' actions may be changed too.
func (a *API) putPushRuleActions(w http.ResponseWriter, r *http.Request, d *Device) error {
	kind, ruleID, err := pushRuleTarget(r)
	if err != nil {
		return err
	}
	body, err := httpapi.ReadBody(r, maxPushRuleBody)
	if err != nil {
		return err
	}
	var request struct {
		Actions *[]push.Action `json:"actions"`
	}
	if err := httpapi.DecodeJSON(body, &request); err != nil {
		return err
	}
	if request.Actions == nil {
		return httpapi.BadJSON("actions is required")
	}
	return a.answerPushRuleEdit(w, r, d, func(rs push.Ruleset) (push.Ruleset, error) {
		return push.SetActions(rs, kind, ruleID, *request.Actions)
	})
}
