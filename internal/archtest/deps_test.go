// Package archtest checks the import rules of ARCHITECTURE.md: dependencies
// point inward, and each outside library stays in the package that owns it.
package archtest

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/sensorgate/mqttsn-gateway"

// rules lists, for each package, import path prefixes it must not depend on
// (directly or indirectly).
var rules = map[string][]string{
	"mqttsn":            {module + "/", "github.com/"},
	"topicmap":          {module + "/", "github.com/"},
	"transport":         {module + "/mqttsn", module + "/topicmap", module + "/gateway", "github.com/eclipse/", "github.com/mochi-mqtt/", "github.com/BurntSushi/"},
	"gateway":           {module + "/gateway/", module + "/cmd/", "github.com/eclipse/", "github.com/mochi-mqtt/", "github.com/BurntSushi/"},
	"gateway/upstream":  {module + "/gateway/config", module + "/gateway/broker", "github.com/mochi-mqtt/", "github.com/BurntSushi/"},
	"gateway/broker":    {module + "/gateway/config", "github.com/eclipse/", "github.com/BurntSushi/"},
	"gateway/config":    {module + "/gateway/broker", module + "/gateway/upstream", "github.com/eclipse/", "github.com/mochi-mqtt/"},
	"internal/fdguard":  {module + "/", "github.com/"},
	"internal/snclient": {module + "/gateway", module + "/topicmap", module + "/transport"},
	"internal/fleet":    {module + "/gateway", module + "/topicmap", module + "/transport"},
	"firmware-sim":      {module + "/gateway", module + "/topicmap", module + "/transport", module + "/internal/"},
}

func TestImportRules(t *testing.T) {
	for pkg, forbidden := range rules {
		out, err := exec.Command("go", "list", "-deps", module+"/"+pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			if dep == module+"/"+pkg {
				continue
			}
			for _, f := range forbidden {
				if strings.HasPrefix(dep, f) {
					t.Errorf("%s depends on %s, which ARCHITECTURE.md forbids", pkg, dep)
				}
			}
		}
	}
}
