package server

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"time"

	"github.com/scrambledeggs/eggs/federation"
	"github.com/scrambledeggs/eggs/media"
)

// mountMedia is the content repository as a component: its client endpoints on the client
// router, files under the data directory's media/, and with the federation listener on,
// other servers' media fetched through the federation client and ours served to them
// behind X-Matrix authentication. It runs after mountFederation, whose client and key ring
// it uses.
func mountMedia(_ context.Context, s *Server) error {
	cfg := media.Config{
		ServerName: s.identity.ServerName, DB: s.db, Dir: filepath.Join(s.cfg.DataDir, "media"),
		MaxUploadSize: s.cfg.MaxUploadBytes(), Clock: time.Now, Log: s.log,
		Authenticate: func(r *http.Request) (media.User, error) {
			d, err := s.clientAPI.Authenticate(r)
			if err != nil {
				return media.User{}, err
			}
			return media.User{UserID: d.UserID, Suspended: d.Suspended}, nil
		},
		Limit: s.clientAPI.LimitMedia,
	}
	if s.cfg.FederationEnabled() {
		cfg.Federation = s.federationClient
	}
	repo, err := media.New(cfg)
	if err != nil {
		return fmt.Errorf("media repository: %w", err)
	}
	repo.Routes(s.clientRouter)
	if s.cfg.FederationEnabled() {
		auth := &federation.Authenticator{ServerName: s.identity.ServerName, Keys: s.keyRing, Now: time.Now}
		repo.FederationRoutes(s.federationRouter, auth.Middleware)
	}
	s.Background(repo.Run)
	return nil
}
