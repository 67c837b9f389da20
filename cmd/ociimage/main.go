// Command ociimage writes the sidecar's container image as an OCI archive,
// without a container engine (`make image`; see internal/ociimage).
//
//	ociimage -binary bin/aifirewall-static -tag aifirewall:0.1.0 -o bin/aifirewall-image.tar
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/aifirewall/aifirewall/internal/ociimage"
)

func main() {
	bin := flag.String("binary", "", "the static aifirewall binary (CGO_ENABLED=0)")
	tag := flag.String("tag", "aifirewall:latest", "the image's name:tag")
	ca := flag.String("ca-bundle", "/etc/ssl/certs/ca-certificates.crt", "PEM CA bundle for the image (\"\" for none)")
	out := flag.String("o", "aifirewall-image.tar", "the OCI archive to write")
	flag.Parse()
	if *bin == "" {
		fmt.Fprintln(os.Stderr, "ociimage: -binary is required")
		os.Exit(2)
	}
	version := (*tag)[strings.LastIndex(*tag, ":")+1:]
	img, err := ociimage.Build(ociimage.Spec{Binary: *bin, CABundle: *ca, Ref: *tag, Version: version})
	if err == nil {
		err = ociimage.WriteArchive(img, *tag, *out)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ociimage:", err)
		os.Exit(1)
	}
	d, _ := img.Digest()
	fmt.Printf("%s %s %s\n", *out, *tag, d)
}
