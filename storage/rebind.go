package storage

import (
	"strings"
	"sync"
	"sync/atomic"
)

// boundQuery is a query as it is sent to one engine.
type boundQuery struct {
	// text is the query with placeholders in the engine's syntax.
	text string
	// readOnly is true when the statement can run on a read-only connection.
	readOnly bool
}

// maxCachedQueries bounds queryCache so that code building SQL dynamically
// (IN lists of varying length, say) cannot grow it without limit. A real
// server has a few hundred distinct queries.
const maxCachedQueries = 4096

// queryCache remembers how each query text was bound, so the rewriting cost is
// paid once per distinct query rather than once per call.
type queryCache struct {
	entries sync.Map // query string → *boundQuery
	size    atomic.Int64
}

// get returns query bound for engine.
func (c *queryCache) get(engine Engine, query string) *boundQuery {
	if q, ok := c.entries.Load(query); ok {
		return q.(*boundQuery)
	}
	q := &boundQuery{text: query, readOnly: isReadOnly(query)}
	if engine == SQLite {
		q.text = rebindSQLite(query)
	}
	if c.size.Load() < maxCachedQueries {
		if _, loaded := c.entries.LoadOrStore(query, q); !loaded {
			c.size.Add(1)
		}
	}
	return q
}

// rebindSQLite rewrites PostgreSQL placeholders $1, $2, … into SQLite's
// numbered form ?1, ?2, …, which binds by number just as PostgreSQL does, so a
// query may use a parameter twice or out of order. (SQLite would also accept
// "$1", but as a named parameter numbered by first appearance, which breaks
// "… $2 … $1".) Placeholders inside string literals, quoted identifiers and
// comments are left alone.
func rebindSQLite(query string) string {
	if !strings.Contains(query, "$") {
		return query
	}
	var out strings.Builder
	out.Grow(len(query))
	for i := 0; i < len(query); {
		switch c := query[i]; {
		case c == '\'' || c == '"':
			end := closingQuote(query, i)
			out.WriteString(query[i:end])
			i = end
		case c == '-' && strings.HasPrefix(query[i:], "--"):
			end := strings.IndexByte(query[i:], '\n')
			if end < 0 {
				end = len(query) - i
			}
			out.WriteString(query[i : i+end])
			i += end
		case c == '/' && strings.HasPrefix(query[i:], "/*"):
			end := strings.Index(query[i+2:], "*/")
			if end < 0 {
				end = len(query) - i
			} else {
				end += 4
			}
			out.WriteString(query[i : i+end])
			i += end
		case c == '$' && i+1 < len(query) && isDigit(query[i+1]):
			out.WriteByte('?')
			i++
		default:
			out.WriteByte(c)
			i++
		}
	}
	return out.String()
}

// closingQuote returns the index just past the quoted run starting at
// query[start], where a doubled quote character stands for itself.
func closingQuote(query string, start int) int {
	quote := query[start]
	for i := start + 1; i < len(query); i++ {
		if query[i] != quote {
			continue
		}
		if i+1 < len(query) && query[i+1] == quote {
			i++
			continue
		}
		return i + 1
	}
	return len(query)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// isReadOnly reports whether query starts with SELECT or WITH, the statements
// sent to the read pool. A WITH that writes (WITH … INSERT) is rare; on SQLite
// it fails loudly with "attempt to write a readonly database" rather than
// doing anything wrong.
func isReadOnly(query string) bool {
	word := strings.TrimLeft(query, " \t\r\n(")
	if end := strings.IndexAny(word, " \t\r\n("); end >= 0 {
		word = word[:end]
	}
	return strings.EqualFold(word, "SELECT") || strings.EqualFold(word, "WITH")
}
