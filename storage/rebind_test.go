package storage

import (
	"strings"
	"testing"
)

func TestRebindSQLite(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"no placeholders", "SELECT 1", "SELECT 1"},
		{"simple", "SELECT a FROM t WHERE b = $1 AND c = $2", "SELECT a FROM t WHERE b = ?1 AND c = ?2"},
		{"out of order and repeated", "VALUES ($2, $1, $2)", "VALUES (?2, ?1, ?2)"},
		{"two digits", "SELECT $10, $1", "SELECT ?10, ?1"},
		{"string literal", "SELECT '$1', $1", "SELECT '$1', ?1"},
		{"escaped quote in literal", "SELECT 'it''s $1', $2", "SELECT 'it''s $1', ?2"},
		{"quoted identifier", `SELECT "$1" FROM t WHERE x = $1`, `SELECT "$1" FROM t WHERE x = ?1`},
		{"line comment", "SELECT $1 -- costs $2\nFROM t", "SELECT ?1 -- costs $2\nFROM t"},
		{"block comment", "SELECT /* $1 */ $1", "SELECT /* $1 */ ?1"},
		{"lone dollar", "SELECT 'a' || $ || $1", "SELECT 'a' || $ || ?1"},
		{"unterminated literal", "SELECT '$1", "SELECT '$1"},
		{"unterminated comment", "SELECT $1 /* $2", "SELECT ?1 /* $2"},
		{"trailing dollar", "SELECT $", "SELECT $"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := rebindSQLite(tt.in); got != tt.want {
				t.Errorf("rebindSQLite(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestQueryCacheBindsOnce(t *testing.T) {
	var cache queryCache
	const query = "SELECT x FROM t WHERE id = $1"
	first := cache.get(SQLite, query)
	if first.text != "SELECT x FROM t WHERE id = ?1" || !first.readOnly {
		t.Fatalf("bound query = %+v", first)
	}
	if again := cache.get(SQLite, query); again != first {
		t.Error("second get did not return the cached binding")
	}
	if pg := (&queryCache{}).get(Postgres, query); pg.text != query {
		t.Errorf("PostgreSQL binding changed the query to %q", pg.text)
	}
}

func TestIsReadOnly(t *testing.T) {
	tests := map[string]bool{
		"SELECT 1":                           true,
		"  select * from t":                  true,
		"\n\tWITH x AS (SELECT 1) SELECT *":  true,
		"(SELECT 1) UNION (SELECT 2)":        true,
		"INSERT INTO t VALUES (1) RETURNING": false,
		"UPDATE t SET a = 1":                 false,
		"DELETE FROM t":                      false,
		"SELECTED":                           false,
		"":                                   false,
	}
	for query, want := range tests {
		if got := isReadOnly(query); got != want {
			t.Errorf("isReadOnly(%q) = %v, want %v", query, got, want)
		}
	}
}

func TestExpandTokens(t *testing.T) {
	const migration = "CREATE TABLE t (id {{BIGSERIAL}}, n {{BIGINT}}, b {{BYTES}}, f {{BOOL}})"
	sqlite, err := expandTokens(SQLite, migration)
	if err != nil {
		t.Fatal(err)
	}
	if want := "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, n INTEGER, b BLOB, f INTEGER)"; sqlite != want {
		t.Errorf("SQLite:\n got %s\nwant %s", sqlite, want)
	}
	pg, err := expandTokens(Postgres, migration)
	if err != nil {
		t.Fatal(err)
	}
	if want := "CREATE TABLE t (id BIGSERIAL PRIMARY KEY, n BIGINT, b BYTEA, f BOOLEAN)"; pg != want {
		t.Errorf("PostgreSQL:\n got %s\nwant %s", pg, want)
	}
	if _, err := expandTokens(SQLite, "CREATE TABLE t (x {{BIGINTEGER}})"); err == nil || !strings.Contains(err.Error(), "{{BIGINTEGER}}") {
		t.Errorf("unknown token: err = %v, want one naming {{BIGINTEGER}}", err)
	}
}
