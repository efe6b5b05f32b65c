// Command spiffeclient is a workload of the SPIFFE e2e test: it uses
// go-spiffe's Workload API client as any workload would, with nothing but
// the SPIFFE_ENDPOINT_SOCKET the pod's environment gives, and prints what
// it got.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

func main() {
	timeout := flag.Duration("timeout", time.Minute, "how long to wait for an SVID")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := run(ctx); err != nil {
		fmt.Println("spiffeclient error:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	svid, err := workloadapi.FetchX509SVID(ctx)
	if err != nil {
		return err
	}
	fmt.Println("x509-svid", svid.ID, "expires", svid.Certificates[0].NotAfter.UTC().Format(time.RFC3339))
	bundles, err := workloadapi.FetchX509Bundles(ctx)
	if err != nil {
		return err
	}
	b, err := bundles.GetX509BundleForTrustDomain(svid.ID.TrustDomain())
	if err != nil {
		return err
	}
	fmt.Println("bundle", b.TrustDomain(), "authorities", len(b.X509Authorities()))
	jwt, err := workloadapi.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "e2e"})
	if err != nil {
		return err
	}
	valid, err := workloadapi.ValidateJWTSVID(ctx, jwt.Marshal(), "e2e")
	if err != nil {
		return err
	}
	fmt.Println("jwt-svid", valid.ID, "audience", valid.Audience)
	return nil
}
