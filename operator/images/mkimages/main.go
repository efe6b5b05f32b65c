// mkimages builds Cocoon's images as OCI layouts (make images): one
// directory per image under -o, tagged latest, and prints each digest.
// Push one with skopeo copy oci:DIR/NAME:latest docker://REGISTRY/NAME@DIGEST.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/cocoon-cc/cocoon/operator/images"
)

func main() {
	out := flag.String("o", "build/images", "output directory")
	repo := flag.String("repo", ".", "the repository")
	flag.Parse()
	names := flag.Args()
	if len(names) == 0 {
		for _, img := range images.Images {
			names = append(names, img.Name)
		}
	}
	for _, n := range names {
		img, err := images.Find(n)
		if err == nil {
			var d fmt.Stringer
			d, err = images.Build(context.Background(), *repo, *out, img)
			if err == nil {
				fmt.Println(n, d)
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "mkimages:", err)
			os.Exit(1)
		}
	}
}
