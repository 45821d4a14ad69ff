# Scrambled Eggs — a Matrix homeserver.
#
#   make run     start a homeserver on http://localhost:8008 (SQLite in ./eggs-data; federation
#                off unless EGGS_FEDERATION_ADDR and a TLS certificate are set)
#   make test    run every test (SQLite, and PostgreSQL when one is reachable)
#   make bench   run the load tool and the micro-benchmarks

GO       ?= go
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)

.PHONY: build run test test-short bench vet fuzz clean

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/eggs ./cmd/eggs

run: build
	EGGS_REGISTRATION=$${EGGS_REGISTRATION:-open} EGGS_FEDERATION_ADDR=$${EGGS_FEDERATION_ADDR:-off} ./bin/eggs serve

# goolm: mautrix-go's pure-Go Olm/Megolm for the end-to-end encryption tests (without it
# mautrix's crypto links libolm through cgo).
test:
	@$(GO) run ./storage/storagetest/pgcheck
	$(GO) vet -tags goolm ./...
	$(GO) test -tags goolm -count=1 -timeout 20m ./...

test-short:
	$(GO) test -tags goolm -count=1 -short ./...

bench: build
	$(GO) run ./cmd/eggsload                 # throughput: senders as fast as the server answers
	$(GO) run ./cmd/eggsload -rate 1000      # latency at the target load of 1,000 messages/s
	$(GO) test -run '^$$' -bench . -benchmem ./spec/... ./rooms/... ./streams/...

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzCanonicalJSON -fuzztime 30s ./spec
	$(GO) test -run '^$$' -fuzz FuzzParseEvent -fuzztime 30s ./spec
	$(GO) test -run '^$$' -fuzz FuzzParseXMatrix -fuzztime 30s ./federation
	$(GO) test -run '^$$' -fuzz FuzzServerACL -fuzztime 30s ./federation
	$(GO) test -run '^$$' -fuzz FuzzRulesetJSON -fuzztime 30s ./push
	$(GO) test -run '^$$' -fuzz FuzzGlob -fuzztime 30s ./push
	$(GO) test -run '^$$' -fuzz FuzzContentDisposition -fuzztime 30s ./media

clean:
	rm -rf bin
