// Command pgcheck tells, before `make test` runs, whether the PostgreSQL half of the tests
// will run: it tries the server the tests use ($EGGS_TEST_DATABASE_URL or the default).
// It always exits 0 outside CI; with CI=true an unreachable server is an error.
package main

import (
	"fmt"
	"os"

	"github.com/scrambledeggs/eggs/storage/storagetest"
)

func main() {
	url, err := storagetest.Reachable()
	if err == nil {
		fmt.Printf("PostgreSQL reachable at %s: tests run on SQLite and PostgreSQL\n", url)
		return
	}
	fmt.Printf("PostgreSQL not reachable at %s (%v): the PostgreSQL half of the tests is SKIPPED, SQLite only\n", url, err)
	if os.Getenv("CI") == "true" {
		os.Exit(1)
	}
}
